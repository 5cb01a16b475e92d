package pgbroker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-live/live"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/google/go-cmp/cmp"
)

// A client follows a channel on node A, goes away, and comes back on node
// B with its cursor, as behind a load balancer. Both nodes publish
// meanwhile. It gets exactly what it missed, in order, then the live
// stream; a cursor older than the history, or from before a loss of the
// tables, gets a reset.
func TestResumeOnAnotherNode(t *testing.T) {
	url := pgURL(t)
	const historySize = 16
	poolA := newPool(t, url)
	opts := &pgbroker.Options{HistorySize: historySize, Schema: testSchema(t, poolA)}
	nodeA := newNode(t, poolA, opts)
	nodeB := newNode(t, newPool(t, url), opts)

	// readOnA follows channel on node A, publishes n values through it and
	// returns the client's cursor after reading them.
	readOnA := func(t *testing.T, channel string, n int) string {
		a := follow(t, nodeA.ws, channel, "")
		var want, got []string
		for i := range n {
			data := fmt.Sprintf(`"a%d"`, i)
			want = append(want, nodeA.publish(t, channel, data).String()+" "+data)
			m := a.next(t)
			got = append(got, m.Cursor+" "+string(m.Data))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("messages on node A (-want +got):\n%s", diff)
		}
		a.stop()
		return a.c.Cursor(channel)
	}

	t.Run("Missed", func(t *testing.T) {
		channel := channelName(t)
		cursor := readOnA(t, channel, 3)

		var want []string
		for i, n := range []*node{nodeA, nodeB, nodeA, nodeB} {
			data := fmt.Sprint(4 + i)
			want = append(want, n.publish(t, channel, data).String()+" "+data)
		}
		b := follow(t, nodeB.ws, channel, cursor)
		for i, n := range []*node{nodeA, nodeB} { // live, after the replay
			data := fmt.Sprint(8 + i)
			want = append(want, n.publish(t, channel, data).String()+" "+data)
		}
		var got []string
		for range want {
			m := b.next(t)
			if m.Reset {
				t.Fatalf("reset (%s) while resuming from %s", m.Reason, cursor)
			}
			got = append(got, m.Cursor+" "+string(m.Data))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("messages on node B after resuming from %s (-want +got):\n%s", cursor, diff)
		}
		// No duplicate follows: the next message is the next publication.
		last := nodeA.publish(t, channel, `"last"`)
		if m := b.next(t); m.Cursor != last.String() {
			t.Errorf("message after the resumed ones: %+v, want %v", m, last)
		}
		checkContiguous(t, cursor, append(got, last.String()))
	})

	t.Run("OutOfWindow", func(t *testing.T) {
		channel := channelName(t)
		cursor := readOnA(t, channel, 1)
		var head live.Position
		for i := range historySize + 1 {
			head = nodeB.publish(t, channel, fmt.Sprint(i))
		}
		b := follow(t, nodeB.ws, channel, cursor)
		m := b.next(t)
		if !m.Reset || m.Reason != "gone" || m.Cursor != head.String() {
			t.Fatalf("first message after resuming from %s = %+v, want a reset (gone) to %v", cursor, m, head)
		}
		next := nodeA.publish(t, channel, `"next"`)
		if m := b.next(t); m.Cursor != next.String() || string(m.Data) != `"next"` {
			t.Errorf("message after the reset = %+v, want %v", m, next)
		}
	})

	t.Run("AfterDataLoss", func(t *testing.T) {
		channel := channelName(t)
		cursor := readOnA(t, channel, 2)
		if _, err := poolA.Exec(t.Context(), "DROP SCHEMA "+opts.Schema+" CASCADE"); err != nil {
			t.Fatal(err)
		}
		first := nodeA.publish(t, channel, `"new"`)
		b := follow(t, nodeB.ws, channel, cursor)
		m := b.next(t)
		if !m.Reset || m.Cursor != first.String() {
			t.Fatalf("first message after resuming from %s across a loss of the tables = %+v, want a reset to %v", cursor, m, first)
		}
		t.Logf("reset (%s) to %s", m.Reason, m.Cursor)
		next := nodeB.publish(t, channel, `"next"`)
		if m := b.next(t); m.Cursor != next.String() || string(m.Data) != `"next"` {
			t.Errorf("message after the reset = %+v, want %v", m, next)
		}
	})
}

// checkContiguous reports cursors (each optionally followed by a space and
// data) that do not follow the one before, starting after cursor.
func checkContiguous(t *testing.T, cursor string, cursors []string) {
	t.Helper()
	prev, err := live.ParseCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cursors {
		c, _, _ = strings.Cut(c, " ")
		pos, err := live.ParseCursor(c)
		if err != nil || pos.Epoch != prev.Epoch || pos.Seq != prev.Seq+1 {
			t.Errorf("cursor %q after %v: not the next position", c, prev)
		}
		prev = pos
	}
}
