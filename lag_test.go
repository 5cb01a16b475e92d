package live_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-live/live"
)

// lagBroker is a node's view of a shared broker that can fall behind:
// while held, deliveries to this node wait, as they might behind a busy
// network, while other nodes see them at once.
type lagBroker struct {
	*live.MemoryBroker

	mu      sync.Mutex
	holding bool
	held    []func()
}

func (b *lagBroker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	return b.MemoryBroker.Subscribe(ctx, channel, ready, func(m live.Message) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.holding {
			b.held = append(b.held, func() { deliver(m) })
			return
		}
		deliver(m)
	})
}

func (b *lagBroker) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// release delivers what was held, in order, then passes deliveries on.
func (b *lagBroker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.held {
		f()
	}
	b.held, b.holding = nil, false
}

// TestResumeOnLaggingNode resumes a client on a node that has not yet
// received what the client read on another node: it starts where the
// client is, without a reset and without sending anything twice. A cursor
// the broker itself has not reached is still reset.
func TestResumeOnLaggingNode(t *testing.T) {
	shared := newMemoryBroker(t, 100)
	lag := &lagBroker{MemoryBroker: shared}
	a := newTestServer(t, &live.Options{Broker: shared})
	b := newTestServer(t, &live.Options{Broker: lag})

	watcher := dialWS(t, b.wsURL(), nil) // keeps the channel active on b
	watcher.subscribe(t, "feed")

	lag.hold()
	var last live.Position
	for i := 1; i <= 3; i++ {
		last = a.publish(t, "feed", i)
	}
	resumed := dialWS(t, b.wsURL(), nil)
	resumed.send(t, map[string]string{"type": "subscribe", "channel": "feed", "cursor": last.String()})
	if f := resumed.expect(t, "subscribed"); f.Cursor != last.String() {
		t.Fatalf("subscribed at %s; want the client's cursor %s", f.Cursor, last)
	}
	a.publish(t, "feed", 4)
	lag.release()
	if f := resumed.expect(t, "data"); string(f.Data) != "4" {
		t.Fatalf("first publication after resuming: %s; want 4", f.Data)
	}
	for i := 1; i <= 4; i++ { // the watcher gets everything, in order
		if f := watcher.expect(t, "data"); string(f.Data) != string(rune('0'+i)) {
			t.Fatalf("watcher got %s; want %d", f.Data, i)
		}
	}

	bogus := live.Position{Seq: last.Seq + 100, Epoch: last.Epoch}
	c := dialWS(t, b.wsURL(), nil)
	c.send(t, map[string]string{"type": "subscribe", "channel": "feed", "cursor": bogus.String()})
	c.expect(t, "subscribed")
	if f := c.expect(t, "reset"); f.Reason != "ahead" {
		t.Fatalf("reset reason %q; want ahead", f.Reason)
	}
}

// countingBroker counts History calls.
type countingBroker struct {
	*live.MemoryBroker
	since atomic.Int64
}

func (b *countingBroker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	b.since.Add(1)
	return b.MemoryBroker.Since(ctx, channel, after)
}

func (b *countingBroker) SincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	b.since.Add(1)
	return b.MemoryBroker.SincePage(ctx, channel, after, maxMessages, maxBytes)
}

// TestResumeFromRecentFrames resumes clients whose cursors the hub's own
// recent frames cover without asking the broker (what keeps a storm of
// reconnections off the broker), and older ones from the broker.
func TestResumeFromRecentFrames(t *testing.T) {
	b := &countingBroker{MemoryBroker: newMemoryBroker(t, 2000)}
	s := newTestServer(t, &live.Options{Broker: b})
	// Watchers keep the channel active; a channel of more than a few
	// subscribers keeps up to 512 recent frames (a channel of a few, 16).
	var watchers []*wsClient
	for range 5 {
		w := dialWS(t, s.wsURL(), nil)
		w.subscribe(t, "r")
		watchers = append(watchers, w)
	}
	var cursors []live.Position
	for i := range 1000 {
		cursors = append(cursors, s.publish(t, "r", i))
	}
	for _, w := range watchers {
		for range 1000 {
			w.expect(t, "data")
		}
	}

	resume := func(from int) {
		t.Helper()
		c := dialWS(t, s.wsURL(), nil)
		c.send(t, map[string]string{"type": "subscribe", "channel": "r", "cursor": cursors[from].String()})
		c.expect(t, "subscribed")
		for i := from + 1; i < 1000; i++ {
			f := c.expect(t, "data")
			if string(f.Data) != strconv.Itoa(i) || f.Cursor != cursors[i].String() {
				t.Fatalf("got %s at %s; want %d at %s", f.Data, f.Cursor, i, cursors[i])
			}
		}
	}
	resume(900)
	if n := b.since.Load(); n != 0 {
		t.Errorf("a recent cursor asked the broker %d times", n)
	}
	resume(10)
	if n := b.since.Load(); n != 1 {
		t.Errorf("an old cursor asked the broker %d times; want 1", n)
	}
}

func (b *lagBroker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	return followBySubscribe(b, channel, ready, deliver, ended)
}
