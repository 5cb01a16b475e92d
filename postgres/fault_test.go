package pgbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/liveclient"
	"github.com/go-live/live/livetest"
	pgbroker "github.com/go-live/live/postgres"
)

// publishAgain publishes through n until PostgreSQL takes the
// publication, as an application retrying after an outage would, and
// returns its position.
func publishAgain(t testing.TB, n *node, channel, data string) live.Position {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		pos, err := n.Hub.Publish(ctx, channel, json.RawMessage(data))
		cancel()
		if err == nil {
			return pos
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish still failing: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // retrying while the server comes back
	}
}

// A ledger checks that a client received every publication that
// succeeded, in order, or was told by a reset that it must refetch: zero
// silent loss.
type ledger struct {
	published []live.Position
	received  []liveclient.Message
}

// readUntil reads messages from f until the one at pos.
func (l *ledger) readUntil(t *testing.T, f *livetest.Client, pos live.Position) {
	t.Helper()
	for {
		m := f.Next(t)
		l.received = append(l.received, m)
		if m.Cursor == pos.String() {
			return
		}
	}
}

// check reports a publication neither received nor covered by a reset, a
// duplicate, and a received message out of order.
func (l *ledger) check(t *testing.T) {
	t.Helper()
	got := make(map[string]bool)
	var prev live.Position
	for _, m := range l.received {
		pos, err := live.ParsePosition(m.Cursor)
		if err != nil {
			t.Fatalf("message with cursor %q: %v", m.Cursor, err)
		}
		switch {
		case m.Reset:
			for _, p := range l.published {
				if p.Epoch != pos.Epoch || p.Seq <= pos.Seq {
					got[p.String()] = true // covered: the client refetches
				}
			}
		case got[m.Cursor]:
			t.Errorf("%s received twice", m.Cursor)
		case prev != (live.Position{}) && pos.Epoch == prev.Epoch && pos.Seq != prev.Seq+1:
			t.Errorf("%s received after %v: a gap", m.Cursor, prev)
		}
		got[m.Cursor] = true
		prev = pos
	}
	for _, p := range l.published {
		if !got[p.String()] {
			t.Errorf("publication %v was lost silently", p)
		}
	}
}

// The listening connection is killed on the shared server (only ours)
// while a client follows a channel and publications go on: the client
// receives every one, in order, without a reset.
func TestListenerKilledWhileFollowing(t *testing.T) {
	url := pgURL(t)
	pool := newPool(t, url)
	schema := testSchema(t, pool)
	n := newNode(t, pool, &pgbroker.Options{Schema: schema})
	channel := servertest.ChannelName(t)
	f := livetest.Connect(t, n.WS, channel)
	var l ledger
	l.published = append(l.published, n.Publish(t, channel, `"before"`))
	l.readUntil(t, f, l.published[0])

	pid := listenerPID(t, pool, schema)
	if _, err := pool.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for i := range 20 {
		l.published = append(l.published, n.Publish(t, channel, fmt.Sprint(i)))
	}
	l.readUntil(t, f, l.published[len(l.published)-1])
	t.Logf("the client had all %d publications %v after the kill", len(l.published)-1, time.Since(killed).Round(time.Millisecond))
	l.check(t)
	for _, m := range l.received {
		if m.Reset {
			t.Errorf("reset (%s): nothing was lost, so everything can be replayed", m.Reason)
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for n.Broker.Stats().Failures == 0 { // the listener may not have noticed yet if nothing was missed
		if time.Now().After(deadline) {
			t.Fatal("the broker did not count the lost connection")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
}

// The server crashes and restarts with its data while a client follows a
// channel. Publishing fails during the outage; once the server is back,
// the client receives again, and what it missed is replayed from history.
func TestServerRestart(t *testing.T) {
	srv := startCluster(t)
	n := newNode(t, newPool(t, srv.url()), &pgbroker.Options{StallTimeout: time.Second})
	channel := servertest.ChannelName(t)
	f := livetest.Connect(t, n.WS, channel)
	var l ledger
	l.published = append(l.published, n.Publish(t, channel, `"before"`))
	l.readUntil(t, f, l.published[0])

	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if pos, err := n.Hub.Publish(ctx, channel, json.RawMessage(`"during"`)); err == nil {
		t.Errorf("Publish while the server is down = %v, nil; want an error", pos)
	}

	srv.Start()
	restarted := time.Now()
	for i := range 5 {
		l.published = append(l.published, publishAgain(t, n, channel, fmt.Sprint(i)))
	}
	l.readUntil(t, f, l.published[len(l.published)-1])
	d := time.Since(restarted)
	l.check(t)
	if d > servertest.RecoverWithin {
		t.Errorf("the client received again %v after the server restarted, want within %v", d, servertest.RecoverWithin)
	}
	t.Logf("the client received again %v after the server restarted; broker %+v, hub %+v", d.Round(time.Millisecond), n.Broker.Stats(), n.Hub.Stats())
}

// The server stops answering (SIGSTOP of the postmaster and every
// backend, as a frozen VM would) without closing connections. Subscribe
// notices within about StallTimeout and returns an error, which the broker
// logs and counts, and the Hub too; publishing fails. When the server
// resumes, the Hub subscribes again and the client continues without a
// gap or a reset, because no data was lost.
func TestServerStall(t *testing.T) {
	const stall = time.Second
	// A short stall, and one of 3.5 s, during which the Hub's backoff grows.
	for _, hold := range []time.Duration{0, 3500 * time.Millisecond} {
		t.Run(hold.String(), func(t *testing.T) {
			srv := startCluster(t)
			logs := &logRecorder{t: t}
			n := newNode(t, newPool(t, srv.url()), &pgbroker.Options{StallTimeout: stall, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			channel := servertest.ChannelName(t)
			f := livetest.Connect(t, n.WS, channel)
			w := servertest.Watch(t, n.Broker, channel)
			w.Ready(t)
			var l ledger
			l.published = append(l.published, n.Publish(t, channel, `"before"`))
			l.readUntil(t, f, l.published[0])
			w.Next(t)

			resumed := servertest.Stall(t, srv.Process, n.Broker, w, channel, stall, hold)
			l.published = append(l.published, publishAgain(t, n, channel, `"after"`))
			// The publication attempted during the stall may have been taken (the
			// server reads it once it resumes), so the client sees it or not, but
			// nothing is skipped and nothing resets.
			l.readUntil(t, f, l.published[len(l.published)-1])
			d := time.Since(resumed)
			l.check(t)
			for _, m := range l.received {
				if m.Reset {
					t.Errorf("reset (%s) after the stall: nothing was lost", m.Reason)
				}
			}
			if d > servertest.RecoverWithin {
				t.Errorf("the client received again %v after the server resumed, want within %v", d, servertest.RecoverWithin)
			}
			if st := n.Broker.Stats(); st.Stalls == 0 {
				t.Errorf("broker stats %+v, want a stall counted", st)
			}
			if !strings.Contains(logs.String(), "stalled") {
				t.Errorf("the broker logged %q, want a warning about the stall", logs.String())
			}
			if st := n.Hub.Stats(); st.BrokerErrors == 0 || st.Resets != 0 {
				t.Errorf("Hub stats %+v, want broker errors counted and no resets", st)
			}
			t.Logf("the client received again %v after the server resumed; broker %+v", d.Round(time.Millisecond), n.Broker.Stats())
		})
	}
}

// The server is replaced by a fresh cluster on the same address, as after
// losing a disk: the broker makes its tables again, channels start new
// epochs, and the following client is reset and then receives again.
func TestFreshCluster(t *testing.T) {
	srv := startCluster(t)
	n := newNode(t, newPool(t, srv.url()), &pgbroker.Options{StallTimeout: time.Second})
	channel := servertest.ChannelName(t)
	f := livetest.Connect(t, n.WS, channel)
	var l ledger
	before := n.Publish(t, channel, `"before"`)
	l.published = append(l.published, before)
	l.readUntil(t, f, before)

	fresh := srv.initdb(t)
	srv.Kill()
	srv.data = fresh
	srv.Start()
	restarted := time.Now()
	for i := range 3 {
		l.published = append(l.published, publishAgain(t, n, channel, fmt.Sprint(i)))
	}
	l.readUntil(t, f, l.published[len(l.published)-1])
	d := time.Since(restarted)
	l.check(t)
	if after := l.published[1]; after.Epoch == before.Epoch {
		t.Errorf("publication on the fresh cluster at %v, in the epoch of %v", after, before)
	}
	var reset *liveclient.Message
	for i, m := range l.received {
		if m.Reset {
			reset = &l.received[i]
			break
		}
	}
	if reset == nil || reset.Reason != "epoch" {
		t.Errorf("messages after the loss: %+v, want a reset (epoch)", l.received)
	}
	if d > servertest.RecoverWithin {
		t.Errorf("the client received again %v after the fresh server started, want within %v", d, servertest.RecoverWithin)
	}
	t.Logf("the client was reset and received again %v after the fresh server started", d.Round(time.Millisecond))
}

// The network between a Hub and PostgreSQL is cut for 3.5 s, long enough
// for the Hub's backoff to grow, while another Hub goes on publishing.
// Once it heals, the first Hub finds the server back at once and its
// client receives again, with nothing lost.
func TestLinkCut(t *testing.T) {
	srv := startCluster(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, newPool(t, "postgres://postgres@"+link.Addr+"/postgres?sslmode=disable"), &pgbroker.Options{StallTimeout: time.Second})
	pub := newNode(t, newPool(t, srv.url()), &pgbroker.Options{})
	channel := servertest.ChannelName(t)
	s := servertest.OpenStream(t, cut.SSE+channel, "")
	servertest.ExpectRecoveredAfterCut(t, link, cut.Node, pub.Node, s, channel, 3500*time.Millisecond)
}

// A State's Hub is cut off PostgreSQL while another writes more than
// history holds: once the link heals it rebuilds the value from the
// snapshot.
func TestStateAfterLongCut(t *testing.T) {
	srv := startCluster(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, newPool(t, "postgres://postgres@"+link.Addr+"/postgres?sslmode=disable"), &pgbroker.Options{HistorySize: 16, StallTimeout: time.Second})
	pub := newNode(t, newPool(t, srv.url()), &pgbroker.Options{HistorySize: 16})
	servertest.ExpectStateRebuiltAfterCut(t, link, cut.Node, pub.Node, 40, 2500*time.Millisecond)
}

// PostgreSQL is out of reach of one node for 3 s while its Hub.Hook
// answers writes: every event reaches the clients of both nodes once it is
// back.
func TestHookEventsAfterOutage(t *testing.T) {
	srv := startCluster(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, newPool(t, "postgres://postgres@"+link.Addr+"/postgres?sslmode=disable"), &pgbroker.Options{StallTimeout: time.Second})
	other := newNode(t, newPool(t, srv.url()), &pgbroker.Options{})
	servertest.ExpectHookEventsAfterOutage(t, link, cut.Node, other.Node, 10, 3*time.Second)
}
