package live

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/go-live/live/internal/metricdef"
)

// MetricsHandler returns a handler that serves the Hub's Stats in the
// Prometheus text format, for scraping. No metric is labelled with a
// channel name, so their number stays fixed however many channels exist.
// Mount it where only operators can reach it. To serve the hub's metrics
// from the application's own Prometheus registry instead, with
// histograms of latencies besides, use the collector of module
// github.com/go-live/live/prometheus; both serve these metrics under the
// same names (docs/operations.md lists them).
func (h *Hub) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		var last *metricdef.Metric
		metricdef.Read(h.Stats(), func(m *metricdef.Metric, label string, v float64) {
			if m != last {
				fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.Name, m.Help, m.Name, m.Kind)
				last = m
			}
			if m.Label == "" {
				fmt.Fprintf(&b, "%s %d\n", m.Name, int64(v))
			} else {
				fmt.Fprintf(&b, "%s{%s=%q} %d\n", m.Name, m.Label, label, int64(v))
			}
		})
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte(b.String()))
	})
}

// queuedBytes returns the bytes waiting in every connection's queue,
// replays included.
func (h *Hub) queuedBytes() int {
	n := 0
	for _, c := range h.connections() {
		c.mu.Lock()
		for _, f := range c.q {
			n += f.cost()
		}
		c.mu.Unlock()
	}
	return n
}

// Stats is a snapshot of a Hub's activity since NewHub. Maps by
// transport are keyed "sse", "sse-mux", "ws" and "poll" (see package
// [observe]), and hold every key.
type Stats struct {
	Connections     int64            // open connections: SSE streams, WebSockets and held long-polls
	ConnectionsBy   map[string]int64 // Connections by transport
	Subscriptions   int64            // channel subscriptions across connections
	SubscriptionsBy map[string]int64 // Subscriptions by transport
	Channels        int64            // channels with local subscribers
	QueuedBytes     int64            // bytes waiting in connection queues
	// PresenceMembers are the presence members this Hub holds, summed
	// over its presence channels: users, plus anonymous connections.
	PresenceMembers int64
	Published       int64            // publications accepted through this Hub
	Delivered       int64            // frames written to clients
	Writes          int64            // socket writes by the hub's writers; under load one carries many frames
	Replayed        int64            // publications sent from history to resuming clients
	Resets          int64            // reset frames sent
	ResetsBy        map[string]int64 // reset frames by reason: gone, epoch, ahead, malformed, slow, broker
	SlowClients     int64            // times a client overflowed its queue
	Dropped         int64            // frames dropped, or folded into fewer, from the queues of clients that fell behind
	SlowEnded       int64            // connections ended because their client did not keep up
	// Controls counts the control messages this Hub applied, by op:
	// "disconnect" and "reauthorize" (Hub.Disconnect, Hub.Reauthorize,
	// here or on another Hub), and "recheck" (every connection checked
	// again after the Hub may have missed some).
	Controls     map[string]int64
	BrokerErrors int64 // failed broker publishes and broken subscriptions
	HookDropped  int64 // successful requests whose Hub.Hook event could not be published
	TooLarge     int64 // publications refused with ErrTooLarge
	// RetriesLost counts responses to keyed requests that a retry within
	// HookOptions.RetryWindow will not find: dropped by the memory store
	// to make room, or not saved because the store failed. Such a retry
	// runs the request again.
	RetriesLost int64
	// RetriesRefused counts keyed requests answered 503 because the
	// store could not claim their key (full of running requests, or
	// failing), rather than run without knowing whether they ran.
	RetriesRefused int64
	// Pending counts promised publications waiting for the broker (see
	// Options.PendingBytes); PendingDropped those dropped past
	// Options.PendingBytes or PendingAge, or left at Close.
	Pending        int64
	PendingDropped int64
	// Draining reports whether Hub.Drain was called; Drained counts the
	// connections it ended, long-polls included.
	Draining bool
	Drained  int64
}

// Stats returns the Hub's counters and gauges. It walks the connections
// to sum their queues: call it to scrape, not per request.
func (h *Hub) Stats() Stats {
	s := &h.stats
	h.mu.Lock()
	channels := len(h.channels)
	h.mu.Unlock()
	st := Stats{
		Connections:     s.connections.Load(),
		Channels:        int64(channels),
		QueuedBytes:     int64(h.queuedBytes()),
		Dropped:         s.dropped.Load(),
		SlowEnded:       s.slowEnded.Load(),
		ConnectionsBy:   make(map[string]int64, numTransports),
		SubscriptionsBy: make(map[string]int64, numTransports),
		Controls:        make(map[string]int64, len(controlOps)),
		Subscriptions:   s.subscriptions.Load(),
		Published:       s.published.Load(),
		Delivered:       s.delivered.Load(),
		Writes:          s.writes.Load(),
		Replayed:        s.replayed.Load(),
		Resets:          s.resets.Load(),
		SlowClients:     s.slow.Load(),
		BrokerErrors:    s.brokerErrors.Load(),
		HookDropped:     s.hookDropped.Load(),
		TooLarge:        s.tooLarge.Load(),
		Pending:         s.pending.Load(),
		PendingDropped:  s.pendingDropped.Load(),
		RetriesLost:     s.retriesLost.Load(),
		RetriesRefused:  s.retriesRefused.Load(),
		ResetsBy:        make(map[string]int64, len(s.resetsBy)),
		Drained:         s.drained.Load(),
		Draining:        h.isDraining(),
	}
	for r, n := range s.resetsBy {
		st.ResetsBy[r] = n.Load()
	}
	for i, name := range transports {
		st.ConnectionsBy[name] = s.connsBy[i].Load()
		st.SubscriptionsBy[name] = s.subsBy[i].Load()
	}
	for i, op := range controlOps {
		st.Controls[op] = s.controls[i].Load()
	}
	if h.presence != nil {
		st.PresenceMembers = int64(h.presence.localMembers())
	}
	return st
}

// connections returns the hub's connections as they are now, to walk
// without the hub-wide lock.
func (h *Hub) connections() []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	return conns
}

// counters are the Hub's running totals; Stats copies them.
type counters struct {
	connections, subscriptions                   atomic.Int64
	published, delivered, replayed, resets, slow atomic.Int64
	brokerErrors, hookDropped, writes, tooLarge  atomic.Int64
	pending, pendingDropped                      atomic.Int64
	retriesLost, retriesRefused                  atomic.Int64
	dropped, slowEnded                           atomic.Int64
	drained                                      atomic.Int64
	resetsBy                                     map[string]*atomic.Int64 // fixed keys: read-only map
	connsBy, subsBy                              [numTransports]atomic.Int64
	controls                                     [len(controlOps)]atomic.Int64
}

// controlOps are the control messages Stats.Controls counts.
var controlOps = [...]string{"disconnect", "reauthorize", "recheck"}

// control counts a control message applied.
func (c *counters) control(op string) {
	for i, o := range controlOps {
		if o == op {
			c.controls[i].Add(1)
		}
	}
}

// resetReasons are the reasons a reset frame gives.
var resetReasons = []string{resetGone, resetEpoch, resetAhead, resetMalformed, resetSlow, resetBroker}

func newResetCounters() map[string]*atomic.Int64 {
	m := make(map[string]*atomic.Int64, len(resetReasons))
	for _, r := range resetReasons {
		m[r] = new(atomic.Int64)
	}
	return m
}

// reset counts a reset frame sent for reason.
func (c *counters) reset(reason string) {
	c.resets.Add(1)
	if n := c.resetsBy[reason]; n != nil {
		n.Add(1)
	}
}
