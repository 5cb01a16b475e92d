package redisbroker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
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
	if e := s.Next(t); e.ID != before.String() {
		t.Fatalf("event %+v, want %v", e, before)
	}

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
	srv := startServer(t)
	n := newNode(t, newClient(t, srv.url()), &redisbroker.Options{StallTimeout: stall})
	channel := servertest.ChannelName(t)
	s := servertest.OpenStream(t, n.SSE+channel, "")
	w := servertest.Watch(t, n.broker, channel)
	w.Ready(t)
	before := n.Publish(t, channel, `"before"`)
	if e := s.Next(t); e.ID != before.String() {
		t.Fatalf("event %+v, want %v", e, before)
	}

	resumed := servertest.Stall(t, srv.Process, n.broker, w, channel, stall)
	servertest.ExpectContinued(t, n.Node, s, channel, before, resumed)
}
