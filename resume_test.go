package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// publishN publishes the integers from..to on channel and returns the
// position of the last.
func publishN(t testing.TB, s *testServer, channel string, from, to int) live.Position {
	t.Helper()
	var pos live.Position
	for i := from; i <= to; i++ {
		pos = s.publish(t, channel, i)
	}
	return pos
}

// readSSEData reads n data events and returns their data.
func readSSEData(t *testing.T, stream *sseStream, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		ev := stream.nextData(t)
		if ev.Event != "" {
			t.Fatalf("unexpected %q event: %+v", ev.Event, ev)
		}
		got = append(got, ev.Data)
	}
	return got
}

func seq(from, to int) []string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, strconv.Itoa(i))
	}
	return s
}

func TestSSEResume(t *testing.T) {
	tests := []struct {
		name string
		open func(s *testServer, cursor live.Position) *sseStream
	}{
		{"Last-Event-ID", func(s *testServer, cur live.Position) *sseStream {
			return openSSE(t, s.srv.URL+"/live/c", http.Header{"Last-Event-Id": {cur.String()}})
		}},
		{"cursor parameter", func(s *testServer, cur live.Position) *sseStream {
			return openSSE(t, s.srv.URL+"/live/c?cursor="+url.QueryEscape(cur.String()), nil)
		}},
		{"version parameter", func(s *testServer, cur live.Position) *sseStream {
			return openSSE(t, s.srv.URL+"/api/live/c?version="+strconv.FormatUint(cur.Seq, 10), nil)
		}},
		{"header wins over parameter", func(s *testServer, cur live.Position) *sseStream {
			return openSSE(t, s.srv.URL+"/live/c?cursor=1.nonsense", http.Header{"Last-Event-Id": {cur.String()}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			first := openSSE(t, s.srv.URL+"/live/c", nil)
			publishN(t, s, "c", 1, 3)
			if diff := cmp.Diff(seq(1, 3), readSSEData(t, first, 3)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
			cursor := live.Position{Epoch: mustCursor(t, s, "c").Epoch, Seq: 3}
			publishN(t, s, "c", 4, 8) // missed while away

			stream := tt.open(s, cursor)
			publishN(t, s, "c", 9, 10) // live after the replay
			if diff := cmp.Diff(seq(4, 10), readSSEData(t, stream, 7)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// mustCursor returns the channel's current position as a fresh subscriber
// is told it.
func mustCursor(t testing.TB, s *testServer, channel string) live.Position {
	t.Helper()
	stream := openSSE(t, s.srv.URL+"/live/"+channel, nil)
	ev, ok := stream.next(t)
	if !ok || !ev.HasID {
		t.Fatalf("no id event: %+v", ev)
	}
	pos, err := live.ParsePosition(ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestWebSocketResume(t *testing.T) {
	s := newTestServer(t, nil)
	c := dialWS(t, s.wsURL(), nil)
	c.subscribe(t, "c")
	publishN(t, s, "c", 1, 2)
	c.expect(t, "data")
	last := c.expect(t, "data")
	c.c.CloseNow()

	publishN(t, s, "c", 3, 6)
	c2 := dialWS(t, s.wsURL(), nil)
	c2.send(t, map[string]string{"type": "subscribe", "channel": "c", "cursor": last.Cursor})
	if ack := c2.expect(t, "subscribed"); ack.Cursor != last.Cursor {
		t.Errorf("ack cursor %q, want the resume point %q", ack.Cursor, last.Cursor)
	}
	publishN(t, s, "c", 7, 7)
	var got []string
	for range 5 {
		got = append(got, string(c2.expect(t, "data").Data))
	}
	if diff := cmp.Diff(seq(3, 7), got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestResumeResets covers every cursor that cannot be honoured: the
// stream starts with a reset carrying the channel's current cursor, then
// continues live. Nothing is skipped silently and nothing fails.
func TestResumeResets(t *testing.T) {
	s := newTestServer(t, &live.Options{Broker: newMemoryBroker(t, 4)})
	head := publishN(t, s, "c", 1, 10)
	tests := []struct {
		name, cursor, reason string
	}{
		{"out of window", live.Position{Epoch: head.Epoch, Seq: 2}.String(), "gone"},
		{"from zero out of window", live.Position{Epoch: head.Epoch, Seq: 0}.String(), "gone"},
		{"other epoch", live.Position{Epoch: "older", Seq: 9}.String(), "epoch"},
		{"ahead", live.Position{Epoch: head.Epoch, Seq: 11}.String(), "ahead"},
		{"far ahead", live.Position{Epoch: head.Epoch, Seq: 1<<64 - 1}.String(), "ahead"},
	}
	for i, bad := range malformedCursors {
		tests = append(tests, struct{ name, cursor, reason string }{fmt.Sprintf("malformed %d", i), bad, "malformed"})
	}
	for _, tt := range tests {
		t.Run(tt.name+" sse", func(t *testing.T) {
			stream := openSSE(t, s.srv.URL+"/live/c?cursor="+url.QueryEscape(tt.cursor), nil)
			ev := stream.nextData(t)
			var body struct{ Channel, Reason, Cursor string }
			if err := json.Unmarshal([]byte(ev.Data), &body); err != nil || ev.Event != "reset" {
				t.Fatalf("first event %+v, want a reset", ev)
			}
			want := struct{ Channel, Reason, Cursor string }{"c", tt.reason, head.String()}
			if diff := cmp.Diff(want, body); diff != "" || ev.ID != head.String() {
				t.Errorf("reset id %q (-want +got):\n%s", ev.ID, diff)
			}
		})
		t.Run(tt.name+" ws", func(t *testing.T) {
			c := dialWS(t, s.wsURL(), nil)
			c.send(t, map[string]string{"type": "subscribe", "channel": "c", "cursor": tt.cursor})
			c.expect(t, "subscribed")
			got := c.expect(t, "reset")
			want := wsFrame{Type: "reset", Channel: "c", Reason: tt.reason, Cursor: head.String()}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	// After a reset the stream is live.
	stream := openSSE(t, s.srv.URL+"/live/c", http.Header{"Last-Event-Id": {"garbage"}})
	if ev := stream.nextData(t); ev.Event != "reset" {
		t.Fatalf("got %+v, want reset", ev)
	}
	pos := s.publish(t, "c", "after")
	if ev := stream.nextData(t); ev.ID != pos.String() || ev.Data != `"after"` {
		t.Errorf("got %+v after the reset", ev)
	}
}

// malformedCursors are cursors no hub ever issued.
var malformedCursors = []string{
	"", ".", "1", "1.", ".abc", "-1.abc", "+1.abc", "01.abc", "1.ab.c", "1.a b",
	"1.abc\x00", "1.abc\r\nX-Injected: 1", "1.abc\n", "18446744073709551616.abc",
	"99999999999999999999999999.abc", "1e3.abc", "0x10.abc", "1.😀", "1." + strings.Repeat("a", 65),
	strings.Repeat("9", 10<<10), "1.abc" + strings.Repeat("x", 10<<10), "NaN.abc", " 1.abc", "1.abc ",
}

func newMemoryBroker(t testing.TB, history int) *live.MemoryBroker {
	b := live.NewMemoryBroker(&live.MemoryOptions{HistorySize: history})
	t.Cleanup(func() { b.Close() })
	return b
}

// TestResumeRace resumes while a burst is being published, many times,
// and checks the seam between replay and live: every publication after
// the cursor arrives exactly once and in order.
func TestResumeRace(t *testing.T) {
	iterations := 200
	if testing.Short() {
		iterations = 20
	}
	// Every iteration's streams stay open until the test ends, all from
	// one address.
	s := newTestServer(t, &live.Options{Authorize: allowAll, MaxConnsPerIP: -1})
	const before, burst = 20, 60
	for i := range iterations {
		channel := "race-" + strconv.Itoa(i)
		publishN(t, s, channel, 1, before)
		cursor := live.Position{Epoch: mustCursor(t, s, channel).Epoch, Seq: before / 2}

		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := before + 1; j <= before+burst; j++ {
				if _, err := s.hub.Publish(context.Background(), channel, j); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		var got []string
		if i%2 == 0 {
			stream := openSSE(t, s.srv.URL+"/live/"+channel, http.Header{"Last-Event-Id": {cursor.String()}})
			got = readSSEData(t, stream, before+burst-before/2)
		} else {
			c := dialWS(t, s.wsURL(), nil)
			c.send(t, map[string]string{"type": "subscribe", "channel": channel, "cursor": cursor.String()})
			c.expect(t, "subscribed")
			for len(got) < before+burst-before/2 {
				f := c.expect(t, "data")
				got = append(got, string(f.Data))
			}
		}
		wg.Wait()
		if diff := cmp.Diff(seq(before/2+1, before+burst), got); diff != "" {
			t.Fatalf("iteration %d (-want +got):\n%s", i, diff)
		}
	}
}

// faultBroker wraps a MemoryBroker to break subscriptions on demand and to
// hold new ones until released, as a network broker does during an outage.
type faultBroker struct {
	*live.MemoryBroker

	mu     sync.Mutex    // guards broken, gate and drop
	broken chan struct{} // closed to break the active subscriptions
	gate   chan struct{} // new subscriptions wait until it is closed
	drop   bool          // deliveries are lost
}

func newFaultBroker(t testing.TB, history int) *faultBroker {
	open := make(chan struct{})
	close(open)
	return &faultBroker{MemoryBroker: newMemoryBroker(t, history), broken: make(chan struct{}), gate: open}
}

var errOutage = errors.New("fault: connection lost")

func (b *faultBroker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	select {
	case <-gate:
	case <-ctx.Done():
		return nil
	}
	b.mu.Lock()
	broken := b.broken
	b.mu.Unlock()

	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-broken:
			cancel()
		case <-inner.Done():
		}
	}()
	err := b.MemoryBroker.Subscribe(inner, channel, ready, func(m live.Message) {
		b.mu.Lock()
		drop := b.drop
		b.mu.Unlock()
		select {
		case <-broken: // lost with the connection
		default:
			if !drop {
				deliver(m)
			}
		}
	})
	if ctx.Err() == nil && err == nil {
		return errOutage
	}
	return err
}

// outage breaks the active subscriptions and holds new ones; the returned
// func ends the outage.
func (b *faultBroker) outage() (end func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.broken)
	b.broken = make(chan struct{})
	gate := make(chan struct{})
	b.gate = gate
	return func() { close(gate) }
}

func (b *faultBroker) setDrop(drop bool) {
	b.mu.Lock()
	b.drop = drop
	b.mu.Unlock()
}

func TestBrokerFaults(t *testing.T) {
	t.Run("lost deliveries are filled from history", func(t *testing.T) {
		b := newFaultBroker(t, 100)
		s := newTestServer(t, &live.Options{Broker: b})
		stream := openSSE(t, s.srv.URL+"/live/c", nil)
		b.setDrop(true)
		publishN(t, s, "c", 1, 3)
		b.setDrop(false)
		publishN(t, s, "c", 4, 5)
		if diff := cmp.Diff(seq(1, 5), readSSEData(t, stream, 5)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("a broken subscription catches up", func(t *testing.T) {
		b := newFaultBroker(t, 100)
		s := newTestServer(t, &live.Options{Broker: b})
		stream := openSSE(t, s.srv.URL+"/live/c", nil)
		ws := dialWS(t, s.wsURL(), nil)
		ws.subscribe(t, "c")
		end := b.outage()
		publishN(t, s, "c", 1, 3)
		end()
		publishN(t, s, "c", 4, 4)
		if diff := cmp.Diff(seq(1, 4), readSSEData(t, stream, 4)); diff != "" {
			t.Errorf("SSE (-want +got):\n%s", diff)
		}
		var got []string
		for range 4 {
			got = append(got, string(ws.expect(t, "data").Data))
		}
		if diff := cmp.Diff(seq(1, 4), got); diff != "" {
			t.Errorf("WebSocket (-want +got):\n%s", diff)
		}
	})

	t.Run("a hole history cannot fill is reset", func(t *testing.T) {
		b := newFaultBroker(t, 2)
		s := newTestServer(t, &live.Options{Broker: b})
		stream := openSSE(t, s.srv.URL+"/live/c", nil)
		end := b.outage()
		head := publishN(t, s, "c", 1, 5)
		end()
		ev := stream.nextData(t)
		if ev.Event != "reset" || ev.ID != head.String() || !strings.Contains(ev.Data, `"reason":"broker"`) {
			t.Fatalf("got %+v, want a broker reset at %v", ev, head)
		}
		publishN(t, s, "c", 6, 6)
		if diff := cmp.Diff(seq(6, 6), readSSEData(t, stream, 1)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

// TestResumeLongerThanQueue resumes a client that missed more than its
// queue holds: the replay is not taken for slowness, or every resume of
// that length would end in a disconnection, and the next one too.
func TestResumeLongerThanQueue(t *testing.T) {
	s := newTestServer(t, &live.Options{QueueMessages: 8})
	cursor := s.publish(t, "c", 0) // no subscriber yet, so none can be slow
	publishN(t, s, "c", 1, 50)
	stream := openSSE(t, s.srv.URL+"/live/c", http.Header{"Last-Event-Id": {cursor.String()}})
	if diff := cmp.Diff(seq(1, 50), readSSEData(t, stream, 50)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if st := s.hub.Stats(); st.SlowClients != 0 {
		t.Errorf("SlowClients = %d", st.SlowClients)
	}
}

// TestResumeWithoutHistory resumes on a broker that keeps no history: a
// cursor the hub cannot honour gets a reset, and the channel stays live.
func TestResumeWithoutHistory(t *testing.T) {
	b := struct{ live.Broker }{newMemoryBroker(t, 100)} // hides History
	s := newTestServer(t, &live.Options{Broker: b})
	head := mustCursor(t, s, "c")
	tests := []struct {
		cursor, reason string
	}{
		{live.Position{Epoch: head.Epoch, Seq: head.Seq + 5}.String(), "ahead"},
		{live.Position{Epoch: head.Epoch + "x", Seq: 1}.String(), "epoch"},
		{"not a cursor", "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			c := dialWS(t, s.wsURL(), nil)
			c.send(t, map[string]string{"type": "subscribe", "channel": "c", "cursor": tt.cursor})
			ack := c.expect(t, "subscribed")
			if reset := c.expect(t, "reset"); reset.Reason != tt.reason || reset.Cursor != ack.Cursor {
				t.Fatalf("reset %+v after %+v; want reason %q at the acknowledged cursor", reset, ack, tt.reason)
			}
			s.publish(t, "c", 1)
			if f := c.expect(t, "data"); string(f.Data) != "1" {
				t.Fatalf("data %+v, want 1", f)
			}
		})
	}
}

func (b *faultBroker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	return followBySubscribe(b, channel, ready, deliver, ended)
}
