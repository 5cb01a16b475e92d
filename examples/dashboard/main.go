// Command dashboard is a live metrics dashboard served by a live.Hub: the
// numbers on the page move as the server publishes partial updates.
//
//	go run ./examples/dashboard            # then open http://localhost:8080
//	go run ./examples/dashboard -addr :9000
//
// It serves the seed's URLs: GET /api/metrics and the channel
// "metrics:dashboard" (partial updates every second); GET, POST, PATCH and
// DELETE /api/activity, whose changes publish on "activity"; GET and PATCH
// /api/board, a state channel "board" streaming versioned deltas; the
// WebSocket at /ws and SSE at /api/live/{channel}.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-live/live"
)

//go:embed index.html
var indexHTML []byte

// metrics is the dashboard's state. Updates are partial: each tick changes
// a few fields, and clients merge them into what they have.
type metrics struct {
	mu     sync.Mutex // guards values
	values map[string]float64
}

func newMetrics() *metrics {
	return &metrics{values: map[string]float64{
		"activeUsers": 1280, "requestsPerSecond": 340, "errorRate": 0.4, "p95LatencyMs": 182,
	}}
}

func (m *metrics) snapshot() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]any, len(m.values)+1)
	for k, v := range m.values {
		out[k] = v
	}
	out["updatedAt"] = time.Now().UnixMilli()
	return out
}

// step moves a random subset of the metrics and returns only what changed.
func (m *metrics) step(r *rand.Rand) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := map[string]any{"updatedAt": time.Now().UnixMilli()}
	for k, v := range m.values {
		if r.IntN(2) == 0 {
			continue
		}
		switch k {
		case "activeUsers":
			v = max(0, v+float64(r.IntN(41)-20))
		case "requestsPerSecond":
			v = max(0, v+float64(r.IntN(31)-15))
		case "errorRate":
			v = min(5, max(0, v+(r.Float64()-0.5)/5))
		case "p95LatencyMs":
			v = max(20, v+float64(r.IntN(21)-10))
		}
		m.values[k] = v
		changed[k] = v
	}
	return changed
}

// run publishes a partial update every interval until ctx ends.
func (m *metrics) run(ctx context.Context, hub *live.Hub, interval time.Duration) error {
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := hub.Publish(ctx, "metrics:dashboard", m.step(r)); err != nil {
			if errors.Is(err, live.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			log.Printf("publish: %v", err)
		}
	}
}

// newApp makes the hub and mounts it with the app's own routes.
func newApp(ctx context.Context, m *metrics) (*live.Hub, http.Handler, error) {
	hub := live.NewHub(&live.Options{
		// Clients may publish only on chat:… channels. Metrics are computed
		// by the server, activity goes through the CRUD routes (validated
		// and stored) and the board through its state endpoint.
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if op == live.OpPublish && !strings.HasPrefix(channel, "chat:") {
				return live.ErrForbidden
			}
			return nil
		},
		// The activity channel carries list operations: a slow client gets
		// them coalesced per id instead of being dropped.
		Lists: func(channel string) string {
			if channel == "activity" {
				return "id"
			}
			return ""
		},
	})
	board, err := hub.State(ctx, "board", &live.StateOptions{Initial: initialBoard})
	if err != nil {
		hub.Close(ctx)
		return nil, nil, err
	}
	f := newFeed()
	activityHook := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "activity" }})

	mux := http.NewServeMux()
	mux.Handle("/ws", hub.WebSocketHandler())
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
	mux.Handle("POST /api/live/{channel}", hub.PublishHandler())
	mux.HandleFunc("GET /api/metrics", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, m.snapshot())
	})
	mux.HandleFunc("GET /api/activity", f.list)
	mux.Handle("POST /api/activity", activityHook(http.HandlerFunc(f.create)))
	mux.Handle("PATCH /api/activity/{id}", activityHook(http.HandlerFunc(f.update)))
	mux.Handle("DELETE /api/activity/{id}", activityHook(http.HandlerFunc(f.remove)))
	mux.Handle("/api/board", board)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(indexHTML)
	})
	return hub, mux, nil
}

// initialBoard is the board's value at version 0.
var initialBoard = map[string]any{
	"title": "Launch checklist",
	"columns": map[string]any{
		"todo":  map[string]any{"name": "To do", "cards": map[string]any{"c1": "Write release notes", "c2": "Update status page"}},
		"doing": map[string]any{"name": "Doing", "cards": map[string]any{"c3": "Load test"}},
		"done":  map[string]any{"name": "Done", "cards": map[string]any{"c4": "Freeze the API"}},
	},
}

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()

	m := newMetrics()
	hub, handler, err := newApp(context.Background(), m)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hub.Close(ctx)
	})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- m.run(ctx, hub, time.Second) }()

	shut := make(chan struct{})
	go func() {
		defer close(shut)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Printf("live dashboard on http://%s", *addr)
	err = srv.ListenAndServe()
	stop()
	<-shut
	<-done
	if !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
