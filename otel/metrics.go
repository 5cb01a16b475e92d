package liveotel

import (
	"context"

	"github.com/go-live/live/internal/metricdef"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
)

// An otelMetric is how a metric of internal/metricdef is named in
// OpenTelemetry: dotted, in the "live." namespace, without the unit or
// "_total" in its name, its unit in UCUM.
type otelMetric struct {
	name, unit string
}

// names translates every metric of internal/metricdef (a test checks that
// none is left out).
var names = map[string]otelMetric{
	"live_connections":           {"live.connections", "{connection}"},
	"live_subscriptions":         {"live.subscriptions", "{subscription}"},
	"live_channels":              {"live.channels", "{channel}"},
	"live_queued_bytes":          {"live.queue.size", "By"},
	"live_presence_members":      {"live.presence.members", "{member}"},
	"live_published_total":       {"live.published", "{publication}"},
	"live_delivered_total":       {"live.delivered", "{frame}"},
	"live_writes_total":          {"live.writes", "{write}"},
	"live_replayed_total":        {"live.replayed", "{publication}"},
	"live_resets_total":          {"live.resets", "{reset}"},
	"live_slow_clients_total":    {"live.slow_clients", "{overflow}"},
	"live_dropped_total":         {"live.dropped", "{frame}"},
	"live_slow_ended_total":      {"live.slow_ended", "{connection}"},
	"live_broker_errors_total":   {"live.broker.errors", "{error}"},
	"live_hook_dropped_total":    {"live.hook.dropped", "{event}"},
	"live_too_large_total":       {"live.too_large", "{publication}"},
	"live_pending_publications":  {"live.pending.publications", "{publication}"},
	"live_pending_dropped_total": {"live.pending.dropped", "{publication}"},
	"live_retries_lost_total":    {"live.retries.lost", "{response}"},
	"live_retries_refused_total": {"live.retries.refused", "{request}"},
	"live_controls_total":        {"live.controls", "{message}"},
	"live_draining":              {"live.draining", "1"},
	"live_drained_total":         {"live.drained", "{connection}"},

	// The histograms. live_publish_seconds is
	// messaging.client.operation.duration.
	"live_write_latency_seconds": {"live.write.latency", "s"},
	"live_write_frames":          {"live.write.frames", "{frame}"},
	"live_writer_wait_seconds":   {"live.writer.wait", "s"},
	"live_poll_hold_seconds":     {"live.poll.hold", "s"},
	"live_ping_rtt_seconds":      {"live.ping.rtt", "s"},
}

// labels translates the labels of internal/metricdef to attribute names.
var labels = map[string]string{
	"transport": "live.transport",
	"reason":    "live.reset.reason",
	"op":        "live.control.operation",
}

// publishBuckets are the bounds the messaging semantic conventions advise
// for messaging.client.operation.duration and messaging.process.duration.
var publishBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// initMetrics creates t's instruments on meter, and the callback that
// reads the watched hub's Stats.
func (t *Telemetry) initMetrics(meter metric.Meter) {
	var err error
	report := func(e error) {
		if e != nil {
			otel.Handle(e)
		}
	}
	t.opDuration, err = messagingconv.NewClientOperationDuration(meter, metric.WithExplicitBucketBoundaries(publishBuckets...))
	report(err)
	t.sent, err = messagingconv.NewClientSentMessages(meter)
	report(err)
	t.consumed, err = messagingconv.NewClientConsumedMessages(meter)
	report(err)
	t.process, err = messagingconv.NewProcessDuration(meter, metric.WithExplicitBucketBoundaries(publishBuckets...))
	report(err)

	hist := func(m *metricdef.Metric) metric.Float64Histogram {
		n := names[m.Name]
		h, err := meter.Float64Histogram(n.name, metric.WithDescription(m.Help), metric.WithUnit(n.unit),
			metric.WithExplicitBucketBoundaries(m.Buckets...))
		if err != nil {
			report(err)
			return noop.Float64Histogram{}
		}
		return h
	}
	t.writeLat = hist(metricdef.WriteLatencySeconds)
	t.writeFrames = hist(metricdef.WriteFrames)
	t.wait = hist(metricdef.WriterWaitSeconds)
	t.poll = hist(metricdef.PollHoldSeconds)
	t.ping = hist(metricdef.PingRTTSeconds)
	for i, tr := range metricdef.Transports {
		t.byTransport[i] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(labels["transport"], tr)))}
	}

	// The hub's counters and gauges, read from Stats at each collection.
	// Its gauges are all sums (of connections, bytes…), which
	// OpenTelemetry reports as up-down counters.
	insts := make(map[*metricdef.Metric]metric.Int64Observable, len(metricdef.Stats))
	var all []metric.Observable
	for _, m := range metricdef.Stats {
		n := names[m.Name]
		var inst metric.Int64Observable
		var err error
		if m.Kind == metricdef.Counter {
			inst, err = meter.Int64ObservableCounter(n.name, metric.WithDescription(m.Help), metric.WithUnit(n.unit))
		} else {
			inst, err = meter.Int64ObservableUpDownCounter(n.name, metric.WithDescription(m.Help), metric.WithUnit(n.unit))
		}
		if err != nil {
			report(err)
			continue
		}
		insts[m] = inst
		all = append(all, inst)
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		hub := t.hub.Load()
		if hub == nil {
			return nil
		}
		metricdef.Read(hub.Stats(), func(m *metricdef.Metric, label string, v float64) {
			inst := insts[m]
			if inst == nil {
				return
			}
			if m.Label == "" {
				o.ObserveInt64(inst, int64(v))
			} else {
				o.ObserveInt64(inst, int64(v), metric.WithAttributes(attribute.String(labels[m.Label], label)))
			}
		})
		return nil
	}, all...)
	report(err)
}
