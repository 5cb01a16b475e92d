package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/liveclient"
	"github.com/go-live/live/livetest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// A client reads a stream on node A, goes away, and comes back on node B
// with its cursor, as EventSource does behind a load balancer. Both nodes
// publish meanwhile. It gets exactly what it missed, in order, then the
// live stream; a cursor older than the history, or from before the server
// lost its data, gets a reset.
func TestResumeOnAnotherNode(t *testing.T) {
	url := natsURL(t)
	const historySize = 16
	nc := connect(t, url)
	opts := &natsbroker.Options{HistorySize: historySize, Prefix: testPrefix(t, url)}
	nodeA := newNode(t, nc, opts)
	nodeB := newNode(t, connect(t, url), opts)

	// readOnA follows channel on node A with a test client until it has
	// seen n publications made through node A, and returns the client's
	// cursor after them; the client is gone when it returns.
	readOnA := func(t *testing.T, channel string, n int) string {
		var cursor string
		t.Run("A", func(t *testing.T) {
			c := livetest.Connect(t, nodeA.url, channel)
			var want, got []string
			for i := range n {
				data := fmt.Sprint(i + 1)
				want = append(want, nodeA.publish(t, channel, data).String()+" "+data)
			}
			for range want {
				m := c.Next(t)
				got = append(got, m.Cursor+" "+string(m.Data))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("messages on node A (-want +got):\n%s", diff)
			}
			cursor = c.Cursor(channel)
		}) // the client disconnects as the subtest ends
		if cursor == "" {
			t.FailNow()
		}
		return cursor
	}

	t.Run("Missed", func(t *testing.T) {
		channel := channelName(t)
		cursor := readOnA(t, channel, 3)
		var missed []event
		for i, n := range []*node{nodeA, nodeB, nodeA, nodeB} {
			data := fmt.Sprint(4 + i)
			missed = append(missed, event{ID: n.publish(t, channel, data).String(), Data: data})
		}
		b := openStream(t, nodeB.url+channel, cursor)
		for i, n := range []*node{nodeA, nodeB} { // live, after the replay
			data := fmt.Sprint(8 + i)
			missed = append(missed, event{ID: n.publish(t, channel, data).String(), Data: data})
		}
		var resumed []event
		for range missed {
			resumed = append(resumed, b.next(t))
		}
		if diff := cmp.Diff(missed, resumed); diff != "" {
			t.Errorf("events on node B after resuming from %s (-want +got):\n%s", cursor, diff)
		}
		checkContiguous(t, cursor, resumed)
		// Nothing more: a duplicate would come before this.
		last := nodeA.publish(t, channel, `"last"`)
		if e := b.next(t); e.ID != last.String() {
			t.Errorf("event after the resumed ones = %+v, want %v", e, last)
		}
	})

	t.Run("OutOfWindow", func(t *testing.T) {
		channel := channelName(t)
		cursor := readOnA(t, channel, 1)
		var head live.Position
		for i := range historySize + 1 {
			head = nodeB.publish(t, channel, fmt.Sprint(i))
		}
		b := openStream(t, nodeB.url+channel, cursor)
		checkReset(t, b.next(t), "gone", head)
		next := nodeA.publish(t, channel, `"next"`)
		if e := b.next(t); e.ID != next.String() || e.Data != `"next"` {
			t.Errorf("event after the reset = %+v, want %v", e, next)
		}
	})

	t.Run("DataLost", func(t *testing.T) {
		channel := channelName(t)
		cursor := readOnA(t, channel, 2)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if err := js.DeleteStream(t.Context(), opts.Prefix); err != nil {
			t.Fatal(err)
		}
		head := nodeA.publish(t, channel, `"in a new epoch"`)
		b := openStream(t, nodeB.url+channel, cursor)
		checkReset(t, b.next(t), "epoch", head)
		next := nodeB.publish(t, channel, `"next"`)
		if e := b.next(t); e.ID != next.String() || e.Data != `"next"` {
			t.Errorf("event after the reset = %+v, want %v", e, next)
		}
	})
}

// checkReset reports unless e is a reset for reason to cursor want.
func checkReset(t *testing.T, e event, reason string, want live.Position) {
	t.Helper()
	var reset struct{ Reason, Cursor string }
	json.Unmarshal([]byte(e.Data), &reset)
	if e.Event != "reset" || reset.Reason != reason || reset.Cursor != want.String() {
		t.Errorf("event %+v, want a reset (%s) to %v", e, reason, want)
	}
}

// The same client resumes on node B through liveclient, which is what a
// Go service following a hub would use.
func TestResumeWithLiveClient(t *testing.T) {
	url := natsURL(t)
	nc := connect(t, url)
	opts := &natsbroker.Options{Prefix: testPrefix(t, url)}
	nodeA := newNode(t, nc, opts)
	nodeB := newNode(t, connect(t, url), opts)
	channel := channelName(t)

	c := livetest.Connect(t, nodeA.url, channel)
	first := nodeA.publish(t, channel, `1`)
	if m := c.Next(t); m.Cursor != first.String() {
		t.Fatalf("message %+v, want %v", m, first)
	}
	c.Drop() // the client reconnects to node A and resumes there
	second := nodeB.publish(t, channel, `2`)
	if m := c.Next(t); m.Cursor != second.String() || m.Reset {
		t.Fatalf("message after the drop %+v, want %v", m, second)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan string, 16)
	done := make(chan error, 1)
	onB := liveclient.New(nodeB.url, &liveclient.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	onB.SetCursor(channel, c.Cursor(channel))
	third := nodeA.publish(t, channel, `3`)
	go func() {
		done <- onB.Follow(ctx, []string{channel}, func(m liveclient.Message) error {
			got <- fmt.Sprint(m.Cursor, " ", string(m.Data), " ", m.Reset)
			return nil
		})
	}()
	fourth := nodeB.publish(t, channel, `4`)
	want := []string{third.String() + " 3 false", fourth.String() + " 4 false"}
	var have []string
	for range want {
		select {
		case s := <-got:
			have = append(have, s)
		case err := <-done:
			t.Fatalf("Follow returned %v", err)
		case <-time.After(waitTimeout):
			t.Fatalf("no message on node B after %v", have)
		}
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Errorf("messages on node B (-want +got):\n%s", diff)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow: %v", err)
	}
}
