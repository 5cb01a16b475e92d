// Package metricdef defines a Hub's metrics once: their names, types,
// help texts, labels and where their values come from. Hub.MetricsHandler
// and the Prometheus collector of module github.com/go-live/live/prometheus
// both serve them from here, so the two never disagree.
package metricdef

import (
	"fmt"
	"reflect"
	"slices"
)

// A Kind is a metric's type.
type Kind uint8

const (
	Counter Kind = iota
	Gauge
	Histogram
)

// String returns the kind as the Prometheus text format names it.
func (k Kind) String() string {
	switch k {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	}
	return "histogram"
}

// A Metric is one metric family.
type Metric struct {
	Name string
	Kind Kind
	Help string
	// Label names the label of a metric read from a map of live.Stats,
	// keyed by its values; "" for none. A histogram's label, if any.
	Label string
	// Field is the field of live.Stats the metric is read from: an int64,
	// a bool (1 for true), or a map[string]int64 keyed by Label's values.
	// "" for histograms, which the collector observes through
	// live.Options.Observe.
	Field string
	// Buckets are a histogram's upper bounds.
	Buckets []float64
}

// Stats are the metrics read from live.Stats, in the order they are
// served.
var Stats = []*Metric{
	{Name: "live_connections", Kind: Gauge, Label: "transport", Field: "ConnectionsBy",
		Help: "Open connections, by transport: sse, sse-mux, ws, poll (a long-poll is open while it is held)."},
	{Name: "live_subscriptions", Kind: Gauge, Label: "transport", Field: "SubscriptionsBy",
		Help: "Channel subscriptions across connections, by transport."},
	{Name: "live_channels", Kind: Gauge, Field: "Channels",
		Help: "Channels with local subscribers."},
	{Name: "live_queued_bytes", Kind: Gauge, Field: "QueuedBytes",
		Help: "Bytes waiting in connection queues."},
	{Name: "live_presence_members", Kind: Gauge, Field: "PresenceMembers",
		Help: "Presence members held by this hub, summed over presence channels: users, plus anonymous connections."},
	{Name: "live_published_total", Kind: Counter, Field: "Published",
		Help: "Publications accepted through this hub."},
	{Name: "live_delivered_total", Kind: Counter, Field: "Delivered",
		Help: "Frames written to clients."},
	{Name: "live_writes_total", Kind: Counter, Field: "Writes",
		Help: "Socket writes by the hub's writers; under load one carries many frames."},
	{Name: "live_replayed_total", Kind: Counter, Field: "Replayed",
		Help: "Publications replayed from history to resuming clients."},
	{Name: "live_resets_total", Kind: Counter, Label: "reason", Field: "ResetsBy",
		Help: "Reset frames sent, by reason."},
	{Name: "live_slow_clients_total", Kind: Counter, Field: "SlowClients",
		Help: "Times a client overflowed its queue."},
	{Name: "live_dropped_total", Kind: Counter, Field: "Dropped",
		Help: "Frames dropped, or folded into fewer, from the queues of clients that fell behind."},
	{Name: "live_slow_ended_total", Kind: Counter, Field: "SlowEnded",
		Help: "Connections ended because their client did not keep up."},
	{Name: "live_broker_errors_total", Kind: Counter, Field: "BrokerErrors",
		Help: "Failed broker publishes and broken subscriptions."},
	{Name: "live_hook_dropped_total", Kind: Counter, Field: "HookDropped",
		Help: "Successful requests whose hook event was not published."},
	{Name: "live_too_large_total", Kind: Counter, Field: "TooLarge",
		Help: "Publications refused as larger than half of the client queue."},
	{Name: "live_pending_publications", Kind: Gauge, Field: "Pending",
		Help: "Promised publications waiting for the broker to take them."},
	{Name: "live_pending_dropped_total", Kind: Counter, Field: "PendingDropped",
		Help: "Promised publications dropped: waiting too long, too many bytes waiting, or left at Close."},
	{Name: "live_retries_lost_total", Kind: Counter, Field: "RetriesLost",
		Help: "Responses to keyed requests dropped or not saved within their retry window."},
	{Name: "live_retries_refused_total", Kind: Counter, Field: "RetriesRefused",
		Help: "Keyed requests refused with 503 because their key could not be claimed."},
	{Name: "live_controls_total", Kind: Counter, Label: "op", Field: "Controls",
		Help: "Control messages applied by this hub, by op: disconnect, reauthorize, recheck."},
	{Name: "live_draining", Kind: Gauge, Field: "Draining",
		Help: "1 once Hub.Drain was called: the node is leaving."},
	{Name: "live_drained_total", Kind: Counter, Field: "Drained",
		Help: "Connections ended by Hub.Drain, long-polls included."},
}

// Unexported lists the fields of live.Stats that no metric reads, with
// why: a test checks that every field is either read or listed here.
var Unexported = map[string]string{
	"Connections":   "the sum of live_connections",
	"Subscriptions": "the sum of live_subscriptions",
	"Resets":        "the sum of live_resets_total",
}

// Histograms, which only the collector serves: they are observed through
// live.Options.Observe.
var (
	PublishSeconds = &Metric{Name: "live_publish_seconds", Kind: Histogram, Label: "channel",
		Help:    "Time the broker took to answer a publication made through this hub. Labelled by channel template only when one is configured.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}
	WriteLatencySeconds = &Metric{Name: "live_write_latency_seconds", Kind: Histogram, Label: "transport",
		Help:    "Per socket write, time from the oldest publication in it reaching this hub from the broker to its write.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}
	WriteFrames = &Metric{Name: "live_write_frames", Kind: Histogram, Label: "transport",
		Help:    "Frames carried by one socket write.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}}
	WriterWaitSeconds = &Metric{Name: "live_writer_wait_seconds", Kind: Histogram,
		Help:    "Time a connection with output waited behind others for one of the hub's writers.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}
	PollHoldSeconds = &Metric{Name: "live_poll_hold_seconds", Kind: Histogram,
		Help:    "Time a long-poll was held open before it was answered.",
		Buckets: []float64{.005, .01, .05, .1, .5, 1, 2.5, 5, 10, 15, 20, 25, 30}}
	PingRTTSeconds = &Metric{Name: "live_ping_rtt_seconds", Kind: Histogram,
		Help:    "Round trip of a WebSocket heartbeat ping, from queued to its pong read.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}
)

// Histograms lists the histograms in the order they are served.
var Histograms = []*Metric{PublishSeconds, WriteLatencySeconds, WriteFrames, WriterWaitSeconds, PollHoldSeconds, PingRTTSeconds}

// Read calls fn for every sample of the metrics in Stats, read from
// stats, a live.Stats: once for an unlabelled metric (label ""), once per
// key, in order, for a labelled one.
func Read(stats any, fn func(m *Metric, label string, v float64)) {
	v := reflect.ValueOf(stats)
	for _, m := range Stats {
		f := v.FieldByName(m.Field)
		switch f.Kind() {
		case reflect.Int64:
			fn(m, "", float64(f.Int()))
		case reflect.Bool:
			b := 0.0
			if f.Bool() {
				b = 1
			}
			fn(m, "", b)
		case reflect.Map:
			keys := make([]string, 0, f.Len())
			for _, k := range f.MapKeys() {
				keys = append(keys, k.String())
			}
			slices.Sort(keys)
			for _, k := range keys {
				fn(m, k, float64(f.MapIndex(reflect.ValueOf(k)).Int()))
			}
		default:
			panic(fmt.Sprintf("metricdef: %s reads Stats.%s, a %s", m.Name, m.Field, f.Kind()))
		}
	}
}
