package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// newState mounts a state channel the way React's useDeltaSync expects:
// GET/PATCH at /api/{channel}, the stream at /api/live/{channel}.
func newState(t *testing.T, s *testServer, channel string, opts *live.StateOptions) (*live.State, string) {
	t.Helper()
	st, err := s.hub.State(context.Background(), channel, opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/"+channel, st)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return st, srv.URL + "/api/" + channel
}

type stateReply struct {
	Data    any    `json:"data"`
	Version uint64 `json:"version"`
}

// doJSON sends a request with a JSON body, as a client of a State does.
func doJSON(t *testing.T, method, url, body string, header map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range header {
		h[k] = v
	}
	return doRequest(t, method, url, body, h)
}

// doRequest sends a request with the given headers (empty values are
// left out) and decodes the JSON object it answers.
func doRequest(t *testing.T, method, url, body string, header map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return v
}

func TestStateDeltas(t *testing.T) {
	s := newTestServer(t, nil)
	st, url := newState(t, s, "board", &live.StateOptions{Initial: map[string]any{"title": "Board", "cards": map[string]any{}}})

	resp, got := doJSON(t, "GET", url, "", nil)
	want := map[string]any{"data": map[string]any{"title": "Board", "cards": map[string]any{}}, "version": 0.0}
	if diff := cmp.Diff(want, got); diff != "" || resp.Header.Get("ETag") != `"0"` {
		t.Fatalf("GET ETag %q (-want +got):\n%s", resp.Header.Get("ETag"), diff)
	}

	stream := openSSE(t, s.srv.URL+"/api/live/board?version=0", nil)
	resp, got = doJSON(t, "PATCH", url, `{"cards":{"c1":{"text":"hello"}}}`, nil)
	if resp.StatusCode != 200 || got["version"] != 1.0 {
		t.Fatalf("PATCH: %s %v", resp.Status, got)
	}
	ev := stream.nextData(t)
	wantDelta := decode(t, `{"version":1,"changes":[{"op":"add","path":"cards.c1","value":{"text":"hello"}}]}`)
	if diff := cmp.Diff(wantDelta, decode(t, ev.Data)); diff != "" {
		t.Errorf("delta (-want +got):\n%s", diff)
	}

	if _, err := st.Set(context.Background(), map[string]any{"title": "Renamed", "cards": map[string]any{"c1": map[string]any{"text": "hello"}}}); err != nil {
		t.Fatal(err)
	}
	ev = stream.nextData(t)
	wantDelta = decode(t, `{"version":2,"changes":[{"op":"update","path":"title","value":"Renamed"}]}`)
	if diff := cmp.Diff(wantDelta, decode(t, ev.Data)); diff != "" {
		t.Errorf("delta (-want +got):\n%s", diff)
	}

	// No change, no publication.
	v, err := st.Apply(context.Background(), map[string]any{"title": "Renamed"})
	if err != nil || v != 2 {
		t.Errorf("no-op Apply = %d, %v; want 2", v, err)
	}

	// A client resuming after version 1 gets exactly version 2.
	resumed := openSSE(t, s.srv.URL+"/api/live/board?version=1", nil)
	if ev := resumed.nextData(t); decode(t, ev.Data).(map[string]any)["version"] != 2.0 {
		t.Errorf("resumed with %s", ev.Data)
	}
}

func TestStateResetWhenInexpressible(t *testing.T) {
	s := newTestServer(t, nil)
	st, _ := newState(t, s, "doc", nil)
	stream := openSSE(t, s.srv.URL+"/live/doc", nil)
	if _, err := st.Set(context.Background(), []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	got := decode(t, stream.nextData(t).Data)
	if diff := cmp.Diff(decode(t, `{"version":0,"reset":true,"data":[1,2]}`), got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	data, v := st.Get()
	if string(data) != "[1,2]" || v != 1 {
		t.Errorf("Get = %s, %d", data, v)
	}
}

func TestStateConditionalWrites(t *testing.T) {
	s := newTestServer(t, nil)
	_, url := newState(t, s, "form", nil)
	doJSON(t, "PATCH", url, `{"a":1}`, nil)

	resp, body := doJSON(t, "PATCH", url, `{"a":2}`, map[string]string{"If-Match": `"0"`})
	if resp.StatusCode != http.StatusPreconditionFailed || body["error"] != "conflict" || body["version"] != 1.0 {
		t.Errorf("stale If-Match: %s %v", resp.Status, body)
	}
	resp, body = doJSON(t, "PUT", url, `{"a":3}`, map[string]string{"If-Match": `"1"`})
	if resp.StatusCode != 200 || body["version"] != 2.0 {
		t.Errorf("current If-Match: %s %v", resp.Status, body)
	}
	for _, tt := range []struct {
		name, method, body string
		header             map[string]string
		status             int
		code               string
	}{
		{"bad json", "PATCH", `{`, nil, 400, "bad_json"},
		{"bad version", "PATCH", `{}`, map[string]string{"If-Match": "yesterday"}, 400, "bad_version"},
		{"method", "DELETE", ``, nil, 405, "method_not_allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := doJSON(t, tt.method, url, tt.body, tt.header)
			if resp.StatusCode != tt.status || body["error"] != tt.code {
				t.Errorf("got %s %v", resp.Status, body)
			}
		})
	}
}

// TestStateConcurrentWriters increments a counter from many goroutines
// with conditional writes: no increment may be lost and a client folding
// the deltas must end with the same value.
func TestStateConcurrentWriters(t *testing.T) {
	s := newTestServer(t, nil)
	st, _ := newState(t, s, "counter", &live.StateOptions{Initial: map[string]int{"n": 0}})
	c := dialWS(t, s.wsURL(), nil)
	c.subscribe(t, "counter")

	const writers, each = 8, 25
	ctx := context.Background()
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					data, v := st.Get()
					var cur struct{ N int }
					json.Unmarshal(data, &cur)
					_, err := st.ApplyIf(ctx, v, map[string]int{"n": cur.N + 1})
					if err == nil {
						break
					}
					if !errors.Is(err, live.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	data, v := st.Get()
	if string(data) != `{"n":`+strconv.Itoa(writers*each)+`}` || v != writers*each {
		t.Fatalf("Get = %s at %d", data, v)
	}

	// Fold what the client received.
	value := json.RawMessage(`{"n":0}`)
	for i := uint64(1); i <= v; i++ {
		f := c.expect(t, "data")
		var d live.Delta
		if err := json.Unmarshal(f.Data, &d); err != nil || d.Version != i {
			t.Fatalf("delta %s: %v", f.Data, err)
		}
		next, err := live.ApplyDelta(value, i-1, d)
		if err != nil {
			t.Fatal(err)
		}
		value = next
	}
	if diff := cmp.Diff(decode(t, string(data)), decode(t, string(value))); diff != "" {
		t.Errorf("client fold (-want +got):\n%s", diff)
	}
}

// TestStateIfAcrossHubs runs conditional writers against several hubs on
// one broker, each write on another hub than the read before it: the
// broker decides the conditions, so no increment is lost and each write
// that succeeds is the version after the one it was conditional on. A
// write that loses answers the version of the one that won.
func TestStateIfAcrossHubs(t *testing.T) {
	for _, hubs := range []int{2, 3} {
		t.Run(strconv.Itoa(hubs)+"Hubs", func(t *testing.T) {
			b := newMemoryBroker(t, 100)
			states := make([]*live.State, hubs)
			clients := make([]*wsClient, hubs)
			for i := range states {
				s := newTestServer(t, &live.Options{Broker: b})
				states[i], _ = newState(t, s, "counter", &live.StateOptions{Initial: map[string]int{"n": 0}})
				clients[i] = dialWS(t, s.wsURL(), nil)
				clients[i].subscribe(t, "counter")
			}
			const writers, each = 50, 2
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					turn := w
					for range each {
						for {
							data, v := states[turn%hubs].Get()
							turn++
							var cur struct{ N int }
							json.Unmarshal(data, &cur)
							got, err := states[turn%hubs].ApplyIf(ctx, v, map[string]int{"n": cur.N + 1})
							if errors.Is(err, live.ErrConflict) {
								if got < v {
									errs <- fmt.Errorf("writer %d: conflict at version %d names version %d", w, v, got)
									return
								}
								continue
							}
							if err != nil || got != v+1 {
								errs <- fmt.Errorf("writer %d: ApplyIf(%d) = %d, %v; want %d", w, v, got, err, v+1)
								return
							}
							break
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for i, st := range states {
				// The hub has applied the last write once its client has it.
				for {
					f := clients[i].expect(t, "data")
					if pos, err := live.ParsePosition(f.Cursor); err != nil || pos.Seq >= writers*each {
						break
					}
				}
				if data, v := st.Get(); string(data) != `{"n":100}` || v != writers*each {
					t.Errorf("hub %d: %s at version %d, want {\"n\":100} at %d", i, data, v, writers*each)
				}
			}
		})
	}
}

// TestStateIfWithoutConditionalBroker checks the per-hub check a broker
// without live.Conditional keeps: on one hub, no increment is lost.
func TestStateIfWithoutConditionalBroker(t *testing.T) {
	b := struct{ live.Broker }{newMemoryBroker(t, 100)} // hides PublishIf
	if _, ok := live.Broker(b).(live.Conditional); ok {
		t.Fatal("the wrapped broker is still Conditional")
	}
	st, _ := newState(t, newTestServer(t, &live.Options{Broker: b}), "counter", &live.StateOptions{Initial: map[string]int{"n": 0}})
	const writers, each = 8, 25
	ctx := context.Background()
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					data, v := st.Get()
					var cur struct{ N int }
					json.Unmarshal(data, &cur)
					got, err := st.ApplyIf(ctx, v, map[string]int{"n": cur.N + 1})
					if errors.Is(err, live.ErrConflict) {
						continue
					}
					if err != nil || got != v+1 {
						t.Errorf("ApplyIf(%d) = %d, %v; want %d", v, got, err, v+1)
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	if data, v := st.Get(); string(data) != `{"n":200}` || v != writers*each {
		t.Errorf("%s at version %d, want {\"n\":200} at %d", data, v, writers*each)
	}
}

// TestStateWriteBehindPromised writes to a State on a Conditional broker
// while a publication a Hook promised waits in the hub for the broker on
// the same channel: the write is refused as unavailable (503 over HTTP),
// not queued behind it, whose publication would move the head the write
// is conditional on, and it is taken once the broker has taken what
// waited.
func TestStateWriteBehindPromised(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	broker := newHookBroker(t, func(_ context.Context, channel string) error {
		if channel == "counter" && down.Load() {
			return errors.New("broker down")
		}
		return nil
	})
	s := newHookServer(t, &live.Options{Broker: broker})
	ctx := context.Background()
	st, err := s.hub.State(ctx, "counter", &live.StateOptions{Initial: map[string]int{"n": 0}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	s.handle("POST /counter", s.hub.Hook(live.HookOptions{Channel: toChannel("counter")}), echo)

	if rep := s.do(t, "POST", "/counter", hdr("X-Status", "201"), `{"id":"t1"}`); rep.status != http.StatusCreated {
		t.Fatalf("hooked request: %d %s", rep.status, rep.body)
	}
	if st := s.hub.Stats(); st.Pending != 1 {
		t.Fatalf("Stats().Pending = %d, want the hook's event waiting", st.Pending)
	}
	if v, err := st.Apply(ctx, map[string]int{"n": 1}); err == nil || errors.Is(err, live.ErrConflict) {
		t.Errorf("Apply behind the waiting event = %d, %v; want a refusal other than a conflict", v, err)
	}
	resp, got := doJSON(t, "PATCH", srv.URL, `{"n":1}`, map[string]string{"If-Match": etagOf(0)})
	if resp.StatusCode != http.StatusServiceUnavailable || got["error"] != "unavailable" {
		t.Errorf("PATCH with If-Match behind the waiting event: %s %v; want 503 unavailable", resp.Status, got)
	}

	down.Store(false)
	// A Publish waits behind the event until the broker has taken it.
	if _, err := s.hub.Publish(ctx, "counter", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	v, err := st.Apply(ctx, map[string]int{"n": 1})
	if err != nil || v != 3 {
		t.Fatalf("Apply once the event was taken = %d, %v; want version 3", v, err)
	}
	if data, _ := st.Get(); string(data) != `{"n":1}` {
		t.Errorf("value %s, want {\"n\":1}", data)
	}
}

// TestStateSetAcrossHubs writes whole values on one hub while another
// merges into the value: each Set's delta is taken only against the value
// it read, so the value at a Set's version is exactly what it set, even
// when the other hub's write had not reached the hub that made it.
func TestStateSetAcrossHubs(t *testing.T) {
	b := newMemoryBroker(t, 1000)
	a, other := newTestServer(t, &live.Options{Broker: b}), newTestServer(t, &live.Options{Broker: b})
	stA, _ := newState(t, a, "doc", nil)
	stB, _ := newState(t, other, "doc", nil)
	c := dialWS(t, a.wsURL(), nil)
	c.subscribe(t, "doc")

	const rounds = 50
	ctx := context.Background()
	set := make(map[uint64]string) // what each Set made, by version
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range rounds {
			v := map[string]int{"x": i}
			version, err := stA.Set(ctx, v)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := json.Marshal(v)
			set[version] = string(b)
		}
	}()
	go func() {
		defer wg.Done()
		for i := range rounds {
			if _, err := stB.Apply(ctx, map[string]int{"y": i}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()

	// Fold what the client received, checking the value at each Set's
	// version.
	value := json.RawMessage(`{}`)
	for v := uint64(1); v <= 2*rounds; v++ {
		f := c.expect(t, "data")
		var d live.Delta
		if err := json.Unmarshal(f.Data, &d); err != nil || d.Version != v {
			t.Fatalf("delta %s: %v", f.Data, err)
		}
		next, err := live.ApplyDelta(value, v-1, d)
		if err != nil {
			t.Fatal(err)
		}
		value = next
		if want, ok := set[v]; ok {
			if diff := cmp.Diff(decode(t, want), decode(t, string(value))); diff != "" {
				t.Errorf("value at version %d, made by Set (-want +got):\n%s", v, diff)
			}
		}
	}
	if len(set) != rounds {
		t.Errorf("%d Sets returned distinct versions, want %d", len(set), rounds)
	}
}

func TestStateRefusesClientPublish(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: allowAll})
	newState(t, s, "board", nil)
	resp, err := http.Post(s.srv.URL+"/live/board", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	checkErrorResponse(t, resp, http.StatusForbidden, "state_channel")
	c := dialWS(t, s.wsURL(), nil)
	c.send(t, map[string]any{"type": "publish", "channel": "board", "data": 1})
	if f := c.expect(t, "error"); f.Code != "state_channel" {
		t.Errorf("got %+v", f)
	}
}

// TestStateSharedBroker runs two hubs on one broker, as two processes on a
// shared broker would: the second rebuilds the value from history, and
// each sees the other's writes.
func TestStateSharedBroker(t *testing.T) {
	b := newMemoryBroker(t, 100)
	a := newTestServer(t, &live.Options{Broker: b})
	stA, _ := newState(t, a, "board", nil)
	ctx := context.Background()
	if _, err := stA.Apply(ctx, map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}

	bHub := newTestServer(t, &live.Options{Broker: b})
	stB, _ := newState(t, bHub, "board", nil)
	if data, v := stB.Get(); string(data) != `{"x":1}` || v != 1 {
		t.Fatalf("rebuilt %s at %d", data, v)
	}
	if _, err := stB.Apply(ctx, map[string]any{"y": 2}); err != nil {
		t.Fatal(err)
	}
	dataA, vA := stA.Get()
	dataB, vB := stB.Get()
	if string(dataA) != string(dataB) || vA != 2 || vB != 2 {
		t.Errorf("A %s@%d, B %s@%d", dataA, vA, dataB, vB)
	}
}

// TestStateConflation stalls a client on a state channel while many writes
// happen. Instead of being disconnected it receives the latest value in one
// frame, and folding what it received ends at the final value: conflation
// loses no final value.
func TestStateConflation(t *testing.T) {
	s := newTestServer(t, &live.Options{QueueMessages: 8})
	st, _ := newState(t, s, "counts", nil)
	rec := s.hub.AttachRecorder(t, "counts")

	ctx := context.Background()
	const writes = 500
	for i := 1; i <= writes; i++ {
		key := "k" + strconv.Itoa(i%7)
		if _, err := st.Apply(ctx, map[string]any{key: i}); err != nil {
			t.Fatal(err)
		}
	}
	final, version := st.Get()
	if got := s.hub.Stats().SlowClients; got == 0 {
		t.Fatal("the stalled client never overflowed")
	}
	rec.Release()

	value := json.RawMessage(`{}`)
	var at uint64
	conflated, seen := 0, 0
	for at < version {
		frames := rec.Frames(t, seen+1)
		for _, b := range frames[seen:] {
			var f wsFrame
			json.Unmarshal(b, &f)
			if f.Type != "data" {
				continue
			}
			pos, _ := live.ParsePosition(f.Cursor)
			var msg struct {
				Version uint64
				Reset   bool
				Data    json.RawMessage
				Changes []live.Change
			}
			json.Unmarshal(f.Data, &msg)
			if msg.Reset {
				value, at = msg.Data, pos.Seq
				conflated++
				continue
			}
			if msg.Version != at+1 {
				t.Fatalf("delta %d after %d without a conflated value between", msg.Version, at)
			}
			var err error
			if value, err = live.ApplyDelta(value, at, live.Delta{Version: msg.Version, Changes: msg.Changes}); err != nil {
				t.Fatal(err)
			}
			at = msg.Version
		}
		seen = len(frames)
	}
	if diff := cmp.Diff(decode(t, string(final)), decode(t, string(value))); diff != "" {
		t.Errorf("client's value (-want +got):\n%s", diff)
	}
	if conflated == 0 {
		t.Error("no conflated frame")
	}
	if st := s.hub.Stats(); st.Connections != 1 {
		t.Errorf("Connections = %d: the stalled client was dropped", st.Connections)
	}
	t.Logf("%d conflated frames, %d frames for %d writes", conflated, seen, writes)
}

// TestStateResetInBand checks that a state channel's reset reaches
// useDeltaSync's EventSource.onmessage: an unnamed event whose version 0 is never
// the successor of the client's, so it refetches.
func TestStateResetInBand(t *testing.T) {
	s := newTestServer(t, &live.Options{Broker: newMemoryBroker(t, 2)})
	st, _ := newState(t, s, "board", nil)
	for i := range 5 {
		if _, err := st.Apply(context.Background(), map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	stream := openSSE(t, s.srv.URL+"/api/live/board?version=1", nil)
	ev := stream.nextData(t)
	if ev.Event != "" || ev.ID != "5."+strings.Split(ev.ID, ".")[1] {
		t.Fatalf("got %+v, want an unnamed event at version 5", ev)
	}
	if diff := cmp.Diff(decode(t, `{"version":0,"reset":true,"reason":"gone"}`), decode(t, ev.Data)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestStateHistoryTooShort checks a State that comes to a channel whose
// history no longer reaches its first publication: on a broker that keeps
// snapshots it starts from the latest and the history after it; on one
// that does not it refuses to start and leaves the channel as it was.
func TestStateHistoryTooShort(t *testing.T) {
	b := newMemoryBroker(t, 2)
	a := newTestServer(t, &live.Options{Broker: b})
	stA, _ := newState(t, a, "board", nil)
	for i := range 5 {
		stA.Apply(context.Background(), map[string]int{"n": i})
	}
	other := newTestServer(t, &live.Options{Broker: b, Authorize: allowAll})
	stB, err := other.hub.State(context.Background(), "board", nil)
	if err != nil {
		t.Fatal(err)
	}
	if data, v := stB.Get(); string(data) != `{"n":4}` || v != 5 {
		t.Errorf("rebuilt from the snapshot: %s at %d, want {\"n\":4} at 5", data, v)
	}

	plain := withoutSnapshots{b}
	c := newTestServer(t, &live.Options{Broker: plain})
	stC, _ := newState(t, c, "board2", nil)
	for i := range 5 {
		stC.Apply(context.Background(), map[string]int{"n": i})
	}
	other = newTestServer(t, &live.Options{Broker: plain, Authorize: allowAll})
	if _, err := other.hub.State(context.Background(), "board2", nil); !errors.Is(err, live.ErrGone) {
		t.Fatalf("State = %v, want ErrGone", err)
	}
	// Still an ordinary channel there.
	resp, err := http.Post(other.srv.URL+"/live/board2", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("publish after a failed State: %s", resp.Status)
	}
}

// withoutSnapshots is a broker with history but no snapshots.
type withoutSnapshots struct {
	b interface {
		live.Broker
		live.History
	}
}

func etagOf(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

func (w withoutSnapshots) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	return w.b.Publish(ctx, channel, data)
}

func (w withoutSnapshots) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	return w.b.Subscribe(ctx, channel, ready, deliver)
}

func (w withoutSnapshots) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	return w.b.Since(ctx, channel, after)
}

// TestStateNullTransitions writes values a delta cannot tell apart from
// what they replace: each write the server accepts changes the value it
// serves, and a client folding the stream ends with the same value.
func TestStateNullTransitions(t *testing.T) {
	s := newTestServer(t, nil)
	st, url := newState(t, s, "doc", nil)
	stream := openSSE(t, s.srv.URL+"/live/doc?version=0", nil)
	steps := []string{`null`, `{}`, `[]`, `null`, `{}`, `{"a":null}`, `{}`, `[]`, `[]`, `null`, `null`}
	want := uint64(0)
	last := `{}`
	for _, v := range steps {
		got, err := st.Set(context.Background(), json.RawMessage(v))
		if err != nil {
			t.Fatal(err)
		}
		if v != last {
			want++
			ev := decode(t, stream.nextData(t).Data).(map[string]any)
			folded, _ := json.Marshal(ev["data"])
			if ev["reset"] == true && string(folded) != v {
				t.Errorf("after %s over %s: the stream carried %s", v, last, ev["data"])
			}
		}
		last = v
		if got != want {
			t.Errorf("Set(%s) = version %d, want %d", v, got, want)
		}
		data, version := st.Get()
		if string(data) != v || version != want {
			t.Errorf("after Set(%s): Get = %s at %d, want %s at %d", v, data, version, v, want)
		}
		_, body := doJSON(t, "GET", url, "", nil)
		served, _ := json.Marshal(body["data"])
		if string(served) != v {
			t.Errorf("after Set(%s): GET serves %s", v, served)
		}
	}
}

// TestStateLongCut cuts one hub off its broker while another writes more
// than history holds. Once the link is back, the first hub finds the hole
// it cannot fill from history: it answers 503 rather than a value it
// knows may be wrong, rebuilds from the broker's snapshot, and then serves,
// streams and accepts writes at the same value and version as the other.
func TestStateLongCut(t *testing.T) {
	mem := newMemoryBroker(t, 16)
	open := make(chan struct{})
	close(open)
	cut := &faultBroker{MemoryBroker: mem, broken: make(chan struct{}), gate: open}
	a := newTestServer(t, &live.Options{Broker: cut})
	b := newTestServer(t, &live.Options{Broker: mem})
	stA, urlA := newState(t, a, "counter", &live.StateOptions{Initial: map[string]int{"n": 0}})
	stB, urlB := newState(t, b, "counter", &live.StateOptions{Initial: map[string]int{"n": 0}})
	stream := openSSE(t, a.srv.URL+"/live/counter?version=0", nil)

	end := cut.outage()
	for i := 1; i <= 40; i++ {
		if _, err := stB.Apply(context.Background(), map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	end()
	if _, err := stB.Apply(context.Background(), map[string]int{"n": 41}); err != nil {
		t.Fatal(err)
	}

	// The client is told to refetch, then gets the rebuilt value whole.
	var last map[string]any
	for {
		ev := stream.nextData(t)
		last = decode(t, ev.Data).(map[string]any)
		if last["reset"] == true && last["data"] != nil {
			break
		}
	}
	if diff := cmp.Diff(map[string]any{"n": 41.0}, last["data"]); diff != "" {
		t.Errorf("rebuilt value pushed to the client (-want +got):\n%s", diff)
	}
	dataB, vB := stB.Get()
	dataA, vA := stA.Get()
	if string(dataA) != string(dataB) || vA != vB {
		t.Errorf("after the rebuild: a has %s at %d, b has %s at %d", dataA, vA, dataB, vB)
	}
	for _, url := range []string{urlA, urlB} {
		resp, got := doJSON(t, "GET", url, "", nil)
		if resp.StatusCode != 200 || got["version"] != float64(vB) {
			t.Errorf("GET %s: %s %v, want version %d", url, resp.Status, got, vB)
		}
	}
	// Writes on a hold the value they are conditional on.
	resp, got := doJSON(t, "PATCH", urlA, `{"n":42}`, map[string]string{"If-Match": etagOf(vA)})
	if resp.StatusCode != 200 || got["version"] != float64(vA+1) {
		t.Errorf("conditional PATCH on a after the rebuild: %s %v", resp.Status, got)
	}
}

// TestStateUnknownValue checks a State whose stream lost more than history
// holds, on a broker without snapshots: it answers reads and writes with
// 503 and Retry-After rather than serve a value it knows may be wrong, until
// a publication of the whole value makes it known again.
func TestStateUnknownValue(t *testing.T) {
	mem := newMemoryBroker(t, 4)
	open := make(chan struct{})
	close(open)
	cut := &faultBroker{MemoryBroker: mem, broken: make(chan struct{}), gate: open}
	a := newTestServer(t, &live.Options{Broker: withoutSnapshots{cut}})
	b := newTestServer(t, &live.Options{Broker: withoutSnapshots{mem}})
	_, urlA := newState(t, a, "doc", nil)
	stB, _ := newState(t, b, "doc", nil)
	stream := openSSE(t, a.srv.URL+"/live/doc?version=0", nil)

	end := cut.outage()
	for i := 1; i <= 11; i++ {
		if i == 11 {
			end()
		}
		if _, err := stB.Apply(context.Background(), map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		ev := decode(t, stream.nextData(t).Data).(map[string]any)
		if ev["reset"] == true {
			break
		}
	}
	for _, method := range []string{"GET", "PATCH"} {
		resp, got := doJSON(t, method, urlA, `{"n":0}`, nil)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || got["error"] != "state_unavailable" {
			t.Errorf("%s while the value is unknown: %s %v", method, resp.Status, got)
		}
	}
	// A whole value (one a delta cannot express) makes it known again.
	v, err := stB.Set(context.Background(), []int{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev := decode(t, stream.nextData(t).Data).(map[string]any)
		if ev["reset"] == true && ev["data"] != nil {
			break
		}
	}
	resp, got := doJSON(t, "GET", urlA, "", nil)
	if resp.StatusCode != 200 || got["version"] != float64(v) {
		t.Errorf("GET after a whole value: %s %v, want version %d", resp.Status, got, v)
	}
}
