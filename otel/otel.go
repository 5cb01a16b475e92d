// Package liveotel traces and measures a live.Hub with OpenTelemetry.
//
// Traces follow a publication from the call that made it to its fan-out
// on every hub sharing the broker: Publish (or a Hook event, an HTTP or
// WebSocket publish, a State write) starts a PRODUCER span, "publish
// <template>", as a child of the span in its context, so that inside an
// HTTP handler instrumented with otelhttp it is a child of the request's
// span. The context of that span travels with the publication, beside its
// data, through the broker; every hub it reaches starts a CONSUMER span,
// "deliver <template>", for its fan-out to local subscribers. That span is
// a child of the producer span and also links to it, as the messaging
// semantic conventions ask of a "process" span (a link for the creation
// context, a parent when one message is processed), so one trace shows the
// request, its publication and the delivery on every node. A publication
// that carries no trace context (made by a hub without these hooks) gets
// no consumer span, and a parent-based sampler follows on every hub the
// decision made where it was published.
//
// Metrics follow the messaging semantic conventions
// (messaging.client.operation.duration, messaging.client.sent.messages,
// messaging.client.consumed.messages, messaging.process.duration), with
// messaging.system "live"; besides them the hub's own counters and gauges,
// read from Hub.Stats at each collection, and histograms of write latency
// and the like, under "live." names (docs/operations.md lists them).
//
//	tel := liveotel.New(nil) // the global TracerProvider, MeterProvider and propagator
//	hub := live.NewHub(&live.Options{Broker: b, Observe: tel.Hooks()})
//	tel.Watch(hub)
//
// The hooks go into the hub's Options before the hub exists, and Watch
// gives the Telemetry the hub whose Stats it reads; until then it reports
// only what the hooks see. To export Prometheus metrics as well, join both
// sets of hooks with observe.Join.
//
// # Cardinality
//
// A channel's name is never an attribute nor part of a span's name unless
// the application says so: an application has as many channels as it has
// documents, users or rooms. Options.ChannelTemplate maps a channel to its
// template ("doc:42" to "doc:{id}"), which becomes
// messaging.destination.template on metrics and spans and names the
// spans; without it the attribute is left out and the spans are named
// "publish" and "deliver". The hub's own channels ("@live:control",
// "@live:presence") are few and fixed, and are their own template.
// Options.DestinationName puts the channel's name on spans (never on
// metrics) as messaging.destination.name.
package liveotel

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/metricdef"
	"github.com/go-live/live/observe"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/go-live/live/otel"

// System is the value of messaging.system on every span and metric.
const System = "live"

// The messaging.operation.name of each operation.
const (
	OpPublish = "publish" // a publication handed to the broker (operation type "send")
	OpDeliver = "deliver" // a publication fanned out to a hub's subscribers (operation type "process")
)

// Options configures a Telemetry. A nil *Options, or a zero field, means
// the default documented on the field.
type Options struct {
	// TracerProvider makes the tracer of the spans. Default: the global
	// one, otel.GetTracerProvider.
	TracerProvider trace.TracerProvider

	// MeterProvider makes the meter of the metrics. Default: the global
	// one, otel.GetMeterProvider.
	MeterProvider metric.MeterProvider

	// Propagator writes a producer span's context into the trace a
	// publication carries, and reads it on every hub. Every hub sharing a
	// broker must use the same. Default: the global one,
	// otel.GetTextMapPropagator, unless none was set, in which case W3C
	// Trace Context (propagation.TraceContext).
	Propagator propagation.TextMapPropagator

	// ChannelTemplate, if set, maps a channel to the template it is an
	// instance of, such as "doc:{id}" for "doc:42":
	// messaging.destination.template, on metrics and spans, and part of
	// the spans' names. What it returns must come from a small fixed set;
	// "" leaves the channel without a template. Default: none, and
	// nothing names the channel.
	ChannelTemplate func(channel string) string

	// MaxTemplates bounds the distinct values ChannelTemplate may give;
	// channels beyond get the template "other". Default 100.
	MaxTemplates int

	// DestinationName, if true, sets messaging.destination.name, the
	// channel's name, on spans; metrics never carry it. Default false.
	DestinationName bool
}

// A Telemetry traces and measures one Hub: its Hooks go into the hub's
// Options.Observe, and Watch gives it the hub whose Stats it reports.
type Telemetry struct {
	hub atomic.Pointer[live.Hub]

	tracer      trace.Tracer
	prop        propagation.TextMapPropagator
	template    func(string) string
	destName    bool
	noTemplate  *dest // without ChannelTemplate, and for "" templates
	byTemplate  *metricdef.Templates[*dest]
	reservedMu  sync.Mutex
	reservedDst map[string]*dest

	opDuration messagingconv.ClientOperationDuration
	sent       messagingconv.ClientSentMessages
	consumed   messagingconv.ClientConsumedMessages
	process    messagingconv.ProcessDuration

	writeLat, writeFrames, wait, poll, ping metric.Float64Histogram
	byTransport                             [4][]metric.RecordOption
}

// dest is what a Telemetry says of the channels of one template,
// computed once.
type dest struct {
	template     string // "" for none
	publishSpan  string // the spans' names
	deliverSpan  string
	publishStart []trace.SpanStartOption
	deliverStart []trace.SpanStartOption
	// the attributes of a publication's duration and count, to which a
	// failed one adds error.type
	publishAttrs, sentAttrs []attribute.KeyValue
	durOpts                 []metric.RecordOption
	sentOpts                []metric.AddOption
	consumedOpts            []metric.AddOption
	processOpts             []metric.RecordOption
}

// New returns a Telemetry configured by opts, which may be nil. It
// creates its instruments at once; an instrument the MeterProvider
// refuses is left out, reported to otel.Handle.
func New(opts *Options) *Telemetry {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	if o.MeterProvider == nil {
		o.MeterProvider = otel.GetMeterProvider()
	}
	if o.Propagator == nil {
		o.Propagator = otel.GetTextMapPropagator()
		if len(o.Propagator.Fields()) == 0 {
			o.Propagator = propagation.TraceContext{}
		}
	}
	t := &Telemetry{
		tracer:      o.TracerProvider.Tracer(ScopeName, trace.WithInstrumentationVersion(live.Version)),
		prop:        o.Propagator,
		template:    o.ChannelTemplate,
		destName:    o.DestinationName,
		byTemplate:  metricdef.NewTemplates(o.MaxTemplates, newDest),
		reservedDst: make(map[string]*dest),
	}
	t.noTemplate = newDest("")
	t.initMetrics(o.MeterProvider.Meter(ScopeName, metric.WithInstrumentationVersion(live.Version)))
	return t
}

// newDest computes what is said of the channels of template.
func newDest(template string) *dest {
	d := &dest{template: template, publishSpan: OpPublish, deliverSpan: OpDeliver}
	common := []attribute.KeyValue{semconv.MessagingSystemKey.String(System)}
	if template != "" {
		d.publishSpan += " " + template
		d.deliverSpan += " " + template
		common = append(common, semconv.MessagingDestinationTemplate(template))
	}
	pub := append(common[:len(common):len(common)], semconv.MessagingOperationName(OpPublish), semconv.MessagingOperationTypeSend)
	del := append(common[:len(common):len(common)], semconv.MessagingOperationName(OpDeliver), semconv.MessagingOperationTypeProcess)
	// messaging.client.sent.messages takes no operation type.
	sent := append(common[:len(common):len(common)], semconv.MessagingOperationName(OpPublish))
	d.publishAttrs, d.sentAttrs = pub, sent
	d.publishStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(pub...)}
	d.deliverStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(del...)}
	pubSet, delSet := attribute.NewSet(pub...), attribute.NewSet(del...)
	d.sentOpts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(sent...))}
	d.durOpts = []metric.RecordOption{metric.WithAttributeSet(pubSet)}
	d.consumedOpts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(append(common[:len(common):len(common)], semconv.MessagingOperationName(OpDeliver))...))}
	d.processOpts = []metric.RecordOption{metric.WithAttributeSet(delSet)}
	return d
}

// destOf returns the dest of channel's template.
func (t *Telemetry) destOf(channel string) *dest {
	if strings.HasPrefix(channel, "@live:") {
		return t.reserved(channel)
	}
	if t.template == nil {
		return t.noTemplate
	}
	tmpl := t.template(channel)
	if tmpl == "" {
		return t.noTemplate
	}
	return t.byTemplate.Get(tmpl)
}

// reserved returns the dest of one of the hub's own channels, which is
// its own template: they are few and fixed.
func (t *Telemetry) reserved(channel string) *dest {
	t.reservedMu.Lock()
	defer t.reservedMu.Unlock()
	d := t.reservedDst[channel]
	if d == nil {
		if len(t.reservedDst) >= 16 { // never, with today's hubs; a bound all the same
			return t.noTemplate
		}
		d = newDest(channel)
		t.reservedDst[channel] = d
	}
	return d
}

// Watch makes the Telemetry report hub's Stats at each collection. hub
// should be the one whose Options.Observe holds the Telemetry's Hooks.
// Several hubs in one process each need a Telemetry on a MeterProvider of
// their own (its resource telling them apart): on a shared one, their
// Stats would be reported under the same attributes.
func (t *Telemetry) Watch(hub *live.Hub) { t.hub.Store(hub) }

// Hooks returns the hooks that trace publications and feed the
// histograms and counters, for live.Options.Observe. Each call returns
// new hooks feeding the same instruments.
func (t *Telemetry) Hooks() *observe.Hooks {
	return &observe.Hooks{
		Published: t.published,
		Wrote: func(transport string, frames int, latency time.Duration) {
			opts := t.byTransport[metricdef.TransportIndex(transport)]
			t.writeFrames.Record(context.Background(), float64(frames), opts...)
			if latency > 0 {
				t.writeLat.Record(context.Background(), latency.Seconds(), opts...)
			}
		},
		Waited:   func(d time.Duration) { t.wait.Record(context.Background(), d.Seconds()) },
		PollHeld: func(d time.Duration) { t.poll.Record(context.Background(), d.Seconds()) },
		Pong:     func(rtt time.Duration) { t.ping.Record(context.Background(), rtt.Seconds()) },
		Inject:   t.inject,
		FanOut:   t.fanOut,
	}
}

// published measures a publication the broker answered.
func (t *Telemetry) published(channel string, took time.Duration, err error) {
	d := t.destOf(channel)
	ctx := context.Background()
	if err == nil {
		t.opDuration.Inst().Record(ctx, took.Seconds(), d.durOpts...)
		t.sent.Inst().Add(ctx, 1, d.sentOpts...)
		return
	}
	et := semconv.ErrorTypeKey.String(ErrorType(err))
	set := attribute.NewSet(append(d.publishAttrs[:len(d.publishAttrs):len(d.publishAttrs)], et)...)
	t.opDuration.Inst().Record(ctx, took.Seconds(), metric.WithAttributeSet(set))
	sent := attribute.NewSet(append(d.sentAttrs[:len(d.sentAttrs):len(d.sentAttrs)], et)...)
	t.sent.Inst().Add(ctx, 1, metric.WithAttributeSet(sent))
}

// ErrorType returns the error.type a failed publication is reported
// with: a few values, whatever the error's text.
func ErrorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, live.ErrTooLarge):
		return "too_large"
	case errors.Is(err, live.ErrClosed):
		return "closed"
	case errors.Is(err, live.ErrConflict):
		return "conflict"
	}
	return "_OTHER"
}

// inject starts the producer span of a publication on channel, as a
// child of the span in ctx, and returns its context for the publication
// to carry, and what ends it.
func (t *Telemetry) inject(ctx context.Context, channel string) (string, func(error)) {
	d := t.destOf(channel)
	opts := d.publishStart
	if t.destName {
		opts = append(opts[:len(opts):len(opts)], trace.WithAttributes(semconv.MessagingDestinationName(channel)))
	}
	ctx, span := t.tracer.Start(ctx, d.publishSpan, opts...)
	if !span.SpanContext().IsValid() {
		return "", nil // a no-op tracer
	}
	tr := t.encode(ctx)
	if !span.IsRecording() {
		return tr, nil // not sampled: its end is not recorded
	}
	return tr, func(err error) {
		if err != nil {
			span.SetAttributes(semconv.ErrorTypeKey.String(ErrorType(err)))
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// fanOut counts a publication that reached the hub and, if it carries a
// trace, starts the span of its fan-out.
func (t *Telemetry) fanOut(channel, tr string) func() {
	d := t.destOf(channel)
	ctx := context.Background()
	t.consumed.Inst().Add(ctx, 1, d.consumedOpts...)
	start := time.Now()
	var span trace.Span
	if tr != "" {
		pctx := t.decode(ctx, tr)
		if psc := trace.SpanContextFromContext(pctx); psc.IsValid() {
			opts := append(d.deliverStart[:len(d.deliverStart):len(d.deliverStart)],
				trace.WithLinks(trace.Link{SpanContext: psc}))
			if t.destName {
				opts = append(opts, trace.WithAttributes(semconv.MessagingDestinationName(channel)))
			}
			_, span = t.tracer.Start(pctx, d.deliverSpan, opts...)
			if !span.IsRecording() {
				span = nil
			}
		}
	}
	return func() {
		t.process.Inst().Record(ctx, time.Since(start).Seconds(), d.processOpts...)
		if span != nil {
			span.End()
		}
	}
}
