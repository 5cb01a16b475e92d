package liveotel_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	liveotel "github.com/go-live/live/otel"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const waitFor = 10 * time.Second

// spans is an in-memory exporter that the hubs of a test share, and a
// signal of every span that ends.
type spans struct {
	*tracetest.InMemoryExporter
	ended chan struct{}
}

func newSpans() *spans {
	return &spans{InMemoryExporter: tracetest.NewInMemoryExporter(), ended: make(chan struct{}, 1)}
}

// OnStart, OnEnd, Shutdown and ForceFlush make spans a SpanProcessor
// that signals ended, registered after the exporter's.
func (s *spans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (s *spans) OnEnd(sdktrace.ReadOnlySpan) {
	select {
	case s.ended <- struct{}{}:
	default:
	}
}
func (s *spans) Shutdown(context.Context) error   { return nil }
func (s *spans) ForceFlush(context.Context) error { return nil }

// provider returns a TracerProvider exporting to s, whose spans say they
// come from the node name (service.instance.id), sampled by sampler (all,
// when nil).
func (s *spans) provider(name string, sampler sdktrace.Sampler) *sdktrace.TracerProvider {
	if sampler == nil {
		sampler = sdktrace.AlwaysSample()
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(s.InMemoryExporter),
		sdktrace.WithSpanProcessor(s),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceInstanceID(name))),
	)
}

// wait returns the spans exported once ok holds of them, failing t if it
// does not within waitFor.
func (s *spans) wait(t *testing.T, ok func([]tracetest.SpanStub) bool) []tracetest.SpanStub {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		got := s.GetSpans()
		if ok(got) {
			return got
		}
		select {
		case <-s.ended:
		case <-timeout:
			for _, sp := range got {
				t.Logf("span %q kind %v node %s", sp.Name, sp.SpanKind, node(sp))
			}
			t.Fatal("the spans expected did not end")
		}
	}
}

// node returns the service.instance.id of the span's resource.
func node(s tracetest.SpanStub) string {
	v, _ := s.Resource.Set().Value(semconv.ServiceInstanceIDKey)
	return v.AsString()
}

// named returns the spans called name, made on node (any, if "").
func named(ss []tracetest.SpanStub, name, on string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range ss {
		if s.Name == name && (on == "" || node(s) == on) {
			out = append(out, s)
		}
	}
	return out
}

// node is a hub with its Telemetry, its in-memory metrics and a server.
type testNode struct {
	hub    *live.Hub
	tel    *liveotel.Telemetry
	reader *sdkmetric.ManualReader
	srv    *httptest.Server
}

// newNode starts a hub on broker b (the default, if nil) traced through
// tp, with the Telemetry opts (whose providers it sets) and hubOpts.
func newNode(t *testing.T, b live.Broker, tp *sdktrace.TracerProvider, opts *liveotel.Options, hubOpts *live.Options) *testNode {
	t.Helper()
	n := &testNode{reader: sdkmetric.NewManualReader()}
	var o liveotel.Options
	if opts != nil {
		o = *opts
	}
	o.TracerProvider = tp
	o.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(n.reader))
	n.tel = liveotel.New(&o)
	if hubOpts == nil {
		hubOpts = &live.Options{}
	}
	hubOpts.Broker = b
	hubOpts.Observe = n.tel.Hooks()
	n.hub = live.NewHub(hubOpts)
	n.tel.Watch(n.hub)
	n.srv = httptest.NewServer(n.hub.WebSocketHandler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := n.hub.Close(ctx); err != nil {
			t.Error(err)
		}
		n.srv.Close()
	})
	return n
}

// metrics collects the node's metrics.
func (n *testNode) metrics(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := n.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// attrSets returns the attribute sets of the data points of m.
func attrSets(m metricdata.Metrics) []attribute.Set {
	var out []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	}
	return out
}

// sum returns the value of the int64 sum m at the point with attribute
// key=value (any point, if key is ""), and whether there is one.
func sum(m metricdata.Metrics, key attribute.Key, value string) (int64, bool) {
	d, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		return 0, false
	}
	for _, p := range d.DataPoints {
		if v, ok := p.Attributes.Value(key); key == "" || ok && v.AsString() == value {
			return p.Value, true
		}
	}
	return 0, false
}

// histCount returns the number of measures of the histogram m at the
// point with attribute key=value (any point, if key is "").
func histCount(m metricdata.Metrics, key attribute.Key, value string) uint64 {
	d, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		return 0
	}
	var n uint64
	for _, p := range d.DataPoints {
		if v, ok := p.Attributes.Value(key); key == "" || ok && v.AsString() == value {
			n += p.Count
		}
	}
	return n
}

// redisBroker opens a broker on the shared Redis under a prefix of its
// own, or skips t without LIVE_REDIS_URL. Its keys are deleted when t
// ends.
func redisBroker(t *testing.T) func() *redisbroker.Broker {
	t.Helper()
	url := servertest.EnvURL(t, "LIVE_REDIS_URL", "tests across hubs: cd otel && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test ./...")
	prefix := "livetest:" + servertest.RandomName() + ":"
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		client.Close()
	})
	var mu sync.Mutex
	return func() *redisbroker.Broker {
		mu.Lock()
		defer mu.Unlock()
		b, err := redisbroker.Open(url, &redisbroker.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		servertest.CloseAtEnd(t, b)
		return b
	}
}

// dial opens a WebSocket to srv subscribed to channel, and returns it
// once subscribed.
func dial(t *testing.T, srv *httptest.Server, channel string) *websocket.Conn {
	t.Helper()
	return servertest.DialWS(t, srv.URL, channel)
}

// readUntil reads ws until a message containing want.
func readUntil(t *testing.T, ws *websocket.Conn, want string) {
	t.Helper()
	servertest.ReadWSUntil(t, ws, want)
}
