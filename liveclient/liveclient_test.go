package liveclient_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/liveclient"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// restartable serves whichever hub is current, so a test can replace the
// server's hub (ending every stream) while clients keep the same URL.
type restartable struct {
	t      *testing.T
	broker *live.MemoryBroker
	hub    atomic.Pointer[live.Hub]
	down   atomic.Bool // while set, connections are refused with 503
	srv    *httptest.Server
}

func newRestartable(t *testing.T, history int) *restartable {
	r := &restartable{t: t, broker: live.NewMemoryBroker(&live.MemoryOptions{HistorySize: history})}
	r.hub.Store(live.NewHub(&live.Options{Broker: r.broker}))
	mux := http.NewServeMux()
	serve := func(h func(*live.Hub) http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if r.down.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			h(r.hub.Load()).ServeHTTP(w, req)
		})
	}
	mux.Handle("/", serve(func(h *live.Hub) http.Handler { return h }))
	mux.Handle("/ws", serve((*live.Hub).WebSocketHandler))
	mux.Handle("/guarded/{channel}", serve(func(h *live.Hub) http.Handler { return h }))
	r.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		r.hub.Load().Close(context.Background())
		r.srv.Close()
		r.broker.Close()
	})
	return r
}

// restart closes the current hub, ending every stream, and serves a new
// one on the same broker, as a redeployed server would.
func (r *restartable) restart() {
	old := r.hub.Load()
	r.hub.Store(live.NewHub(&live.Options{Broker: r.broker}))
	old.Close(context.Background())
}

func (r *restartable) publish(channel string, v any) live.Position {
	pos, err := r.hub.Load().Publish(context.Background(), channel, v)
	if err != nil {
		r.t.Fatal(err)
	}
	return pos
}

// follower runs Follow in the background and hands messages to the test.
type follower struct {
	msgs  chan liveclient.Message
	state chan string
	done  chan error
}

func follow(t *testing.T, url string, channels []string) (*follower, *liveclient.Client) {
	f := &follower{msgs: make(chan liveclient.Message, 100), state: make(chan string, 100), done: make(chan error, 1)}
	c := liveclient.New(url, &liveclient.Options{
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnState: func(s string, _ int) {
			select {
			case f.state <- s:
			default:
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		f.done <- c.Follow(ctx, channels, func(m liveclient.Message) error {
			f.msgs <- m
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
	return f, c
}

func (f *follower) connected(t *testing.T) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-f.state:
			if s == "connected" {
				return
			}
		case <-timeout:
			t.Fatal("not connected within 10 s")
		}
	}
}

func (f *follower) next(t *testing.T) liveclient.Message {
	t.Helper()
	select {
	case m := <-f.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
		return liveclient.Message{}
	}
}

func TestFollowResumesAcrossRestarts(t *testing.T) {
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			r := newRestartable(t, 100)
			url := "ws" + strings.TrimPrefix(r.srv.URL, "http") + "/ws"
			if transport == "sse" {
				url = r.srv.URL + "/"
			}
			f, c := follow(t, url, []string{"a", "b"})
			f.connected(t)
			if transport == "sse" {
				f.connected(t) // one stream per channel
			}
			r.publish("a", 1)
			r.publish("b", 2)
			got := map[string]string{}
			for range 2 {
				m := f.next(t)
				got[m.Channel] = string(m.Data)
			}
			if diff := cmp.Diff(map[string]string{"a": "1", "b": "2"}, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}

			for round := range 3 {
				r.restart()
				// Published while the client is away: replayed on resume.
				r.publish("a", 10+round)
				if m := f.next(t); m.Channel != "a" || string(m.Data) != strconv.Itoa(10+round) {
					t.Fatalf("round %d: got %+v", round, m)
				}
			}
			if c.Cursor("a") == "" {
				t.Error("no cursor kept")
			}
		})
	}
}

func TestFollowReset(t *testing.T) {
	r := newRestartable(t, 2)
	url := "ws" + strings.TrimPrefix(r.srv.URL, "http") + "/ws"
	f, _ := follow(t, url, []string{"a"})
	f.connected(t)
	r.publish("a", 1)
	f.next(t)
	r.down.Store(true) // the client comes back only after everything is published
	r.restart()
	var last live.Position
	for i := 2; i <= 6; i++ { // more than the history keeps
		last = r.publish("a", i)
	}
	r.down.Store(false)
	m := f.next(t)
	if !m.Reset || m.Cursor != last.String() || m.Reason != "gone" {
		t.Fatalf("got %+v, want a reset at %v", m, last)
	}
	r.publish("a", 7)
	if m := f.next(t); string(m.Data) != "7" {
		t.Errorf("after the reset: %+v", m)
	}
}

func TestDecode(t *testing.T) {
	v, err := liveclient.Decode[map[string]int](liveclient.Message{Data: []byte(`{"users":3}`)})
	if err != nil || v["users"] != 3 {
		t.Errorf("Decode = %v, %v", v, err)
	}
}

// TestDeltaState keeps a typed copy of a live.State in sync by applying
// its versioned deltas.
func TestDeltaState(t *testing.T) {
	r := newRestartable(t, 4)
	ctx := context.Background()
	board, err := r.hub.Load().State(ctx, "board", &live.StateOptions{Initial: map[string]int{}})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(ctx context.Context) (json.RawMessage, uint64, error) {
		data, v := board.Get()
		return data, v, nil
	}
	local := liveclient.NewDeltaState[map[string]int](fetch)
	if err := local.Refetch(ctx); err != nil {
		t.Fatal(err)
	}
	f, _ := follow(t, "ws"+strings.TrimPrefix(r.srv.URL, "http")+"/ws", []string{"board"})
	f.connected(t)
	for i := 1; i <= 20; i++ {
		if _, err := board.Apply(ctx, map[string]int{"k" + strconv.Itoa(i%3): i}); err != nil {
			t.Fatal(err)
		}
		if err := local.Handle(ctx, f.next(t)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := local.Get()
	want := map[string]int{"k0": 18, "k1": 19, "k2": 20}
	if diff := cmp.Diff(want, got); diff != "" || err != nil {
		t.Errorf("(-want +got) %v:\n%s", err, diff)
	}
}

func TestShallowState(t *testing.T) {
	r := newRestartable(t, 100)
	ctx := context.Background()
	local := liveclient.NewState[map[string]float64](live.MergeShallow, func(context.Context) (json.RawMessage, uint64, error) {
		return json.RawMessage(`{"users":1,"load":0.5}`), 0, nil
	})
	local.Refetch(ctx)
	f, _ := follow(t, r.srv.URL+"/", []string{"metrics"})
	f.connected(t)
	r.publish("metrics", map[string]float64{"load": 0.9})
	if err := local.Handle(ctx, f.next(t)); err != nil {
		t.Fatal(err)
	}
	got, _ := local.Get()
	if diff := cmp.Diff(map[string]float64{"users": 1, "load": 0.9}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestStateRefetchesOnGap hands a delta state a message that skips a
// version: it refetches instead of applying it.
func TestStateRefetchesOnGap(t *testing.T) {
	fetches := 0
	s := liveclient.NewDeltaState[map[string]int](func(context.Context) (json.RawMessage, uint64, error) {
		fetches++
		return json.RawMessage(`{"a":5}`), 5, nil
	})
	ctx := context.Background()
	s.Refetch(ctx)
	s.Handle(ctx, liveclient.Message{Data: json.RawMessage(`{"version":7,"changes":[{"op":"update","path":"a","value":7}]}`)})
	s.Handle(ctx, liveclient.Message{Data: json.RawMessage(`{"version":6,"changes":[{"op":"update","path":"a","value":6}]}`)})
	s.Handle(ctx, liveclient.Message{Reset: true})
	got, _ := s.Get()
	if fetches != 3 || got["a"] != 5 {
		t.Errorf("%d fetches, value %v; want 3 fetches (start, gap, reset)", fetches, got)
	}
}

// TestFollowRefused checks that Follow gives up, with the hub's answer,
// when the hub refuses the connection for good (here a WebSocket at a
// URL that names a channel), instead of retrying for ever.
func TestFollowRefused(t *testing.T) {
	r := newRestartable(t, 100)
	for _, url := range []string{"ws" + strings.TrimPrefix(r.srv.URL, "http") + "/guarded/a"} {
		c := liveclient.New(url, &liveclient.Options{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Follow(ctx, []string{"a"}, func(liveclient.Message) error { return nil })
		cancel()
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("Follow(%s) = %v; want the 400 refusal", url, err)
		}
	}
}
