package liveprom_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	liveprom "github.com/go-live/live/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const waitFor = 10 * time.Second

// newHub starts a hub whose metrics m collects, served by a test server.
func newHub(t *testing.T, m *liveprom.Collector, opts *live.Options) (*live.Hub, *httptest.Server) {
	t.Helper()
	if opts == nil {
		opts = &live.Options{}
	}
	opts.Observe = m.Hooks()
	hub := live.NewHub(opts)
	m.Watch(hub)
	srv := httptest.NewServer(hub.WebSocketHandler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := hub.Close(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
	})
	return hub, srv
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

// gather returns the registry's metric families by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// labelled returns the metric of mf whose label name is value.
func labelled(mf *dto.MetricFamily, name, value string) *dto.Metric {
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == name && l.GetValue() == value {
				return m
			}
		}
	}
	return nil
}

func TestCollector(t *testing.T) {
	m := liveprom.New(nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	hub, srv := newHub(t, m, nil)
	ws := dial(t, srv, "doc:1")
	if _, err := hub.Publish(context.Background(), "doc:1", 1); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, `"data"`)

	mfs := gather(t, reg)
	if c := labelled(mfs["live_connections"], "transport", "ws"); c.GetGauge().GetValue() != 1 {
		t.Errorf("live_connections{transport=ws} = %v, want 1", c)
	}
	if v := mfs["live_published_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("live_published_total = %v, want 1", v)
	}
	if n := mfs["live_publish_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("live_publish_seconds counts %d, want 1", n)
	}
	if l := mfs["live_publish_seconds"].GetMetric()[0].GetLabel(); len(l) != 0 {
		t.Errorf("live_publish_seconds labelled %v without a ChannelTemplate", l)
	}
	lat := labelled(mfs["live_write_latency_seconds"], "transport", "ws").GetHistogram()
	if lat.GetSampleCount() < 1 || lat.GetSampleSum() <= 0 || lat.GetSampleSum() > waitFor.Seconds() {
		t.Errorf("live_write_latency_seconds{transport=ws}: %d samples, sum %v", lat.GetSampleCount(), lat.GetSampleSum())
	}
	if n := mfs["live_writer_wait_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n < 1 {
		t.Errorf("live_writer_wait_seconds counts %d", n)
	}

	// The metrics pass Prometheus's own lint: names, units, help.
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestHandlerAgrees checks that Hub.MetricsHandler serves the Collector's
// counters and gauges, under the same names with the same values.
func TestHandlerAgrees(t *testing.T) {
	m := liveprom.New(nil)
	hub, srv := newHub(t, m, nil)
	ws := dial(t, srv, "c")
	if _, err := hub.Publish(context.Background(), "c", 1); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, `"data"`)
	// Nothing moves now: the client has what was published.
	rec := httptest.NewRecorder()
	hub.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	names := []string{}
	for name := range gather(t, reg) {
		if !strings.HasSuffix(name, "_seconds") && name != "live_write_frames" {
			names = append(names, name)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(rec.Body.String()), names...); err != nil {
		t.Error(err)
	}
}

func TestChannelTemplate(t *testing.T) {
	m := liveprom.New(&liveprom.Options{
		MaxTemplates: 2,
		ChannelTemplate: func(ch string) string {
			kind, _, _ := strings.Cut(ch, ":")
			return kind + ":{id}"
		},
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	hub, _ := newHub(t, m, nil)
	for _, ch := range []string{"doc:1", "doc:2", "room:1", "user:1", "team:1"} {
		if _, err := hub.Publish(context.Background(), ch, 1); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]uint64{}
	for _, s := range gather(t, reg)["live_publish_seconds"].GetMetric() {
		got[s.GetLabel()[0].GetValue()] = s.GetHistogram().GetSampleCount()
	}
	want := map[string]uint64{"doc:{id}": 2, "room:{id}": 1, "other": 2}
	if len(got) != len(want) {
		t.Errorf("live_publish_seconds by channel %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("live_publish_seconds{channel=%q} counts %d, want %d", k, got[k], v)
		}
	}
}

// TestBeforeWatch checks that a Collector registered before its hub
// exists serves its histograms, and nothing it cannot read.
func TestBeforeWatch(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(liveprom.New(nil))
	if _, ok := gather(t, reg)["live_connections"]; ok {
		t.Error("live_connections served without a hub")
	}
}
