package live_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-live/live"
)

// TestSSEOverHTTP2 checks the path for connections the hub cannot take
// over from net/http: over HTTP/2 the stream is written from its
// handler's goroutine, and behaves the same.
func TestSSEOverHTTP2(t *testing.T) {
	hub := live.NewHub(nil)
	srv := httptest.NewUnstartedServer(hub)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := hub.Close(ctx); err != nil {
			t.Errorf("hub.Close: %v", err)
		}
		srv.Close()
	})
	client := srv.Client()

	open := func(t *testing.T, path string) (*http.Response, *bufio.Reader) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s %s; want HTTP/2 200", resp.Proto, resp.Status)
		}
		return resp, bufio.NewReader(resp.Body)
	}
	// dataLine returns the next "data:" line.
	dataLine := func(t *testing.T, br *bufio.Reader) string {
		t.Helper()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				return strings.TrimSpace(v)
			}
		}
	}

	t.Run("one channel", func(t *testing.T) {
		_, br := open(t, "/live/h2")
		pos, err := hub.Publish(context.Background(), "h2", 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := dataLine(t, br); got != "1" {
			t.Fatalf("got %q", got)
		}
		hub.Publish(context.Background(), "h2", 2)
		hub.Publish(context.Background(), "h2", 3)
		_, br = open(t, "/live/h2?cursor="+pos.String())
		for _, want := range []string{"2", "3"} {
			if got := dataLine(t, br); got != want {
				t.Fatalf("resumed with %q; want %q", got, want)
			}
		}
	})
	t.Run("multiplexed", func(t *testing.T) {
		_, br := open(t, "/live/?channels=x,y")
		for _, want := range []string{`"channel":"x"`, `"channel":"y"`} {
			if got := dataLine(t, br); !strings.Contains(got, `"subscribed"`) || !strings.Contains(got, want) {
				t.Fatalf("got %s; want subscribed on %s", got, want)
			}
		}
		hub.Publish(context.Background(), "y", "hello")
		if got := dataLine(t, br); !strings.Contains(got, `"data":"hello"`) {
			t.Fatalf("got %s", got)
		}
	})
}
