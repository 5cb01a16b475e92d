package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"
)

// The drain scenario (-drain): one of -nodes servers leaves while
// publications go on, twice on fresh servers: first closed at once
// (Hub.Close, what SIGTERM did before Hub.Drain), then drained over
// -drain-window (Hub.Drain, then Close). Subscribers reconnect as live.js
// does: after the delay the server told them (a drain's), else after a
// wait drawn below a second (its first backoff); those of the node that
// leaves go to the others, as a load balancer would send them. It reports
// the peak of reconnections per 100 ms at the survivors, how long the
// move took, the delivery latency during it (of every subscriber, and of
// those not moved), and losses.

// drainResult is one move's figures.
type drainResult struct {
	Drain        bool    `json:"drain"`
	WindowSec    float64 `json:"windowSeconds"`
	Moved        int     `json:"moved"`
	PeakPer100ms int64   `json:"peakReconnectsPer100ms"` // connections the survivors accepted
	// ClientPeakPer100ms counts the subscriptions acknowledged per 100 ms
	// instead, as the load side saw them: its own load bunches them.
	ClientPeakPer100ms int64   `json:"clientPeakResubscribedPer100ms"`
	MoveSeconds        float64 `json:"moveSeconds"`
	P50ms              float64 `json:"latencyP50ms"`
	P99ms              float64 `json:"latencyP99ms"`
	Maxms              float64 `json:"latencyMaxms"`
	StayP99ms          float64 `json:"notMovedLatencyP99ms"`
	Delivered          int64   `json:"delivered"`
	Lost               int64   `json:"lost"`
	Dups               int64   `json:"duplicates"`
	Resets             int64   `json:"resets"`
}

// drainScenario runs the move without and with draining, and compares.
func drainScenario(p params, window time.Duration) error {
	if p.nodes < 2 {
		return fmt.Errorf("-drain needs -nodes 2 or more on a shared broker")
	}
	fmt.Printf("liveload: drain: %d %s subscribers on %d nodes (%s); %s\n", p.n, p.transport, p.nodes, p.broker, machine())
	var out []drainResult
	for _, drain := range []bool{false, true} {
		r, err := moveOnce(p, drain, window)
		if err != nil {
			return err
		}
		out = append(out, r)
	}
	fmt.Printf("\nreconnections at the survivors, peak per 100 ms: %d closing at once, %d draining over %v\n",
		out[0].PeakPer100ms, out[1].PeakPer100ms, window)
	if p.jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"machine": machine(), "subscribers": p.n, "nodes": p.nodes, "broker": p.broker,
			"transport": p.transport, "rate": p.rate, "runs": out}, "", "  ")
		return os.WriteFile(p.jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

// moveOnce starts the nodes, connects the subscribers, and takes the last
// node out while the first publishes at -rate.
func moveOnce(p params, drain bool, window time.Duration) (drainResult, error) {
	res := drainResult{Drain: drain, WindowSec: window.Seconds()}
	addrs, ctl, stop, err := startNodes(p)
	if err != nil {
		return res, err
	}
	defer stop()
	r := newRunner(p, addrs, ctl)
	l := r.l
	l.paced = true
	l.gone.Store(-1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.idle(ctx); err != nil {
		return res, err
	}
	gone := len(addrs) - 1
	for _, s := range l.subs {
		if s.node == gone {
			s.moved = true
			res.Moved++
		}
	}

	l.hist.reset()
	l.stay.reset()
	l.received.Store(0)
	lost0, dups0, resets0, connects0 := l.lost(), l.dups(), l.resets(), l.connects()
	// Publications from a survivor, from a second before the move to a
	// few seconds after its window.
	msgs := int(p.rate * (window + 5*time.Second).Seconds())
	pubErr := make(chan error, 1)
	go func() { pubErr <- ctl[0].publish(msgs, p.rate, p.size, r.next, 1) }()
	time.Sleep(time.Second)

	start := time.Now()
	for _, c := range ctl[:gone] {
		if err := c.post("/mark?at=" + strconv.FormatInt(start.UnixNano(), 10)); err != nil {
			return res, err
		}
	}
	l.gone.Store(int64(gone))
	l.moveStart.Store(start.UnixNano())
	how := "/close"
	if drain {
		how = "/drain?ms=" + strconv.FormatInt(window.Milliseconds(), 10)
	}
	leftErr := make(chan error, 1)
	go func() { leftErr <- ctl[gone].post(how) }()
	deadline := time.Now().Add(window + 2*time.Minute)
	for l.connects() < connects0+int64(res.Moved) || l.live.Load() < int64(p.n) {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("drain: %d of %d moved subscribers back", l.connects()-connects0, res.Moved)
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.MoveSeconds = time.Since(start).Seconds()
	if err := <-leftErr; err != nil {
		return res, err
	}
	if err := <-pubErr; err != nil {
		return res, err
	}
	r.next += msgs
	if err := l.waitReceived(r.deliveries(msgs), time.Minute); err != nil {
		return res, err
	}
	// Connections the survivors accepted, per 100 ms, summed over them.
	var sum []int64
	for _, c := range ctl[:gone] {
		var a []int64
		if err := c.getJSON("/arrivals", &a); err != nil {
			return res, err
		}
		for i, n := range a {
			if i >= len(sum) {
				sum = append(sum, 0)
			}
			sum[i] += n
		}
	}
	res.PeakPer100ms = slices.Max(append(sum, 0))
	for i := range l.arrivals {
		res.ClientPeakPer100ms = max(res.ClientPeakPer100ms, l.arrivals[i].Load())
	}
	res.P50ms, res.P99ms, res.Maxms = ms(l.hist.quantile(0.5)), ms(l.hist.quantile(0.99)), ms(time.Duration(l.hist.max.Load()))
	res.StayP99ms = ms(l.stay.quantile(0.99))
	res.Delivered = l.received.Load()
	res.Lost, res.Dups, res.Resets = l.lost()-lost0, l.dups()-dups0, l.resets()-resets0
	what := "closed at once"
	if drain {
		what = fmt.Sprintf("drained over %v", window)
	}
	fmt.Printf("%-34s %d moved in %.2f s; peak %d reconnections per 100 ms at the survivors (%d resubscribed, as the clients saw them)\n",
		what, res.Moved, res.MoveSeconds, res.PeakPer100ms, res.ClientPeakPer100ms)
	fmt.Printf("%-34s p50 %.1f ms, p99 %.1f ms, max %.1f ms (not moved: p99 %.1f ms); delivered %d; lost %d, duplicates %d, resets %d\n",
		"  deliveries during the move", res.P50ms, res.P99ms, res.Maxms, res.StayP99ms, res.Delivered, res.Lost, res.Dups, res.Resets)
	return res, nil
}

// pace waits before a subscriber reconnects, as live.js would: the delay
// the server told it, else a wait drawn below a second; a subscriber of
// the node that left moves to another, as a load balancer would send it.
func (s *subscriber) pace(ctx context.Context) {
	wait := time.Duration(rand.Int64N(int64(time.Second)))
	if ms := s.told.Swap(0); ms > 0 {
		wait = time.Duration(ms) * time.Millisecond
	}
	if g := int(s.l.gone.Load()); g >= 0 && s.node == g {
		s.node = (s.node + 1 + rand.IntN(len(s.l.addrs)-1)) % len(s.l.addrs)
		s.addr = s.l.addrs[s.node]
	}
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
}

// arrived counts a reconnection in its 100 ms since the move started.
func (l *loader) arrived() {
	start := l.moveStart.Load()
	if start == 0 {
		return
	}
	if k := (time.Now().UnixNano() - start) / int64(100*time.Millisecond); k >= 0 && k < int64(len(l.arrivals)) {
		l.arrivals[k].Add(1)
	}
}

// leave takes the hub out: drained over ?ms= (then closed), or closed at once.
func (t *hubTarget) leave(w http.ResponseWriter, r *http.Request) {
	ctx := context.Background()
	if v := r.URL.Query().Get("ms"); v != "" {
		window, err := strconv.Atoi(v)
		if err != nil || window <= 0 {
			http.Error(w, "ms=<window>", http.StatusBadRequest)
			return
		}
		dctx, cancel := context.WithTimeout(ctx, time.Duration(window)*time.Millisecond*10/9)
		defer cancel()
		if err := t.hub.Drain(dctx); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := t.hub.Close(cctx); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"stats": t.hub.Stats()})
}
