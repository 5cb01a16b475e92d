package servertest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
)

// RecoverWithin bounds how long clients may go without publications once
// a server that failed is back.
const RecoverWithin = 5 * time.Second

// Stall pauses p (SIGSTOP, as a frozen machine would) without closing any
// connection, while w watches a subscription to channel of b, a broker on
// p with the given StallTimeout. The subscription must end with an error
// about a stall within about stall, and Publish must fail while p is
// paused. Stall keeps p paused for at least hold (an outage longer than
// the stall timeout lets the Hub's backoff grow), then resumes it and
// returns when it did.
func Stall(t testing.TB, p *Process, b live.Broker, w *Watcher, channel string, stall, hold time.Duration) time.Time {
	t.Helper()
	p.Stop()
	stopped := time.Now()
	err := w.Failure(t, 4*stall)
	detected := time.Since(stopped)
	if !strings.Contains(err.Error(), "stalled") {
		t.Errorf("Subscribe during the stall = %v, want an error about a stall", err)
	}
	if detected > 2*stall {
		t.Errorf("stall detected after %v, want within about StallTimeout (%v)", detected, stall)
	}
	t.Logf("stall detected after %v: %v", detected.Round(time.Millisecond), err)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if pos, err := b.Publish(ctx, channel, []byte(`"during"`)); err == nil {
		t.Errorf("Publish while the server is stopped = %v, nil; want an error", pos)
	}
	// The outage itself: nothing is awaited here but time.
	time.Sleep(hold - time.Since(stopped))
	p.Cont()
	return time.Now()
}

// ExpectContinued checks a client that reads s through n, which has
// received the publication at before, after a stall that lost nothing:
// the next publication arrives within RecoverWithin of resumed, with
// nothing skipped and no reset (the one attempted during the stall may
// have been taken, so it may come first), and the Hub counted the
// broker's errors.
func ExpectContinued(t testing.TB, n *Node, s *Stream, channel string, before live.Position, resumed time.Time) {
	t.Helper()
	after := n.Publish(t, channel, `"after"`)
	var events []Event
	for {
		e := s.Next(t)
		events = append(events, e)
		if e.ID == after.String() || e.Event == "reset" || len(events) > 2 {
			break
		}
	}
	CheckContiguous(t, before.String(), events)
	if last := events[len(events)-1]; last.ID != after.String() || last.Data != `"after"` {
		t.Errorf("events after the stall: %+v, want %v last", events, after)
	}
	d := time.Since(resumed)
	if d > RecoverWithin {
		t.Errorf("the client received again %v after the server resumed, want within %v", d, RecoverWithin)
	}
	if st := n.Hub.Stats(); st.BrokerErrors == 0 || st.Resets != 0 {
		t.Errorf("Hub stats %+v, want broker errors counted and no resets", st)
	}
	t.Logf("the client received again %v after the server resumed", d.Round(time.Millisecond))
}

// ExpectEpochReset checks a client that reads s through n after the
// server lost its data, early being the first publication after that: the
// next event is a reset with reason "epoch" to early's new epoch, then
// come early (unless the reset's cursor covers it) and a publication made
// now. It returns that last publication's position.
func ExpectEpochReset(t testing.TB, n *Node, s *Stream, channel string, early live.Position) live.Position {
	t.Helper()
	e := s.Next(t)
	var reset struct{ Reason, Cursor string }
	json.Unmarshal([]byte(e.Data), &reset)
	cursor, err := live.ParseCursor(reset.Cursor)
	if e.Event != "reset" || reset.Reason != "epoch" || err != nil || cursor.Epoch != early.Epoch {
		t.Fatalf("first event after the restart = %+v, want a reset to the new epoch %q", e, early.Epoch)
	}
	want := []string{early.String()}
	if cursor.Seq >= early.Seq {
		want = nil // the reset covers it
	}
	late := n.Publish(t, channel, `"late"`)
	want = append(want, late.String())
	var got []string
	for range want {
		got = append(got, s.Next(t).ID)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events after the reset to %v: %v, want %v", cursor, got, want)
	}
	return late
}

// CatchUp checks what the Hub does after a subscription of b to channel,
// ready at head, failed while missed was published: it subscribes again
// and reads the history from head, which together cover missed; and the
// new subscription delivers what follows.
func CatchUp(t testing.TB, b interface {
	live.Broker
	live.History
}, channel string, head, missed live.Position) {
	t.Helper()
	again := Watch(t, b, channel)
	head2 := again.Ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	got, err := b.Since(ctx, channel, head)
	if err != nil {
		t.Fatalf("Since(%v): %v", head, err)
	}
	if len(got) == 0 || got[0].Pos != missed || head2.Seq < missed.Seq {
		t.Errorf("after the reconnection, ready(%v) and Since(%v) = %v; want %v covered", head2, head, got, missed)
	}
	next := Publish(t, b, channel, `"after"`)
	if m := again.Next(t); m.Pos != next {
		t.Errorf("delivery after resubscribing at %v, want %v", m.Pos, next)
	}
}

// AwaitGone polls Since(from) on channel until it fails with
// [live.ErrGone], as it must once the publications from there on are
// older than the broker keeps them.
func AwaitGone(t testing.TB, h live.History, channel string, from live.Position) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		_, err := h.Since(ctx, channel, from)
		cancel()
		if errors.Is(err, live.ErrGone) {
			return
		}
		if err != nil {
			t.Fatalf("Since(%v): %v", from, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Since(%v) still replays after %v", from, Timeout)
		}
		time.Sleep(10 * time.Millisecond) // waiting for time to pass, which is what is tested
	}
}

// ExpectRecoveredAfterCut cuts the link between the Hub of cut and its
// broker for hold while pub, a Hub on the same broker, publishes on
// channel; then heals it. A client of cut's, reading s, gets every
// publication in order without a reset, the last one made after the heal
// within RecoverWithin; it returns how long after the heal that was.
func ExpectRecoveredAfterCut(t testing.TB, link *Link, cut, pub *Node, s *Stream, channel string, hold time.Duration) time.Duration {
	t.Helper()
	first := pub.Publish(t, channel, `"before"`)
	if e := s.Next(t); e.ID != first.String() {
		t.Fatalf("event %+v, want %v", e, first)
	}
	link.Cut()
	cutAt := time.Now()
	pub.Publish(t, channel, `"during"`)
	// The outage itself: nothing is awaited here but time.
	time.Sleep(hold - time.Since(cutAt))
	link.Heal()
	healed := time.Now()
	last := pub.Publish(t, channel, `"after"`)
	var events []Event
	for {
		e := s.Next(t)
		events = append(events, e)
		if e.ID == last.String() || e.Event == "reset" || len(events) > 3 {
			break
		}
	}
	d := time.Since(healed)
	CheckContiguous(t, first.String(), events)
	if got := events[len(events)-1]; got.ID != last.String() {
		t.Errorf("events after the cut: %+v, want %v last", events, last)
	}
	if d > RecoverWithin {
		t.Errorf("the client received again %v after the link healed, want within %v", d, RecoverWithin)
	}
	t.Logf("cut for %v: the client received again %v after the link healed", hold, d.Round(time.Millisecond))
	return d
}
