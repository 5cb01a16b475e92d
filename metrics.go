package live

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
)

// MetricsHandler returns a handler that serves the Hub's Stats in the
// Prometheus text format, for scraping. No metric is labelled with a
// channel name, so their number stays fixed however many channels exist.
// Mount it where only operators can reach it.
func (h *Hub) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := h.Stats()
		h.mu.Lock()
		channels := len(h.channels)
		h.mu.Unlock()
		queued := h.queuedBytes()

		var b strings.Builder
		metric := func(name, kind, help string, v int64) {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, kind, name, v)
		}
		metric("live_connections", "gauge", "Open SSE and WebSocket connections.", st.Connections)
		metric("live_subscriptions", "gauge", "Channel subscriptions across connections.", st.Subscriptions)
		metric("live_channels", "gauge", "Channels with local subscribers or a State.", int64(channels))
		metric("live_queued_bytes", "gauge", "Bytes waiting in connection queues.", int64(queued))
		metric("live_published_total", "counter", "Publications accepted through this hub.", st.Published)
		metric("live_delivered_total", "counter", "Frames written to clients.", st.Delivered)
		metric("live_writes_total", "counter", "Socket writes by the hub's writers; under load one carries many frames.", st.Writes)
		metric("live_replayed_total", "counter", "Publications replayed from history to resuming clients.", st.Replayed)
		metric("live_slow_clients_total", "counter", "Times a client overflowed its queue.", st.SlowClients)
		metric("live_broker_errors_total", "counter", "Failed broker publishes and broken subscriptions.", st.BrokerErrors)
		metric("live_hook_dropped_total", "counter", "Successful requests whose hook event was not published.", st.HookDropped)
		metric("live_too_large_total", "counter", "Publications refused as larger than half of the client queue.", st.TooLarge)
		metric("live_pending_publications", "gauge", "Promised publications waiting for the broker to take them.", st.Pending)
		metric("live_pending_dropped_total", "counter", "Promised publications dropped: waiting too long, too many bytes waiting, or left at Close.", st.PendingDropped)
		metric("live_retries_lost_total", "counter", "Responses to keyed requests dropped or not saved within their retry window.", st.RetriesLost)
		metric("live_retries_refused_total", "counter", "Keyed requests refused with 503 because their key could not be claimed.", st.RetriesRefused)
		draining := int64(0)
		if st.Draining {
			draining = 1
		}
		metric("live_draining", "gauge", "1 once Hub.Drain was called: the node is leaving.", draining)
		metric("live_drained_total", "counter", "Connections ended by Hub.Drain.", st.Drained)
		b.WriteString("# HELP live_resets_total Reset frames sent, by reason.\n# TYPE live_resets_total counter\n")
		reasons := make([]string, 0, len(st.ResetsBy))
		for r := range st.ResetsBy {
			reasons = append(reasons, r)
		}
		slices.Sort(reasons)
		for _, r := range reasons {
			fmt.Fprintf(&b, "live_resets_total{reason=%q} %d\n", r, st.ResetsBy[r])
		}
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

// Stats is a snapshot of a Hub's activity since NewHub.
type Stats struct {
	Connections   int64            // open SSE and WebSocket connections
	Subscriptions int64            // channel subscriptions across connections
	Published     int64            // publications accepted through this Hub
	Delivered     int64            // frames written to clients
	Writes        int64            // socket writes by the hub's writers; under load one carries many frames
	Replayed      int64            // publications sent from history to resuming clients
	Resets        int64            // reset frames sent
	ResetsBy      map[string]int64 // reset frames by reason: gone, epoch, ahead, malformed, slow, broker
	SlowClients   int64            // times a client overflowed its queue
	BrokerErrors  int64            // failed broker publishes and broken subscriptions
	HookDropped   int64            // successful requests whose Hub.Hook event could not be published
	TooLarge      int64            // publications refused with ErrTooLarge
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

// Stats returns the Hub's counters.
func (h *Hub) Stats() Stats {
	s := &h.stats
	st := Stats{
		Connections:    s.connections.Load(),
		Subscriptions:  s.subscriptions.Load(),
		Published:      s.published.Load(),
		Delivered:      s.delivered.Load(),
		Writes:         s.writes.Load(),
		Replayed:       s.replayed.Load(),
		Resets:         s.resets.Load(),
		SlowClients:    s.slow.Load(),
		BrokerErrors:   s.brokerErrors.Load(),
		HookDropped:    s.hookDropped.Load(),
		TooLarge:       s.tooLarge.Load(),
		Pending:        s.pending.Load(),
		PendingDropped: s.pendingDropped.Load(),
		RetriesLost:    s.retriesLost.Load(),
		RetriesRefused: s.retriesRefused.Load(),
		ResetsBy:       make(map[string]int64, len(s.resetsBy)),
		Drained:        s.drained.Load(),
		Draining:       h.isDraining(),
	}
	for r, n := range s.resetsBy {
		st.ResetsBy[r] = n.Load()
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
	drained                                      atomic.Int64
	resetsBy                                     map[string]*atomic.Int64 // fixed keys: read-only map
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
