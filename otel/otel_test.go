package liveotel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-live/live"
	liveotel "github.com/go-live/live/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// kindTemplate maps "doc:42" to "doc:{id}".
func kindTemplate(channel string) string {
	kind, _, _ := strings.Cut(channel, ":")
	return kind + ":{id}"
}

// attr returns the value of the span's attribute key, "" if none.
func attr(s tracetest.SpanStub, key attribute.Key) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// checkDelivery checks the consumer span of a delivery of the
// publication whose producer span is pub.
func checkDelivery(t *testing.T, d, pub tracetest.SpanStub) {
	t.Helper()
	if d.SpanKind != trace.SpanKindConsumer {
		t.Errorf("%s on %s: kind %v, want consumer", d.Name, node(d), d.SpanKind)
	}
	if d.SpanContext.TraceID() != pub.SpanContext.TraceID() {
		t.Errorf("%s on %s: trace %v, want the producer's %v", d.Name, node(d), d.SpanContext.TraceID(), pub.SpanContext.TraceID())
	}
	if d.Parent.SpanID() != pub.SpanContext.SpanID() || !d.Parent.IsRemote() {
		t.Errorf("%s on %s: parent %v, want the producer span %v, remote", d.Name, node(d), d.Parent.SpanID(), pub.SpanContext.SpanID())
	}
	if len(d.Links) != 1 || d.Links[0].SpanContext.SpanID() != pub.SpanContext.SpanID() {
		t.Errorf("%s on %s: links %v, want one to the producer span", d.Name, node(d), d.Links)
	}
	if got := attr(d, semconv.MessagingOperationTypeKey); got != "process" {
		t.Errorf("%s: messaging.operation.type %q, want process", d.Name, got)
	}
}

// checkNoChannel fails t if a span or metric of nodes names channel.
func checkNoChannel(t *testing.T, ss []tracetest.SpanStub, channel string, nodes ...*testNode) {
	t.Helper()
	for _, s := range ss {
		if strings.Contains(s.Name, channel) {
			t.Errorf("span %q names the channel", s.Name)
		}
		for _, kv := range s.Attributes {
			if strings.Contains(kv.Value.Emit(), channel) {
				t.Errorf("span %q: attribute %s=%s names the channel", s.Name, kv.Key, kv.Value.Emit())
			}
		}
	}
	for _, n := range nodes {
		for name, m := range n.metrics(t) {
			for _, set := range attrSets(m) {
				for _, kv := range set.ToSlice() {
					if strings.Contains(kv.Value.Emit(), channel) {
						t.Errorf("metric %s: attribute %s=%s names the channel", name, kv.Key, kv.Value.Emit())
					}
				}
			}
		}
	}
}

// TestTraceAcrossHubs publishes on hub A, sharing Redis with hub B,
// inside a span: the producer span is its child, and the fan-out on
// both hubs (each has a subscriber) is a child of the producer span, in
// the same trace.
func TestTraceAcrossHubs(t *testing.T) {
	open := redisBroker(t)
	ss := newSpans()
	tpA, tpB := ss.provider("A", nil), ss.provider("B", nil)
	opts := &liveotel.Options{ChannelTemplate: kindTemplate}
	a := newNode(t, open(), tpA, opts, nil)
	b := newNode(t, open(), tpB, opts, nil)
	wsA, wsB := dial(t, a.srv, "doc:42"), dial(t, b.srv, "doc:42")

	ctx, parent := tpA.Tracer("app").Start(context.Background(), "save document")
	if _, err := a.hub.Publish(ctx, "doc:42", map[string]int{"v": 1}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	readUntil(t, wsA, `"v":1`)
	readUntil(t, wsB, `"v":1`)

	got := ss.wait(t, func(s []tracetest.SpanStub) bool {
		return len(named(s, "deliver doc:{id}", "A")) == 1 && len(named(s, "deliver doc:{id}", "B")) == 1 &&
			len(named(s, "publish doc:{id}", "A")) == 1 && len(named(s, "save document", "")) == 1
	})
	app := named(got, "save document", "")[0]
	pub := named(got, "publish doc:{id}", "A")[0]
	if pub.SpanKind != trace.SpanKindProducer {
		t.Errorf("publish span: kind %v, want producer", pub.SpanKind)
	}
	if pub.Parent.SpanID() != app.SpanContext.SpanID() || pub.SpanContext.TraceID() != app.SpanContext.TraceID() {
		t.Errorf("publish span: parent %v in trace %v, want the application's span %v in %v",
			pub.Parent.SpanID(), pub.SpanContext.TraceID(), app.SpanContext.SpanID(), app.SpanContext.TraceID())
	}
	for key, want := range map[attribute.Key]string{
		semconv.MessagingSystemKey:              "live",
		semconv.MessagingOperationTypeKey:       "send",
		semconv.MessagingOperationNameKey:       "publish",
		semconv.MessagingDestinationTemplateKey: "doc:{id}",
	} {
		if got := attr(pub, key); got != want {
			t.Errorf("publish span: %s = %q, want %q", key, got, want)
		}
	}
	if pub.Status.Code == codes.Error {
		t.Errorf("publish span: status %v", pub.Status)
	}
	checkDelivery(t, named(got, "deliver doc:{id}", "A")[0], pub)
	checkDelivery(t, named(got, "deliver doc:{id}", "B")[0], pub)
	if len(named(got, "publish doc:{id}", "B")) != 0 {
		t.Error("hub B made a publish span for a publication it did not make")
	}

	// The metrics: sent on A, consumed on both, by template.
	ma, mb := a.metrics(t), b.metrics(t)
	if n, _ := sum(ma["messaging.client.sent.messages"], semconv.MessagingDestinationTemplateKey, "doc:{id}"); n != 1 {
		t.Errorf("A: messaging.client.sent.messages{doc:{id}} = %d, want 1", n)
	}
	if n := histCount(ma["messaging.client.operation.duration"], semconv.MessagingDestinationTemplateKey, "doc:{id}"); n != 1 {
		t.Errorf("A: messaging.client.operation.duration{doc:{id}} counts %d, want 1", n)
	}
	for name, m := range map[string]map[string]metricdata.Metrics{"A": ma, "B": mb} {
		if n, _ := sum(m["messaging.client.consumed.messages"], semconv.MessagingDestinationTemplateKey, "doc:{id}"); n != 1 {
			t.Errorf("%s: messaging.client.consumed.messages{doc:{id}} = %d, want 1", name, n)
		}
		if n := histCount(m["messaging.process.duration"], semconv.MessagingDestinationTemplateKey, "doc:{id}"); n != 1 {
			t.Errorf("%s: messaging.process.duration{doc:{id}} counts %d, want 1", name, n)
		}
		if n, _ := sum(m["live.connections"], "live.transport", "ws"); n != 1 {
			t.Errorf("%s: live.connections{ws} = %d, want 1", name, n)
		}
		if n := histCount(m["live.write.latency"], "live.transport", "ws"); n < 1 {
			t.Errorf("%s: live.write.latency{ws} counts %d, want 1 or more", name, n)
		}
	}
	if _, ok := mb["messaging.client.sent.messages"]; ok {
		if n, _ := sum(mb["messaging.client.sent.messages"], semconv.MessagingDestinationTemplateKey, "doc:{id}"); n != 0 {
			t.Errorf("B: messaging.client.sent.messages{doc:{id}} = %d, want 0", n)
		}
	}
	checkNoChannel(t, got, "doc:42", a, b)
}

// TestHookInRequest publishes a Hook's event on hub A within an HTTP
// request whose span a middleware started: the publication is a child of
// the request's span, and its delivery on hub B continues the trace.
func TestHookInRequest(t *testing.T) {
	open := redisBroker(t)
	ss := newSpans()
	tpA, tpB := ss.provider("A", nil), ss.provider("B", nil)
	opts := &liveotel.Options{ChannelTemplate: kindTemplate}
	a := newNode(t, open(), tpA, opts, nil)
	b := newNode(t, open(), tpB, opts, nil)
	ws := dial(t, b.srv, "todo:7")

	// What otelhttp's handler does, by hand.
	traced := func(next http.Handler) http.Handler {
		tracer := tpA.Tracer("http")
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, span := tracer.Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
			defer span.End()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	hook := a.hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todo:7" }})
	srv := httptest.NewServer(traced(hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"t1","title":"milk"}`))
	}))))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/todos", "application/json", strings.NewReader(`{"title":"milk"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	readUntil(t, ws, `"milk"`)

	got := ss.wait(t, func(s []tracetest.SpanStub) bool {
		return len(named(s, "POST /api/todos", "A")) == 1 && len(named(s, "publish todo:{id}", "A")) == 1 &&
			len(named(s, "deliver todo:{id}", "B")) == 1
	})
	req := named(got, "POST /api/todos", "A")[0]
	pub := named(got, "publish todo:{id}", "A")[0]
	if pub.Parent.SpanID() != req.SpanContext.SpanID() || pub.SpanContext.TraceID() != req.SpanContext.TraceID() {
		t.Errorf("publish span: parent %v, want the request's span %v", pub.Parent.SpanID(), req.SpanContext.SpanID())
	}
	checkDelivery(t, named(got, "deliver todo:{id}", "B")[0], pub)
	checkNoChannel(t, got, "todo:7", a, b)
}

// TestNoTemplate checks that without ChannelTemplate nothing names the
// channel: not the spans' names, not their attributes, not the metrics.
func TestNoTemplate(t *testing.T) {
	ss := newSpans()
	n := newNode(t, nil, ss.provider("A", nil), nil, nil)
	ws := dial(t, n.srv, "user:alice")
	if _, err := n.hub.Publish(context.Background(), "user:alice", 1); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, `"data"`)
	got := ss.wait(t, func(s []tracetest.SpanStub) bool {
		return len(named(s, "publish", "")) == 1 && len(named(s, "deliver", "")) == 1
	})
	pub, del := named(got, "publish", "")[0], named(got, "deliver", "")[0]
	if pub.Parent.IsValid() {
		t.Errorf("publish span without a span in its context: parent %v, want a root span", pub.Parent)
	}
	checkDelivery(t, del, pub)
	if v := attr(pub, semconv.MessagingDestinationTemplateKey); v != "" {
		t.Errorf("publish span: messaging.destination.template %q without a ChannelTemplate", v)
	}
	m := n.metrics(t)
	for _, name := range []string{"messaging.client.sent.messages", "messaging.client.consumed.messages"} {
		if v, ok := sum(m[name], "", ""); !ok || v != 1 {
			t.Errorf("%s = %d, want 1", name, v)
		}
		for _, set := range attrSets(m[name]) {
			if set.HasValue(semconv.MessagingDestinationTemplateKey) {
				t.Errorf("%s has messaging.destination.template without a ChannelTemplate", name)
			}
		}
	}
	checkNoChannel(t, got, "alice", n)
}

// TestDestinationName puts the channel's name on spans, and only there.
func TestDestinationName(t *testing.T) {
	ss := newSpans()
	n := newNode(t, nil, ss.provider("A", nil), &liveotel.Options{DestinationName: true}, nil)
	ws := dial(t, n.srv, "user:alice")
	if _, err := n.hub.Publish(context.Background(), "user:alice", 1); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, `"data"`)
	got := ss.wait(t, func(s []tracetest.SpanStub) bool {
		return len(named(s, "publish", "")) == 1 && len(named(s, "deliver", "")) == 1
	})
	for _, s := range got {
		if v := attr(s, semconv.MessagingDestinationNameKey); v != "user:alice" {
			t.Errorf("%s span: messaging.destination.name %q, want user:alice", s.Name, v)
		}
	}
	checkNoChannel(t, nil, "alice", n)
}

// TestFailedPublication ends the producer span of a refused publication
// with an error status and error.type.
func TestFailedPublication(t *testing.T) {
	ss := newSpans()
	n := newNode(t, nil, ss.provider("A", nil), nil, &live.Options{QueueBytes: 4096})
	_, err := n.hub.Publish(context.Background(), "big", strings.Repeat("x", 4096))
	if err == nil {
		t.Fatal("a publication larger than half the queue was taken")
	}
	got := ss.wait(t, func(s []tracetest.SpanStub) bool { return len(named(s, "publish", "")) == 1 })
	pub := named(got, "publish", "")[0]
	if pub.Status.Code != codes.Error || attr(pub, semconv.ErrorTypeKey) != "too_large" {
		t.Errorf("publish span of a refused publication: status %v, error.type %q; want an error, too_large",
			pub.Status, attr(pub, semconv.ErrorTypeKey))
	}
}

// TestNotSampled: a publication whose trace is not sampled records no
// span on any hub, yet is delivered and counted.
func TestNotSampled(t *testing.T) {
	ss := newSpans()
	n := newNode(t, nil, ss.provider("A", sdktrace.ParentBased(sdktrace.NeverSample())), nil, nil)
	ws := dial(t, n.srv, "c")
	if _, err := n.hub.Publish(context.Background(), "c", 1); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, `"data"`)
	if v, _ := sum(n.metrics(t)["messaging.client.consumed.messages"], "", ""); v != 1 {
		t.Errorf("messaging.client.consumed.messages = %d, want 1", v)
	}
	if got := ss.GetSpans(); len(got) != 0 {
		t.Errorf("%d spans recorded, want none", len(got))
	}
}

// TestMaxTemplates counts the channels of templates past MaxTemplates as
// "other".
func TestMaxTemplates(t *testing.T) {
	n := newNode(t, nil, newSpans().provider("A", nil), &liveotel.Options{ChannelTemplate: kindTemplate, MaxTemplates: 2}, nil)
	for _, ch := range []string{"doc:1", "doc:2", "room:1", "user:1", "team:1"} {
		if _, err := n.hub.Publish(context.Background(), ch, 1); err != nil {
			t.Fatal(err)
		}
	}
	m := n.metrics(t)["messaging.client.sent.messages"]
	got := map[string]int64{}
	for _, tmpl := range []string{"doc:{id}", "room:{id}", "other", "user:{id}", "team:{id}"} {
		got[tmpl], _ = sum(m, semconv.MessagingDestinationTemplateKey, tmpl)
	}
	want := map[string]int64{"doc:{id}": 2, "room:{id}": 1, "other": 2, "user:{id}": 0, "team:{id}": 0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("messaging.client.sent.messages{%s} = %d, want %d", k, got[k], v)
		}
	}
}
