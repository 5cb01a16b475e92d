package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
)

// Redis crashes and restarts without persistence while a client reads a
// stream. Publishing fails during the outage; once Redis is back, the
// client is told to refetch (the data, and with it the numbering, is
// lost) and then receives publications again.
func TestRedisRestart(t *testing.T) {
	srv := startServer(t)
	n := newNode(t, newClient(t, srv.url()), &redisbroker.Options{StallTimeout: time.Second})
	channel := servertest.ChannelName(t)
	s := servertest.OpenStream(t, n.SSE+channel, "")
	before := n.Publish(t, channel, `"before"`)
	s.ExpectNext(t, before)

	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if pos, err := n.Hub.Publish(ctx, channel, json.RawMessage(`"during"`)); err == nil {
		t.Errorf("Publish while Redis is down = %v, nil; want an error", pos)
	}

	srv.Start()
	restarted := time.Now()
	// Published before or after the Hub notices: either way the client
	// gets it or a reset past it.
	early := n.Publish(t, channel, `"early"`)
	servertest.ExpectEpochReset(t, n.Node, s, channel, early)
	if d := time.Since(restarted); d > servertest.RecoverWithin {
		t.Errorf("the client received again %v after Redis restarted, want within %v", d, servertest.RecoverWithin)
	}
	t.Logf("the client received again %v after Redis restarted", time.Since(restarted).Round(time.Millisecond))
}

// Redis stops answering (SIGSTOP, as a frozen VM or a long fork would)
// without closing connections. Subscribe notices within about
// StallTimeout and returns an error, which the Hub logs and counts; when
// Redis resumes, the Hub subscribes again and clients continue without a
// gap or a reset, because no data was lost.
func TestRedisStall(t *testing.T) {
	const stall = time.Second
	// A short stall, and one of 3.5 s, during which the Hub's backoff grows.
	for _, hold := range []time.Duration{0, 3500 * time.Millisecond} {
		t.Run(hold.String(), func(t *testing.T) {
			srv := startServer(t)
			n := newNode(t, newClient(t, srv.url()), &redisbroker.Options{StallTimeout: stall})
			channel := servertest.ChannelName(t)
			s := servertest.OpenStream(t, n.SSE+channel, "")
			w := servertest.Watch(t, n.Broker, channel)
			w.Ready(t)
			before := n.Publish(t, channel, `"before"`)
			s.ExpectNext(t, before)

			resumed := servertest.Stall(t, srv.Process, n.Broker, w, channel, stall, hold)
			servertest.ExpectContinued(t, n.Node, s, channel, before, resumed)
		})
	}
}

// Redis crashes and restarts from a snapshot older than its latest
// publication, which a client received: as after a failover to a replica
// that missed it, the numbers after the snapshot's were handed out once
// already, so the channel starts a new epoch instead of handing them out
// again, and clients reset.
func TestRedisRestartFromOlderSnapshot(t *testing.T) {
	srv := startServer(t, t.TempDir())
	b := redisbroker.New(newClient(t, srv.url()), &redisbroker.Options{StallTimeout: time.Second})
	t.Cleanup(func() { b.Close() })
	n := servertest.NewNode(t, b, nil)
	channel := servertest.ChannelName(t)
	s := servertest.OpenStream(t, n.SSE+channel, "")
	kept := n.Publish(t, channel, `"kept"`)
	s.ExpectNext(t, kept)
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", srv.Port), MaxRetries: -1})
	if err := c.Save(t.Context()).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	c.Close()
	lost := n.Publish(t, channel, `"lost"`)
	s.ExpectNext(t, lost)
	srv.Kill()
	failed := time.Now()
	srv.Start()
	expectRolledBack(t, n, s, channel, kept, lost, failed)
}

// The network between a Hub and Redis is cut for 3.5 s, long enough for
// the Hub's backoff to grow, while another Hub goes on publishing. Once it
// heals, the first Hub finds Redis back at once and its client receives
// again, with nothing lost.
func TestLinkCut(t *testing.T) {
	srv := startServer(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, newClient(t, "redis://"+link.Addr+"/0"), &redisbroker.Options{StallTimeout: time.Second})
	pub := newNode(t, newClient(t, srv.url()), nil)
	channel := servertest.ChannelName(t)
	s := servertest.OpenStream(t, cut.SSE+channel, "")
	servertest.ExpectRecoveredAfterCut(t, link, cut.Node, pub.Node, s, channel, 3500*time.Millisecond)
}

// A State's Hub is cut off Redis while another writes more than history
// holds: once the link heals it rebuilds the value from the snapshot.
func TestStateAfterLongCut(t *testing.T) {
	srv := startServer(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	opts := &redisbroker.Options{HistorySize: 16, StallTimeout: time.Second}
	cut := newNode(t, newClient(t, "redis://"+link.Addr+"/0"), opts)
	pub := newNode(t, newClient(t, srv.url()), opts)
	servertest.ExpectStateRebuiltAfterCut(t, link, cut.Node, pub.Node, 40, 2500*time.Millisecond)
}

// Redis is out of reach of one node for 3 s while its Hub.Hook answers
// writes: every event reaches the clients of both nodes once it is back.
func TestHookEventsAfterOutage(t *testing.T) {
	srv := startServer(t)
	link := servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	cut := newNode(t, newClient(t, "redis://"+link.Addr+"/0"), &redisbroker.Options{StallTimeout: time.Second})
	other := newNode(t, newClient(t, srv.url()), nil)
	servertest.ExpectHookEventsAfterOutage(t, link, cut.Node, other.Node, 10, 3*time.Second)
}
