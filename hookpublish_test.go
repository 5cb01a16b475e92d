package live_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// HookOptions.Publish takes a request's events instead of the Hub, while
// the response is still held: its error fails the request with 500, and a
// 2xx answer without events still reaches it.
func TestHookPublish(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	hub := live.NewHub(&live.Options{Broker: b})
	t.Cleanup(func() { servertest.CloseHub(t, hub) })

	type call struct {
		method string
		events []live.Event
	}
	calls := make(chan call, 10)
	fail := errors.New("commit failed")
	hook := hub.Hook(live.HookOptions{
		Channel: func(*http.Request) string { return "todos" },
		Publish: func(r *http.Request, events []live.Event) error {
			calls <- call{r.Method, events}
			if r.Header.Get("Fail") != "" {
				return fail
			}
			return nil
		},
	})
	srv := httptest.NewServer(hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/todos/1")
		switch r.URL.Path {
		case "/bad":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"bad"}`)
		case "/none":
			live.SkipEvent(r)
			io.WriteString(w, `{}`)
		default:
			io.WriteString(w, `{"id":"1","title":"a"}`)
		}
	})))
	t.Cleanup(srv.Close)

	// A Hub publication would show here.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delivered := make(chan struct{}, 10)
	ready := make(chan struct{})
	go b.Subscribe(ctx, "todos", func(live.Position) { close(ready) }, func(live.Message) { delivered <- struct{}{} })
	<-ready

	do := func(path string, fail bool) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{}`))
		if fail {
			req.Header.Set("Fail", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if fail && resp.Header.Get("Location") != "" {
			t.Errorf("failed request kept the handler's Location")
		}
		return resp.StatusCode, string(body)
	}
	next := func() call {
		select {
		case c := <-calls:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("Publish not called")
			return call{}
		}
	}

	if status, body := do("/todos", false); status != http.StatusOK || body != `{"id":"1","title":"a"}` {
		t.Fatalf("POST = %d %s", status, body)
	}
	if c := next(); len(c.events) != 1 || c.events[0].Channel != "todos" {
		t.Fatalf("Publish got %+v, want one event on todos", c.events)
	}
	if status, body := do("/todos", true); status != http.StatusInternalServerError || !strings.Contains(body, `"publish_failed"`) {
		t.Fatalf("POST whose Publish failed = %d %s, want 500 publish_failed", status, body)
	}
	next()
	if status, _ := do("/none", false); status != http.StatusOK {
		t.Fatalf("POST without events = %d", status)
	}
	if c := next(); len(c.events) != 0 {
		t.Fatalf("Publish got %+v, want no events", c.events)
	}
	if status, _ := do("/bad", false); status != http.StatusBadRequest {
		t.Fatalf("bad POST = %d", status)
	}
	select {
	case c := <-calls:
		t.Fatalf("Publish called after a 400: %+v", c)
	case <-delivered:
		t.Fatal("the Hub published although HookOptions.Publish is set")
	default:
	}
}
