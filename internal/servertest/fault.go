package servertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
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
	cursor, err := live.ParsePosition(reset.Cursor)
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
func ExpectRecoveredAfterCut(t testing.TB, link *Proxy, cut, pub *Node, s *Stream, channel string, hold time.Duration) time.Duration {
	t.Helper()
	first := pub.Publish(t, channel, `"before"`)
	s.ExpectNext(t, first)
	link.Cut()
	cutAt := time.Now()
	pub.Publish(t, channel, `"during"`)
	// The outage itself: nothing is awaited here but time.
	time.Sleep(hold - time.Since(cutAt))
	link.Restore()
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

// ExpectHookEventsAfterOutage cuts the link between the Hub of cut and its
// broker for hold while cut's Hub.Hook answers writes 201 requests: the
// events wait in cut's Hub. Once the link heals, a client of each node
// (cut and other, a Hub on the same broker) receives all of them, once,
// in the same order, at contiguous positions, without a reset. (Events
// whose first attempts overlapped may be in either order, as concurrent
// publications are; those that waited keep the order they were made in.)
func ExpectHookEventsAfterOutage(t testing.TB, link *Proxy, cut, other *Node, writes int, hold time.Duration) {
	t.Helper()
	channel := ChannelName(t)
	hook := cut.Hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return channel }})
	api := httptest.NewServer(hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	})))
	defer api.Close()
	streams := map[string]*Stream{
		"the cut node":   OpenStream(t, cut.SSE+channel, ""),
		"the other node": OpenStream(t, other.SSE+channel, ""),
	}

	link.Cut()
	cutAt := time.Now()
	var want []string
	for i := 1; i <= writes; i++ {
		item := fmt.Sprintf(`{"id":"i%d"}`, i)
		resp, err := http.Post(api.URL, "application/json", strings.NewReader(item))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST during the outage: %s", resp.Status)
		}
		want = append(want, `{"type":"add","item":`+item+`}`)
	}
	// The rest of the outage: nothing is awaited here but time.
	time.Sleep(hold - time.Since(cutAt))
	link.Restore()
	healed := time.Now()

	var order []string
	for who, s := range streams {
		var got []string
		var events []Event
		for len(got) < writes {
			e := s.Next(t)
			if e.Event == "reset" {
				t.Fatalf("%s's client was reset: %+v", who, e)
			}
			events = append(events, e)
			got = append(got, e.Data)
		}
		sorted := slices.Clone(got)
		slices.SortFunc(sorted, func(a, b string) int { return slices.Index(want, a) - slices.Index(want, b) })
		if strings.Join(sorted, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s's client got\n%s\nwant each of\n%s once", who, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if order == nil {
			order = got
		} else if strings.Join(got, "\n") != strings.Join(order, "\n") {
			t.Errorf("the clients of the two nodes got the events in different orders:\n%s\nand\n%s", strings.Join(order, "\n"), strings.Join(got, "\n"))
		}
		if first, err := live.ParsePosition(events[0].ID); err == nil {
			CheckContiguous(t, live.Position{Epoch: first.Epoch, Seq: first.Seq - 1}.String(), events)
		}
		t.Logf("%s's client had all %d events %v after the link healed", who, writes, time.Since(healed).Round(time.Millisecond))
	}
	// The clients may have an event before the broker's acknowledgement of
	// it reaches the hub, which counts it pending until then: a Publish on
	// the channel waits behind whatever still waits.
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := cut.Hub.Publish(ctx, channel, "after"); err != nil {
		t.Fatalf("Publish after the events: %v", err)
	}
	if st := cut.Hub.Stats(); st.Pending != 0 || st.PendingDropped != 0 || st.HookDropped != 0 {
		t.Errorf("Stats() after the outage: %+v, want nothing pending or dropped", st)
	}
}
