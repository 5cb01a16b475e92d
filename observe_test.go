package live_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/metricdef"
	"github.com/go-live/live/observe"
)

// TestMetricDefsCoverStats checks that every field of Stats is served as
// a metric, or said not to be and why, so that a counter added to Stats
// cannot be forgotten by the metrics.
func TestMetricDefsCoverStats(t *testing.T) {
	read := make(map[string]bool)
	for _, m := range metricdef.Stats {
		if read[m.Field] {
			t.Errorf("Stats.%s is read by two metrics", m.Field)
		}
		read[m.Field] = true
	}
	typ := reflect.TypeFor[live.Stats]()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		_, skipped := metricdef.Unexported[name]
		if read[name] == skipped {
			t.Errorf("Stats.%s: read by a metric %v, listed as not exported %v; want exactly one", name, read[name], skipped)
		}
		delete(read, name)
	}
	for f := range read {
		t.Errorf("a metric reads Stats.%s, which does not exist", f)
	}
	// Read panics on a field of the wrong type.
	metricdef.Read(live.Stats{}, func(*metricdef.Metric, string, float64) {})
}

// recorder records what Options.Observe's hooks are told.
type recorder struct {
	mu        sync.Mutex
	published []string
	wrote     map[string]int // frames by transport
	latency   time.Duration  // the largest publish-to-write latency
	waited    int
	polls     int
	pongs     int
	changed   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{wrote: make(map[string]int), changed: make(chan struct{}, 1)}
}

func (r *recorder) note(f func()) {
	r.mu.Lock()
	f()
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) hooks() *observe.Hooks {
	return &observe.Hooks{
		Published: func(channel string, took time.Duration, err error) {
			r.note(func() {
				if err == nil && took > 0 {
					r.published = append(r.published, channel)
				}
			})
		},
		Wrote: func(transport string, frames int, latency time.Duration) {
			r.note(func() { r.wrote[transport] += frames; r.latency = max(r.latency, latency) })
		},
		Waited:   func(time.Duration) { r.note(func() { r.waited++ }) },
		PollHeld: func(d time.Duration) { r.note(func() { r.polls++ }) },
		Pong:     func(rtt time.Duration) { r.note(func() { r.pongs++ }) },
	}
}

// wait waits until cond holds of what r recorded.
func (r *recorder) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("%s: not within %v", what, waitFor)
		}
	}
}

// TestObserveHooks checks that the hooks of Options.Observe are called
// as publications are made and written, on each transport, and that
// Stats counts connections and subscriptions by transport.
func TestObserveHooks(t *testing.T) {
	rec := newRecorder()
	s := newTestServer(t, &live.Options{Observe: rec.hooks(), Heartbeat: 20 * time.Millisecond})
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "c")
	openSSE(t, s.srv.URL+"/api/live/c", nil)
	mux := openSSE(t, s.srv.URL+"/api/live?channels=c,d", nil)
	_ = mux
	waitStats(t, s.hub, "subscriptions by transport", func(st live.Stats) bool {
		return st.SubscriptionsBy["ws"] == 1 && st.SubscriptionsBy["sse"] == 1 && st.SubscriptionsBy["sse-mux"] == 2
	})
	if st := s.hub.Stats(); st.ConnectionsBy["ws"] != 1 || st.ConnectionsBy["sse"] != 1 || st.ConnectionsBy["sse-mux"] != 1 || st.ConnectionsBy["poll"] != 0 || st.Channels != 2 {
		t.Errorf("connections by transport %v, channels %d; want one of each but poll, 2 channels", st.ConnectionsBy, st.Channels)
	}
	s.publish(t, "c", 1)
	ws.expect(t, "data")
	rec.wait(t, "writes of the publication on every transport, and pongs", func() bool {
		return len(rec.published) == 1 && rec.wrote["ws"] >= 2 && rec.wrote["sse"] >= 2 && rec.wrote["sse-mux"] >= 3 &&
			rec.latency > 0 && rec.waited > 0 && rec.pongs > 0
	})
	if rec.published[0] != "c" {
		t.Errorf("Published got channel %q, want c", rec.published[0])
	}
	if rec.latency > waitFor {
		t.Errorf("publish-to-write latency %v: not measured from the publication", rec.latency)
	}

	// A long-poll is held until it has news (here its acknowledgement),
	// or its hold passes.
	resp, err := http.Get(s.srv.URL + "/api/live?channels=c&poll=0.01")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rec.wait(t, "the poll's hold and answer", func() bool { return rec.polls == 1 && rec.wrote["poll"] >= 1 })
	waitStats(t, s.hub, "the poll gone", func(st live.Stats) bool { return st.ConnectionsBy["poll"] == 0 })
}

// TestTraceCarried checks that what Observe.Inject returns where a
// publication is made reaches Observe.FanOut on every hub sharing the
// broker, beside the data, which subscribers get unchanged.
func TestTraceCarried(t *testing.T) {
	b := newMemoryBroker(t, 16)
	type fanned struct{ channel, trace string }
	got := make(chan fanned, 16)
	var doneCalls sync.WaitGroup
	ended := make(chan error, 16)
	hooks := &observe.Hooks{
		Inject: func(ctx context.Context, channel string) (string, func(error)) {
			v, _ := ctx.Value(traceKey{}).(string)
			return v, func(err error) { ended <- err }
		},
		FanOut: func(channel, trace string) func() {
			doneCalls.Add(1)
			got <- fanned{channel, trace}
			return doneCalls.Done
		},
	}
	a := newTestServer(t, &live.Options{Broker: b, Observe: hooks})
	other := newTestServer(t, &live.Options{Broker: b, Observe: hooks})
	wsA := dialWS(t, a.wsURL(), nil)
	wsA.subscribe(t, "doc:1")
	wsB := dialWS(t, other.wsURL(), nil)
	wsB.subscribe(t, "doc:1")

	ctx := context.WithValue(context.Background(), traceKey{}, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if _, err := a.hub.Publish(ctx, "doc:1", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; err != nil {
		t.Errorf("Inject's done got %v for a publication the broker took", err)
	}
	for _, w := range []*wsClient{wsA, wsB} {
		if f := w.expect(t, "data"); string(f.Data) != `{"n":1}` {
			t.Errorf("data %s, want {\"n\":1}", f.Data)
		}
	}
	for range 2 {
		select {
		case f := <-got:
			if f.channel != "doc:1" || f.trace != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
				t.Errorf("FanOut got %+v", f)
			}
		case <-time.After(waitFor):
			t.Fatal("FanOut not called on both hubs")
		}
	}
	doneCalls.Wait()

	// Without a trace, nothing is carried.
	if _, err := other.hub.Publish(context.Background(), "doc:1", 2); err != nil {
		t.Fatal(err)
	}
	<-ended
	for range 2 {
		select {
		case f := <-got:
			if f.trace != "" {
				t.Errorf("FanOut got trace %q for a publication without one", f.trace)
			}
		case <-time.After(waitFor):
			t.Fatal("FanOut not called on both hubs")
		}
	}

	// A Hook's event carries the trace of the request that made it.
	hooked := a.hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "doc:1" }})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			live.SetEvent(r, "doc:1", map[string]int{"n": 3})
			w.WriteHeader(http.StatusNoContent)
		}))
	req := httptest.NewRequestWithContext(ctx, "POST", "/doc/1", nil)
	hooked.ServeHTTP(httptest.NewRecorder(), req)
	if err := <-ended; err != nil {
		t.Errorf("Inject's done got %v for a Hook event the broker took", err)
	}
	for range 2 {
		select {
		case f := <-got:
			if f.trace != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
				t.Errorf("FanOut got trace %q for a Hook event", f.trace)
			}
		case <-time.After(waitFor):
			t.Fatal("FanOut not called on both hubs for a Hook event")
		}
	}

	// A publication that fails ends with its error.
	if _, err := a.hub.Publish(ctx, "doc:1", strings.Repeat("x", 1<<20)); !errors.Is(err, live.ErrTooLarge) {
		t.Fatalf("Publish of 1 MiB: %v, want ErrTooLarge", err)
	}
	if err := <-ended; !errors.Is(err, live.ErrTooLarge) {
		t.Errorf("Inject's done got %v, want ErrTooLarge", err)
	}
}

type traceKey struct{}

// BenchmarkFanoutObserved is BenchmarkFanout with Options.Observe's hooks
// set, each doing nothing: what the hub's calls cost (module
// github.com/go-live/live/prometheus benchmarks its collector's).
func BenchmarkFanoutObserved(b *testing.B) {
	noop := &observe.Hooks{
		Published: func(string, time.Duration, error) {},
		Wrote:     func(string, int, time.Duration) {},
		Waited:    func(time.Duration) {},
		PollHeld:  func(time.Duration) {},
		Pong:      func(time.Duration) {},
	}
	b.Run("hooks=none", func(b *testing.B) { benchmarkFanout(b, nil, 1, 1000) })
	b.Run("hooks=noop", func(b *testing.B) { benchmarkFanout(b, noop, 1, 1000) })
}

// TestStatsCounts checks the counts Stats gives for the metrics beyond
// the hooks: queued bytes, drops and slow ends, control messages and
// presence members.
func TestStatsCounts(t *testing.T) {
	s := newTestServer(t, &live.Options{
		QueueMessages: 8,
		Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: r.URL.Query().Get("u")}, nil
		},
		Presence: func(channel string) live.PresenceMode {
			if channel == "room" {
				return live.PresenceMembers
			}
			return live.PresenceOff
		},
	})
	// A client held back in process: its queue fills, then overflows,
	// and SlowDisconnect ends it.
	rec := s.hub.AttachRecorder(t, "c")
	s.publish(t, "c", bigValue{N: 1})
	waitStats(t, s.hub, "bytes queued for the held-back client", func(st live.Stats) bool { return st.QueuedBytes > 0 })
	for i := 2; s.hub.Stats().SlowClients == 0; i++ {
		if i > 100 {
			t.Fatal("the held-back client never overflowed")
		}
		s.publish(t, "c", bigValue{N: i})
	}
	rec.Release()
	waitStats(t, s.hub, "the slow client ended", func(st live.Stats) bool { return st.SlowEnded == 1 })
	if st := s.hub.Stats(); st.Dropped < 8 || st.QueuedBytes != 0 {
		t.Errorf("Dropped %d, QueuedBytes %d; want at least the queue's 8 frames dropped, nothing left queued", st.Dropped, st.QueuedBytes)
	}

	openSSE(t, s.srv.URL+"/api/live/room?u=ann", nil)
	openSSE(t, s.srv.URL+"/api/live/room?u=ann", nil)
	openSSE(t, s.srv.URL+"/api/live/room?u=bob", nil)
	waitStats(t, s.hub, "two members", func(st live.Stats) bool { return st.PresenceMembers == 2 })

	ctx := context.Background()
	if err := s.hub.Reauthorize(ctx, "room", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.hub.Disconnect(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if st := s.hub.Stats(); st.Controls["disconnect"] != 1 || st.Controls["reauthorize"] != 1 {
		t.Errorf("Controls %v, want one disconnect and one reauthorize", st.Controls)
	}
	waitStats(t, s.hub, "bob gone", func(st live.Stats) bool { return st.ConnectionsBy["sse"] == 2 })
}
