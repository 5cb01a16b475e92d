package redisbroker_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/go-live/live"
	redisbroker "github.com/go-live/live/redis"
	"github.com/google/go-cmp/cmp"
)

// A client reads a stream on node A, goes away, and comes back on node B
// with Last-Event-ID, as EventSource does behind a load balancer. Both
// nodes publish meanwhile. It gets exactly what it missed, in order, then
// the live stream; a cursor older than the history gets a reset.
func TestResumeOnAnotherNode(t *testing.T) {
	url := redisURL(t)
	const historySize = 16
	c := newClient(t, url)
	opts := &redisbroker.Options{HistorySize: historySize, Prefix: testPrefix(t, c)}
	nodeA := newNode(t, c, opts)
	nodeB := newNode(t, newClient(t, url), opts)

	t.Run("Missed", func(t *testing.T) {
		channel := channelName(t)
		a := openStream(t, nodeA.url+channel, "")
		var seen []event
		for i := 1; i <= 3; i++ {
			pos := nodeA.publish(t, channel, fmt.Sprint(i))
			seen = append(seen, event{ID: pos.String(), Data: fmt.Sprint(i)})
		}
		got := []event{a.next(t), a.next(t), a.next(t)}
		if diff := cmp.Diff(seen, got); diff != "" {
			t.Fatalf("events on node A (-want +got):\n%s", diff)
		}
		a.close()

		var missed []event
		for i, n := range []*node{nodeA, nodeB, nodeA, nodeB} {
			data := fmt.Sprint(4 + i)
			missed = append(missed, event{ID: n.publish(t, channel, data).String(), Data: data})
		}
		b := openStream(t, nodeB.url+channel, got[2].ID)
		for i, n := range []*node{nodeA, nodeB} { // live, after the replay
			data := fmt.Sprint(8 + i)
			missed = append(missed, event{ID: n.publish(t, channel, data).String(), Data: data})
		}
		var resumed []event
		for range missed {
			resumed = append(resumed, b.next(t))
		}
		if diff := cmp.Diff(missed, resumed); diff != "" {
			t.Errorf("events on node B after resuming from %s (-want +got):\n%s", got[2].ID, diff)
		}
		checkContiguous(t, got[2].ID, resumed)
	})

	t.Run("OutOfWindow", func(t *testing.T) {
		channel := channelName(t)
		a := openStream(t, nodeA.url+channel, "")
		first := nodeA.publish(t, channel, `"first"`)
		if e := a.next(t); e.ID != first.String() {
			t.Fatalf("event %+v, want id %v", e, first)
		}
		a.close()
		var head live.Position
		for i := range historySize + 1 {
			head = nodeB.publish(t, channel, fmt.Sprint(i))
		}

		b := openStream(t, nodeB.url+channel, first.String())
		e := b.next(t)
		var reset struct{ Reason, Cursor string }
		json.Unmarshal([]byte(e.Data), &reset)
		if e.Event != "reset" || reset.Reason != "gone" || reset.Cursor != head.String() {
			t.Fatalf("first event after resuming from %v = %+v, want a reset (gone) to %v", first, e, head)
		}
		next := nodeA.publish(t, channel, `"next"`)
		if e := b.next(t); e.ID != next.String() || e.Data != `"next"` {
			t.Errorf("event after the reset = %+v, want %v", e, next)
		}
	})
}

// checkContiguous reports events whose cursors do not follow the one
// before, starting after cursor.
func checkContiguous(t *testing.T, cursor string, events []event) {
	t.Helper()
	prev, err := live.ParseCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		pos, err := live.ParseCursor(e.ID)
		if err != nil || pos.Epoch != prev.Epoch || pos.Seq != prev.Seq+1 {
			t.Errorf("event %q after %v: not the next position", e.ID, prev)
		}
		prev = pos
	}
}
