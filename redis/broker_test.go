package redisbroker_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

// The suite runs with both protocols go-redis speaks: replies to the Lua
// scripts and pub/sub messages are shaped differently in RESP2 and RESP3.
func TestConformance(t *testing.T) {
	url := redisURL(t)
	for _, protocol := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", protocol), func(t *testing.T) {
			brokertest.Run(t, brokertest.Config{
				New: func(t *testing.T) live.Broker {
					c := newClient(t, url, func(o *redis.Options) { o.Protocol = protocol })
					return redisbroker.New(c, &redisbroker.Options{HistorySize: 64, Prefix: testPrefix(t, c)})
				},
				HistorySize: 64,
			})
		})
	}
}

// A broker that keeps no history still numbers and delivers everything,
// large publications included, which it then announces inline.
func TestConformanceWithoutHistory(t *testing.T) {
	url := redisURL(t)
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			c := newClient(t, url)
			return redisbroker.New(c, &redisbroker.Options{HistorySize: -1, Prefix: testPrefix(t, c)})
		},
	})
}

// Processes of one application, each with its own Hub and client, share
// the numbering, and a client resumes on any of them with exactly what it
// missed, or a reset when that is older than the history or was lost.
func TestNodes(t *testing.T) {
	url := redisURL(t)
	c := newClient(t, url)
	prefix := testPrefix(t, c)
	brokertest.RunNodes(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			return redisbroker.New(newClient(t, url), &redisbroker.Options{HistorySize: 16, Prefix: prefix})
		},
		HistorySize: 16,
		LoseData:    func(t *testing.T) { deleteKeys(t, c, prefix) },
		Cut: func(t *testing.T) (live.Broker, func()) {
			p := servertest.NewProxy(t, servertest.HostOf(t, url))
			return redisbroker.New(newClient(t, servertest.ViaProxy(t, url, p)), &redisbroker.Options{HistorySize: 16, Prefix: prefix}), p.Cut
		},
	})
}

// The key layout is documented, because operators look at it: a hash and
// a stream per channel, under the prefix, in one hash tag, the stream
// trimmed to exactly HistorySize entries whose ids are the Seqs.
func TestKeys(t *testing.T) {
	url := redisURL(t)
	b, c, prefix := newBroker(t, url, &redisbroker.Options{HistorySize: 8})
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	var last live.Position
	for i := range 10 {
		last = servertest.Publish(t, b, channel, fmt.Sprint(i))
	}
	head := prefix + "{" + channel + "}:head"
	log := prefix + "{" + channel + "}:log"

	got, err := c.HGetAll(ctx, head).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strconv.ParseInt(got["old"], 10, 64); err != nil {
		t.Errorf("HGETALL %s: old is %q, want a time in ms", head, got["old"])
	}
	delete(got, "old")
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, runID, _ := strings.Cut(info, "run_id:")
	runID, _, _ = strings.Cut(runID, "\r\n")
	if diff := cmp.Diff(map[string]string{"epoch": last.Epoch, "seq": "10", "run": runID}, got); diff != "" {
		t.Errorf("HGETALL %s (-want +got):\n%s", head, diff)
	}
	entries, err := c.XRange(ctx, log, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids, data []string
	for _, e := range entries {
		ids = append(ids, e.ID)
		data = append(data, e.Values["d"].(string))
	}
	wantIDs := []string{"3-0", "4-0", "5-0", "6-0", "7-0", "8-0", "9-0", "10-0"}
	if diff := cmp.Diff(wantIDs, ids); diff != "" {
		t.Errorf("stream ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"2", "3", "4", "5", "6", "7", "8", "9"}, data); diff != "" {
		t.Errorf("stream data (-want +got):\n%s", diff)
	}
	// Publications without an idempotency key leave no keys behind
	// (publishkey_test.go has the keyed ones).
	if n := c.Exists(ctx, prefix+"{"+channel+"}:keys").Val(); n != 0 {
		t.Errorf("%s exists, with no keyed publication", prefix+"{"+channel+"}:keys")
	}
	// Idle channels are forgotten: history after HistoryAge, the head after
	// a day.
	if ttl := c.PTTL(ctx, log).Val(); ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("PTTL %s = %v, want the default HistoryAge, 10m", log, ttl)
	}
	if ttl := c.PTTL(ctx, head).Val(); ttl <= 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("PTTL %s = %v, want 24h", head, ttl)
	}
	if slot := c.ClusterKeySlot(ctx, head).Val(); slot != c.ClusterKeySlot(ctx, log).Val() {
		t.Errorf("%s and %s are in different cluster slots", head, log)
	}
}

// HistoryAge drops publications by Redis's clock, both in Since (at once)
// and from the stream (on the next publication).
func TestHistoryAge(t *testing.T) {
	url := redisURL(t)
	b, c, prefix := newBroker(t, url, &redisbroker.Options{HistoryAge: 50 * time.Millisecond})
	channel := servertest.ChannelName(t)
	first := servertest.Publish(t, b, channel, `1`)
	servertest.Publish(t, b, channel, `2`)
	start := live.Position{Epoch: first.Epoch}

	servertest.AwaitGone(t, b, channel, start)
	third := servertest.Publish(t, b, channel, `3`)
	got, err := b.Since(t.Context(), channel, live.Position{Epoch: first.Epoch, Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]live.Message{{Channel: channel, Pos: third, Data: []byte(`3`)}}, got); diff != "" {
		t.Errorf("Since the last expired publication (-want +got):\n%s", diff)
	}
	if n := c.XLen(t.Context(), prefix+"{"+channel+"}:log").Val(); n != 1 {
		t.Errorf("the stream holds %d entries after expiry, want 1", n)
	}
}

// Announcements out of turn end the subscription instead of being
// skipped: the Hub then catches up from history or resets its clients.
func TestAnnouncementsOutOfTurn(t *testing.T) {
	url := redisURL(t)
	for _, tt := range []struct {
		name, announce, want string // announce: the message, with %s for the epoch
	}{
		{"Gap", "%s 3 d3", "missing"},
		{"OtherEpoch", "x%s 2 d2", "epoch changed"},
		{"Malformed", "%s two d2", "malformed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, c, prefix := newBroker(t, url, nil)
			channel := servertest.ChannelName(t)
			head := servertest.Publish(t, b, channel, `1`)
			w := servertest.Watch(t, b, channel)
			w.Ready(t)
			// A stale repeat is ignored; the next one is out of turn.
			pubsub := prefix + "{" + channel + "}:pub"
			c.Publish(t.Context(), pubsub, head.Epoch+" 1 d1")
			c.Publish(t.Context(), pubsub, fmt.Sprintf(tt.announce, head.Epoch))
			w.ExpectFailed(t, tt.want)
		})
	}
}

// A node following more channels at once than may await confirmation
// sends the rest as confirmations come: every follow becomes ready and
// delivers, stopped follows unsubscribe, and following again works.
func TestFollowBeyondWindow(t *testing.T) {
	redisbroker.SetMaxUnconfirmed(t, 16)
	b, _, _ := newBroker(t, redisURL(t), nil)
	base := servertest.ChannelName(t)
	for round := range 2 {
		const n = 300
		var ready, delivered sync.WaitGroup
		ready.Add(n)
		delivered.Add(n)
		failed := make(chan error, n)
		stops := make([]func(), n)
		for i := range n {
			stop, err := b.Follow(base+"-"+strconv.Itoa(i), func(live.Position) { ready.Done() },
				func(live.Message) { delivered.Done() }, func(err error) { failed <- err })
			if err != nil {
				t.Fatal(err)
			}
			stops[i] = stop
		}
		waitAll(t, &ready, failed, "ready")
		for i := range n {
			servertest.Publish(t, b, base+"-"+strconv.Itoa(i), strconv.Itoa(round))
		}
		waitAll(t, &delivered, failed, "delivered")
		for _, stop := range stops {
			stop()
		}
	}
}

// waitAll waits for wg, failing t if an error comes first or it takes
// too long.
func waitAll(t *testing.T, wg *sync.WaitGroup, failed <-chan error, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case err := <-failed:
		t.Fatalf("a follow ended before all were %s: %v", what, err)
	case <-time.After(waitTimeout):
		t.Fatalf("not all follows %s within %v", what, waitTimeout)
	}
}

// go-redis reconnects pub/sub connections silently. The broker must notice
// that announcements may have been lost while it was disconnected.
func TestPubSubReconnectEndsSubscriptions(t *testing.T) {
	url := redisURL(t)
	b, c, _ := newBroker(t, url, nil)
	channel := servertest.ChannelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)

	// Kill our own pub/sub connection only: the server is shared.
	name := c.Options().ClientName
	list, err := c.ClientList(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if !hasField(f, "name="+name) || hasField(f, "sub=0") {
			continue
		}
		for _, kv := range f {
			if id, ok := strings.CutPrefix(kv, "id="); ok {
				if err := c.Do(t.Context(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				killed++
			}
		}
	}
	if killed != 1 {
		t.Fatalf("found %d pub/sub connections named %s, want 1:\n%s", killed, name, list)
	}
	missed := servertest.Publish(t, b, channel, `"while disconnected"`)
	if err := w.Failure(t, waitTimeout); !strings.Contains(err.Error(), "pub/sub connection") {
		t.Errorf("Subscribe = %v, want an error about the connection", err)
	}

	// As the Hub does: subscribe again, catch up from history.
	servertest.CatchUp(t, b, channel, head, missed)
}

func hasField(fields []string, f string) bool {
	for _, x := range fields {
		if x == f {
			return true
		}
	}
	return false
}

func TestOpen(t *testing.T) {
	url := redisURL(t)
	prefix := "livetest:" + servertest.RandomName() + ":"
	b, err := redisbroker.Open(url, &redisbroker.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	channel := servertest.ChannelName(t)
	pos := servertest.Publish(t, b, channel, `1`)
	if got, err := b.Since(t.Context(), channel, live.Position{Epoch: pos.Epoch}); err != nil || len(got) != 1 {
		t.Errorf("Since = %v, %v", got, err)
	}
	// Clean up with a client of our own: Close closes the broker's.
	c := newClient(t, url)
	c.Del(t.Context(), prefix+"{"+channel+"}:head", prefix+"{"+channel+"}:log")
	servertest.ExpectClosed(t, b, channel)

	if _, err := redisbroker.Open("http://example.com", nil); err == nil {
		t.Error("Open with an http URL succeeded")
	}
}

// A client passed to New stays the caller's.
func TestCloseLeavesClientOpen(t *testing.T) {
	url := redisURL(t)
	c := newClient(t, url)
	b := redisbroker.New(c, &redisbroker.Options{Prefix: testPrefix(t, c)})
	servertest.Publish(t, b, servertest.ChannelName(t), `1`)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("the client after Close: %v", err)
	}
}

func TestNewPanicsOnBadPrefix(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Prefix") {
			t.Errorf("recovered %v, want a panic about the prefix", r)
		}
	}()
	c := redis.NewClient(&redis.Options{})
	defer c.Close()
	redisbroker.New(c, &redisbroker.Options{Prefix: "app:{x}:"})
}
