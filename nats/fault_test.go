package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/nats-io/nats.go"
)

// A loadPublisher publishes numbered values through a Hub every 2 ms
// until stopped, and records what each Publish returned.
type loadPublisher struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards ok, failed and changed
	ok      []live.Position
	failed  int
	changed chan struct{} // closed and replaced after each result
}

func startPublisher(n *node, channel string) *loadPublisher {
	p := &loadPublisher{stop: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(2 * time.Millisecond) // paces the load; nothing waits for delivery
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			pos, err := n.Hub.Publish(ctx, channel, json.RawMessage(fmt.Sprint(i)))
			cancel()
			p.mu.Lock()
			if err == nil {
				p.ok = append(p.ok, pos)
			} else {
				p.failed++
			}
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	return p
}

// await waits until cond holds for the publisher's successes and
// failures.
func (p *loadPublisher) await(t *testing.T, what string, cond func(ok []live.Position, failed int) bool) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		p.mu.Lock()
		holds, changed := cond(p.ok, p.failed), p.changed
		p.mu.Unlock()
		if holds {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("publisher: %s did not happen", what)
		}
	}
}

func (p *loadPublisher) finish() []live.Position {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok
}

// checkNoSilentLoss reads events until every successful publication has
// been delivered or covered by a reset, and reports any event that does
// not follow the one before (a gap, a duplicate, a reordering) unless it
// follows a reset. It returns the resets.
// The events in read come first, then those s sends.
func checkNoSilentLoss(t *testing.T, read []servertest.Event, s *servertest.Stream, after live.Position, published []live.Position) (resets []servertest.Event) {
	t.Helper()
	last := published[len(published)-1]
	prev := after
	delivered := map[live.Position]bool{}
	for prev.Epoch != last.Epoch || prev.Seq < last.Seq {
		var e servertest.Event
		if len(read) > 0 {
			e, read = read[0], read[1:]
		} else {
			e = s.Next(t)
		}
		if e.Event == "reset" {
			var r struct{ Cursor string }
			json.Unmarshal([]byte(e.Data), &r)
			cursor, err := live.ParsePosition(r.Cursor)
			if err != nil {
				t.Fatalf("reset %+v: %v", e, err)
			}
			resets = append(resets, e)
			prev = cursor
			continue
		}
		pos, err := live.ParsePosition(e.ID)
		if err != nil || pos.Epoch != prev.Epoch || pos.Seq != prev.Seq+1 {
			t.Errorf("event %+v after %v: not the next position", e, prev)
		}
		delivered[pos] = true
		prev = pos
	}
	for _, p := range published {
		if delivered[p] {
			continue
		}
		covered := false
		for _, e := range resets {
			var r struct{ Cursor string }
			json.Unmarshal([]byte(e.Data), &r)
			if c, _ := live.ParsePosition(r.Cursor); c.Epoch == p.Epoch && c.Seq >= p.Seq {
				covered = true
			}
		}
		if !covered {
			t.Errorf("publication %v was neither delivered nor covered by a reset", p)
		}
	}
	return resets
}

// The server crashes mid-stream and restarts on the same store. Publishing
// fails during the outage; once the server is back, the client receives
// again, the publications it missed replayed, in one numbering.
func TestServerRestart(t *testing.T) {
	srv := startServer(t)
	n := newNode(t, connect(t, srv.url()), &natsbroker.Options{StallTimeout: time.Second})
	channel := channelName(t)
	s := servertest.OpenStream(t, n.SSE+channel, "")
	start := n.Publish(t, channel, `"start"`)
	s.ExpectNext(t, start)

	pub := startPublisher(n, channel)
	pub.await(t, "20 publications", func(ok []live.Position, _ int) bool { return len(ok) >= 20 })
	srv.Kill()
	var before int
	pub.await(t, "3 failures while the server is down", func(ok []live.Position, failed int) bool {
		before = len(ok)
		return failed >= 3
	})
	srv.Start()
	restarted := time.Now()
	pub.await(t, "20 publications after the restart", func(ok []live.Position, _ int) bool { return len(ok) >= before+20 })
	published := pub.finish()

	// The first event after the restart.
	var recovered time.Duration
	var events []servertest.Event
	for {
		e := s.Next(t)
		events = append(events, e)
		pos, _ := live.ParsePosition(e.ID)
		if e.Event == "reset" || pos.Seq > published[before-1].Seq {
			recovered = time.Since(restarted)
			break
		}
	}
	resets := checkNoSilentLoss(t, events, s, start, published)
	if len(resets) > 0 {
		t.Errorf("resets %v after a restart that kept the store, want the missed publications replayed", resets)
	}
	if recovered > servertest.RecoverWithin {
		t.Errorf("the client received again %v after the server restarted, want within %v", recovered, servertest.RecoverWithin)
	}
	t.Logf("%d publications, %d while down failed; the client received again %v after the server restarted",
		len(published), pub.failed, recovered.Round(time.Millisecond))
}

// The server restarts with an empty store, as after losing its disk: the
// numbering starts again in a new epoch, the client following the channel
// is reset, and so is a client resuming with an old cursor.
func TestServerRestartEmpty(t *testing.T) {
	srv := startServer(t)
	nc := connect(t, srv.url())
	n := newNode(t, nc, &natsbroker.Options{StallTimeout: time.Second})
	channel := channelName(t)
	s := servertest.OpenStream(t, n.SSE+channel, "")
	before := n.Publish(t, channel, `"before"`)
	s.ExpectNext(t, before)

	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	killed := time.Now()
	if pos, err := n.Hub.Publish(ctx, channel, json.RawMessage(`"during"`)); err == nil {
		t.Errorf("Publish while the server is down = %v, nil; want an error", pos)
	} else {
		t.Logf("Publish while the server is down failed after %v: %v", time.Since(killed).Round(time.Millisecond), err)
	}
	srv.wipe(t)
	back := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(back)
	srv.Start()
	restarted := time.Now()
	select { // publications fail until the connection is back
	case <-back:
	case <-time.After(waitTimeout):
		t.Fatal("the connection did not come back")
	}
	// Published before or after the Hub notices: either way the client
	// gets it or a reset past it.
	early := n.Publish(t, channel, `"early"`)
	if early.Epoch == before.Epoch {
		t.Fatalf("publication after the data loss at %v, want a new epoch", early)
	}
	late := servertest.ExpectEpochReset(t, n.Node, s, channel, early)
	recovered := time.Since(restarted)
	if recovered > servertest.RecoverWithin {
		t.Errorf("the client received again %v after the server restarted, want within %v", recovered, servertest.RecoverWithin)
	}

	old := servertest.OpenStream(t, n.SSE+channel, before.String())
	checkReset(t, old.Next(t), "epoch", late)
	t.Logf("the client was reset and received again %v after the server restarted empty", recovered.Round(time.Millisecond))
}

// The server stops answering (SIGSTOP, as a frozen VM would) without
// closing connections. Subscribe notices within about StallTimeout and
// returns an error, which the broker logs and counts; when the server
// resumes, the Hub subscribes again and clients continue without a gap or
// a reset, because no data was lost.
func TestServerStall(t *testing.T) {
	const stall = time.Second
	// A short stall, and one of 3.5 s, during which the Hub's backoff grows.
	for _, hold := range []time.Duration{0, 3500 * time.Millisecond} {
		t.Run(hold.String(), func(t *testing.T) {
			srv := startServer(t)
			n := newNode(t, connect(t, srv.url()), &natsbroker.Options{StallTimeout: stall})
			channel := channelName(t)
			s := servertest.OpenStream(t, n.SSE+channel, "")
			w := servertest.Watch(t, n.Broker, channel)
			w.Ready(t)
			before := n.Publish(t, channel, `"before"`)
			s.ExpectNext(t, before)

			resumed := servertest.Stall(t, srv.Process, n.Broker, w, channel, stall, hold)
			if st := n.Broker.Stats(); st.Stalls == 0 {
				t.Errorf("broker stats %+v, want the stall counted", st)
			}
			servertest.ExpectContinued(t, n.Node, s, channel, before, resumed)
		})
	}
}

// checkReset reports unless e is a reset for reason to cursor want.
func checkReset(t *testing.T, e servertest.Event, reason string, want live.Position) {
	t.Helper()
	var reset struct{ Reason, Cursor string }
	json.Unmarshal([]byte(e.Data), &reset)
	if e.Event != "reset" || reset.Reason != reason || reset.Cursor != want.String() {
		t.Errorf("event %+v, want a reset (%s) to %v", e, reason, want)
	}
}

// The network between a Hub and NATS is cut for 3.5 s, long enough for the
// Hub's backoff to grow, while another Hub goes on publishing. Once it
// heals, the first Hub finds the server back at once and its client
// receives again, with nothing lost.
func TestLinkCut(t *testing.T) {
	srv := startServer(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, connect(t, "nats://"+link.Addr), &natsbroker.Options{StallTimeout: time.Second})
	pub := newNode(t, connect(t, srv.url()), &natsbroker.Options{})
	channel := channelName(t)
	s := servertest.OpenStream(t, cut.SSE+channel, "")
	servertest.ExpectRecoveredAfterCut(t, link, cut.Node, pub.Node, s, channel, 3500*time.Millisecond)
}

// A State's Hub is cut off NATS while another writes more than history
// holds: once the link heals it rebuilds the value from the snapshot.
func TestStateAfterLongCut(t *testing.T) {
	srv := startServer(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, connect(t, "nats://"+link.Addr), &natsbroker.Options{HistorySize: 16, StallTimeout: time.Second})
	pub := newNode(t, connect(t, srv.url()), &natsbroker.Options{HistorySize: 16})
	servertest.ExpectStateRebuiltAfterCut(t, link, cut.Node, pub.Node, 40, 2500*time.Millisecond)
}

// NATS is out of reach of one node for 3 s while its Hub.Hook answers
// writes: every event reaches the clients of both nodes once it is back.
func TestHookEventsAfterOutage(t *testing.T) {
	srv := startServer(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, connect(t, "nats://"+link.Addr), &natsbroker.Options{StallTimeout: time.Second})
	other := newNode(t, connect(t, srv.url()), &natsbroker.Options{})
	servertest.ExpectHookEventsAfterOutage(t, link, cut.Node, other.Node, 10, 3*time.Second)
}
