package livetest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/livetest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// A CRUD handler wrapped by Hub.Hook, tested in a few lines.
func TestRecorderWithHook(t *testing.T) {
	rec := livetest.NewRecorder(t)
	hub := live.NewHub(&live.Options{Broker: rec})
	t.Cleanup(func() { hub.Close(context.Background()) })

	create := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.RawQuery, "fail") {
				http.Error(w, "nope", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"id":"t1","title":"milk"}`))
		}))

	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos", nil))
	rec.Published(t, "todos", map[string]any{"type": "add", "item": map[string]any{"id": "t1", "title": "milk"}})

	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos?fail", nil))
	rec.Nothing(t)
}

func TestConnect(t *testing.T) {
	hub := live.NewHub(nil)
	mux := http.NewServeMux()
	mux.Handle("/ws", hub.WebSocketHandler())
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	ws := livetest.Connect(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "a", "b")
	sse := livetest.Connect(t, srv.URL+"/live/", "a")
	hub.Publish(context.Background(), "a", map[string]int{"n": 1})
	hub.Publish(context.Background(), "b", json.RawMessage(`"two"`))
	for _, c := range []*livetest.Client{ws, sse} {
		if m := c.Next(t); m.Channel != "a" || string(m.Data) != `{"n":1}` {
			t.Errorf("got %+v", m)
		}
	}
	if m := ws.Next(t); m.Channel != "b" {
		t.Errorf("got %+v", m)
	}
}

func TestFaults(t *testing.T) {
	hub := live.NewHub(&live.Options{QueueMessages: 4, Broker: live.NewMemoryBroker(&live.MemoryOptions{HistorySize: 1000})})
	srv := httptest.NewServer(hub)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	ctx := context.Background()
	c := livetest.Connect(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/", "a")

	// Dropped: it comes back and resumes.
	c.Drop()
	hub.Publish(ctx, "a", 1)
	if m := c.Next(t); string(m.Data) != "1" {
		t.Fatalf("after Drop: %+v", m)
	}

	// Reset: the hub cannot honour the cursor.
	c.ForceReset("a")
	if m := c.Next(t); !m.Reset || m.Reason != "epoch" {
		t.Fatalf("after ForceReset: %+v", m)
	}

	// Slow: the hub disconnects it; it resumes and misses nothing.
	c.Pause()
	for i := 2; i <= 200; i++ {
		hub.Publish(ctx, "a", strings.Repeat("x", 4096))
	}
	c.Resume()
	got := 0
	for got < 199 {
		if m := c.Next(t); !m.Reset {
			got++
		} else {
			t.Fatalf("reset while catching up: %+v", m)
		}
	}
}
