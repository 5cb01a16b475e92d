package live

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Draining: a node leaving (a rolling deploy, a pod told SIGTERM) stops
// taking new streams at once and ends the ones it has spread over a
// window, each telling its client when to come back, so that the other
// nodes see the clients arrive at an even pace rather than all at once.
// Every client resumes from its cursors where it reconnects.

// statusServiceRestart is the WebSocket close status of the connections
// Hub.Drain ends (1012, service restart: come back).
const statusServiceRestart = 1012

// A client that Drain ends is told to come back after a delay drawn
// uniformly in [minRetry, maxRetry): as little as live.js's first backoff
// would have it wait, since the endings themselves are spread over the
// window; the jitter spreads them further when the window is short.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = time.Second
)

// defaultDrainWindow is the window Drain spreads the endings over when its
// context has no deadline.
const defaultDrainWindow = 10 * time.Second

// errDraining turns away a new stream while the hub drains.
var errDraining = errors.New("live: this server is restarting; reconnect in a moment")

// Drain takes the Hub out of service gracefully, for a deploy: it stops
// admitting new streams at once (SSE and WebSocket requests are answered
// 503 with a Retry-After header; see below for one-channel SSE and
// long-polls),
// then ends the connections it has, spread evenly with jitter over a
// window, telling each client when to come back, and returns once every
// connection has left, or when ctx ends, with ctx's error. Clients resume
// from their cursors wherever they reconnect, so nothing is lost when the
// Hub shares a broker with the nodes they go to.
//
// The window is nine tenths of the time left before ctx's deadline (the
// rest lets the last clients leave), or 10 s when ctx has none. Each
// client is told to wait a delay drawn for it, under a second, before
// reconnecting:
// WebSockets are closed with status 1012 (service restart) and the reason
// "restart; retry in N ms"; SSE streams get a "retry: N" line and end,
// which EventSource honours by itself, and multiplexed streams and
// long-polls also a frame {"type":"close","closeCode":1012,"reason":…,
// "retry":N}. A one-channel SSE request made while the Hub drains is
// answered 200 with such a retry line and nothing else, since EventSource
// gives up for good on any other status. A long-poller, whose polls are
// requests of their own, has a moment in the window (drawn from its
// address): its polls are served until then, and answered with that close
// frame after.
//
// Publishing keeps working, from server code and over HTTP, and the Hub
// keeps delivering to the connections not yet ended; [Hub.ReadyHandler]
// reports it not ready from the start, so that a load balancer sends new
// clients elsewhere. Call Close after Drain: it has nothing left to end
// abruptly. Drain returns ErrClosed once Close has been called.
func (h *Hub) Drain(ctx context.Context) error {
	start := time.Now()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("live: drain: %w", ErrClosed)
	}
	if !h.draining {
		h.draining, h.drainStart, h.drainWindow = true, start, drainWindow(ctx, start)
	}
	if h.left == nil {
		h.left = make(chan struct{})
	}
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()

	window := drainWindow(ctx, start)
	// Each connection ends at a random moment of its own slice of the
	// window, in a random order: evenly spread, and no two nodes in step.
	rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	n := float64(len(conns))
	for i, c := range conns {
		at := start.Add(time.Duration((float64(i) + rand.Float64()) / n * float64(window)))
		if d := time.Until(at); d > 0 {
			if t == nil {
				t = time.NewTimer(d)
			} else {
				t.Reset(d)
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return fmt.Errorf("live: drain: %w", ctx.Err())
			case <-h.done:
				return fmt.Errorf("live: drain: %w", ErrClosed)
			}
		}
		c.restart()
	}
	// Wait for the connections to leave; and, once pollers were served
	// while the hub drained, for the end of the window, by which every
	// poller's turn has come (pollTurn): between two polls a poller has
	// no connection.
	end := h.drainStart.Add(h.drainWindow)
	for {
		h.mu.Lock()
		open, left, polled := len(h.conns), h.left, h.drainPolled
		h.mu.Unlock()
		wait := time.Until(end)
		if open == 0 && (!polled || wait <= 0) {
			return nil
		}
		var timer <-chan time.Time
		if open == 0 {
			if t == nil {
				t = time.NewTimer(wait)
			} else {
				t.Reset(wait)
			}
			timer = t.C
		}
		select {
		case <-left:
		case <-timer:
		case <-ctx.Done():
			return fmt.Errorf("live: drain: waiting for connections: %w", ctx.Err())
		case <-h.done:
			return fmt.Errorf("live: drain: %w", ErrClosed)
		}
	}
}

// drainWindow is the window of a drain that starts at start with ctx.
func drainWindow(ctx context.Context, start time.Time) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(0, dl.Sub(start)*9/10)
	}
	return defaultDrainWindow
}

// pollTurn reports whether the hub drains and, if so, when the poller
// that sent r is to be told to go. Polls are requests, not connections,
// so the drain does not find a busy poller between them: each poller
// gets a moment in the window from its address and port (which its
// kept-alive connection keeps from poll to poll), is served until then,
// with holds that end by then, and is answered as a drained long-poll
// after. A request that is not a poll is turned away at once (a zero
// moment).
func (h *Hub) pollTurn(r *http.Request) (until time.Time, draining bool) {
	h.mu.Lock()
	draining, start, window := h.draining, h.drainStart, h.drainWindow
	h.mu.Unlock()
	if !draining || !r.URL.Query().Has("poll") {
		return time.Time{}, draining
	}
	f := fnv.New64a()
	io.WriteString(f, r.RemoteAddr)
	return start.Add(time.Duration(f.Sum64() % uint64(window+1))), true
}

// answerRestart answers a request the draining hub does not take: a poll
// whose turn came with a drained long-poll's answer (counted in
// Stats.Drained), anything else with 503 (refuseDraining).
func (h *Hub) answerRestart(w http.ResponseWriter, r *http.Request) {
	if !r.URL.Query().Has("poll") {
		refuseDraining(w, false)
		return
	}
	h.stats.drained.Add(1)
	lw := restartWords()
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	w.Write(append(append([]byte{'['}, lw.f.ws...), ']'))
}

// draining reports whether Drain was called.
func (h *Hub) isDraining() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.draining
}

// retryDelay draws how long a client the drain ends or turns away waits.
func retryDelay() time.Duration {
	return minRetry + rand.N(maxRetry-minRetry)
}

// restart ends c for the drain, telling its client to come back after a
// jittered delay, unless it has ended already.
func (c *conn) restart() {
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return
	}
	c.hub.stats.drained.Add(1)
	c.endWith(restartWords())
}

// restartWords are the last words of a connection the drain ends, with a
// delay drawn for its client.
func restartWords() *lastWords {
	ms := retryDelay().Milliseconds()
	reason := "restart; retry in " + strconv.FormatInt(ms, 10) + " ms"
	b := append([]byte(`{"type":"close","closeCode":`), strconv.Itoa(statusServiceRestart)...)
	b = append(b, `,"reason":`...)
	b = append(b, quote(reason)...)
	b = append(b, `,"retry":`...)
	b = strconv.AppendInt(b, ms, 10)
	f := &frame{ws: append(b, '}')}
	return &lastWords{code: statusServiceRestart, reason: reason, f: f, retry: ms}
}

// appendRetry appends an SSE retry line, in its own event, which clients
// take as when to reconnect.
func appendRetry(b []byte, ms int64) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, "\n\n"...)
}

// refuseDraining answers a stream the draining hub does not take: 503
// "draining" with Retry-After, or, for a one-channel SSE stream (oneSSE),
// 200 with a retry line and nothing else, since EventSource never comes
// back after another status.
func refuseDraining(w http.ResponseWriter, oneSSE bool) {
	d := retryDelay()
	w.Header().Set("Retry-After", "1") // whole seconds: live.js adds up to half as much again
	if !oneSSE {
		writeError(w, http.StatusServiceUnavailable, "draining", errDraining.Error())
		return
	}
	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	w.Write(appendRetry([]byte(": draining\n"), d.Milliseconds()))
}

// ReadyHandler returns a handler for a load balancer's readiness probe
// (Kubernetes' readinessProbe): 200 {"ready":true} while the Hub can
// serve new clients, else 503 with a JSON body whose "error" says why:
//
//   - "closed": Close was called;
//   - "draining": Drain was called (the node is leaving);
//   - "broker_unreachable": the Hub's link to a broker it shares with
//     other nodes is down, or it has not read its own messages back from
//     the broker lately (new streams wait, then get 503, and open ones
//     are ended after about 5 s: see Options.Broker), or a channel's
//     subscription to the broker broke and is being made again;
//   - "catching_up": a channel is reading from history what it missed
//     while its subscription was down; deliveries on it wait meanwhile.
//
// The last two pass by themselves. Like MetricsHandler it names no
// channel; mount it where the load balancer reaches it.
func (h *Hub) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, msg := h.notReady(); code != "" {
			writeError(w, http.StatusServiceUnavailable, code, msg)
			return
		}
		hd := w.Header()
		hd.Set("Content-Type", "application/json")
		hd.Set("Cache-Control", "no-store")
		w.Write([]byte(`{"ready":true}` + "\n"))
	})
}

// notReady says why the Hub should not be sent new clients, as an error
// code and a message, or returns code "" when it is ready.
func (h *Hub) notReady() (code, msg string) {
	h.mu.Lock()
	closed, draining := h.closed, h.draining
	chans := make([]*hubChannel, 0, len(h.channels))
	for _, hc := range h.channels {
		chans = append(chans, hc)
	}
	h.mu.Unlock()
	switch {
	case closed:
		return "closed", "the live hub is shutting down"
	case draining:
		return "draining", "the live hub is draining: its clients are moving to other nodes"
	case !h.roster.serves():
		return "broker_unreachable", "the live hub cannot reach the broker, or has not read its own messages back from it lately"
	}
	down, catching := 0, 0
	for _, hc := range chans {
		hc.mu.Lock()
		if hc.down {
			down++
		}
		if hc.catching {
			catching++
		}
		hc.mu.Unlock()
	}
	switch {
	case down > 0:
		return "broker_unreachable", fmt.Sprintf("the broker subscriptions of %d channels are down", down)
	case catching > 0:
		return "catching_up", fmt.Sprintf("%d channels are catching up from history", catching)
	}
	return "", ""
}
