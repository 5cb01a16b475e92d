package liveotel

import (
	"context"
	"strings"
	"testing"

	"github.com/go-live/live/internal/metricdef"
	"github.com/go-live/live/observe"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TestNames checks that every metric and label of internal/metricdef has
// its OpenTelemetry name, and that no two share one.
func TestNames(t *testing.T) {
	seen := map[string]string{}
	for _, m := range append(append([]*metricdef.Metric{}, metricdef.Stats...), metricdef.Histograms...) {
		if m == metricdef.PublishSeconds {
			continue // messaging.client.operation.duration
		}
		n, ok := names[m.Name]
		if !ok {
			t.Errorf("%s has no OpenTelemetry name", m.Name)
			continue
		}
		if other, dup := seen[n.name]; dup {
			t.Errorf("%s and %s are both %s", m.Name, other, n.name)
		}
		seen[n.name] = m.Name
		if m.Label != "" && labels[m.Label] == "" {
			t.Errorf("%s: label %q has no attribute name", m.Name, m.Label)
		}
	}
	if len(seen) != len(names) {
		t.Errorf("%d names for %d metrics", len(names), len(seen))
	}
	// A name is never the namespace of another (OpenTelemetry's naming rule).
	for n := range seen {
		for other := range seen {
			if strings.HasPrefix(other, n+".") {
				t.Errorf("%s is a metric and the namespace of %s", n, other)
			}
		}
	}
}

// spanContext returns a sampled span context with tracestate ts.
func spanContext(t *testing.T, ts string) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, err := trace.ParseTraceState(ts)
	if err != nil {
		t.Fatal(err)
	}
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: state,
	}))
}

// TestTraceCarried encodes span contexts as a publication carries them
// and decodes them back.
func TestTraceCarried(t *testing.T) {
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	w3c := &Telemetry{prop: propagation.TraceContext{}}
	if got := w3c.encode(spanContext(t, "")); got != parent {
		t.Errorf("a traceparent alone travels as %q, want %q", got, parent)
	}
	ctx := spanContext(t, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
	tr := w3c.encode(ctx)
	if tr != "traceparent="+parent+"\ntracestate=congo=t61rcWkgMzE,rojo=00f067aa0ba902b7" {
		t.Errorf("with a tracestate: %q", tr)
	}
	back := trace.SpanContextFromContext(w3c.decode(context.Background(), tr))
	if !back.Equal(trace.SpanContextFromContext(ctx).WithRemote(true)) {
		t.Errorf("decoded %v, want %v", back, trace.SpanContextFromContext(ctx))
	}
	back = trace.SpanContextFromContext(w3c.decode(context.Background(), parent))
	if back.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !back.IsRemote() || !back.IsSampled() {
		t.Errorf("decoded a traceparent alone as %v", back)
	}

	// A tracestate too long to carry is left out; the traceparent goes.
	long := "a=" + strings.Repeat("x", 250)
	if got := w3c.encode(spanContext(t, long)); got != "traceparent="+parent {
		t.Errorf("with a long tracestate: %q, want the traceparent alone", got)
	}

	// Baggage, in a composite propagator, goes if it fits.
	comp := &Telemetry{prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	m, _ := baggage.NewMember("user", "42")
	bag, _ := baggage.New(m)
	tr = comp.encode(baggage.ContextWithBaggage(spanContext(t, ""), bag))
	if tr != "traceparent="+parent+"\nbaggage=user=42" {
		t.Errorf("with baggage: %q", tr)
	}
	dctx := comp.decode(context.Background(), tr)
	if baggage.FromContext(dctx).Member("user").Value() != "42" || !trace.SpanContextFromContext(dctx).IsValid() {
		t.Error("baggage or span context lost on the way")
	}

	// Whatever a publication carries, decoding never fails loudly.
	for _, bad := range []string{"", "garbage", "=", "traceparent=zz", "\n\n=\n", strings.Repeat("=", observe.MaxTrace)} {
		if sc := trace.SpanContextFromContext(w3c.decode(context.Background(), bad)); sc.IsValid() {
			t.Errorf("decode(%q) = %v, want no span context", bad, sc)
		}
	}
}
