package main

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-live/live"
)

// A front stands for a load balancer in front of nodes that share the
// broker, for the drain tests: /d/… goes to the node in front, which
// POST /test/drain drains while the next one takes its place.
//
//	     /d/ws, GET /d/api/live, GET|POST /d/api/live/{channel}   the node in front
//	POST /test/drain            ?window=<ms>: drains the node in front over that
//	                            window; with &switch=0 it stays in front until
//	                            POST /test/switch (new connections meet its 503s)
//	POST /test/switch           puts the next node in front
//	GET  /test/front            {"node": n, "attempts": [ms since the drain, …]}: the
//	                            node in front, and when connections reached /d/ since
//	                            the last drain
type front struct {
	broker *live.MemoryBroker

	mu       sync.Mutex // guards the fields below
	n        int        // the node in front, counting from 1
	cur      http.Handler
	next     *live.Hub // made ready before it is needed
	nextMux  http.Handler
	hubs     []*live.Hub
	drained  time.Time
	attempts []int64
}

func newFront(b *live.MemoryBroker) *front {
	f := &front{broker: b}
	f.n = 1
	_, f.cur = f.node()
	f.next, f.nextMux = f.node()
	return f
}

// node starts a node on the broker, and its routes.
func (f *front) node() (*live.Hub, http.Handler) {
	h := live.NewHub(&live.Options{
		Broker:    f.broker,
		Authorize: func(*http.Request, string, live.Op) error { return nil },
	})
	f.hubs = append(f.hubs, h)
	mux := http.NewServeMux()
	mux.Handle("/ws", h.WebSocketHandler())
	mux.Handle("GET /api/live", h.SSEHandler())
	mux.Handle("GET /api/live/{channel}", h.SSEHandler())
	mux.Handle("POST /api/live/{channel}", h.PublishHandler())
	mux.Handle("GET /ready", h.ReadyHandler())
	return h, mux
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	h := f.cur
	if r.Method == http.MethodGet {
		f.attempts = append(f.attempts, time.Since(f.drained).Milliseconds())
	}
	f.mu.Unlock()
	http.StripPrefix("/d", h).ServeHTTP(w, r)
}

// drain drains the node in front over the window, in the background.
func (f *front) drain(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("window"))
	if err != nil || ms <= 0 {
		http.Error(w, "window=<ms>", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	h := f.hubs[len(f.hubs)-2] // the one in front; the last is next
	f.drained = time.Now()
	f.attempts = nil
	f.mu.Unlock()
	if r.URL.Query().Get("switch") != "0" {
		f.swap()
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond*10/9)
		defer cancel()
		h.Drain(ctx)
	}()
}

// swap puts the next node in front, and starts the one after.
func (f *front) swap() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.cur = f.nextMux
	f.next, f.nextMux = f.node()
}

func (f *front) state(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"node": f.n, "attempts": append([]int64{}, f.attempts...)})
}

// close closes every node.
func (f *front) close(ctx context.Context) {
	f.mu.Lock()
	hubs := f.hubs
	f.mu.Unlock()
	for _, h := range hubs {
		h.Close(ctx)
	}
}
