package outbox_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
)

// blockPub passes publications on to a Hub and, after k of them, says so
// and blocks in the next, before anything is marked delivered.
type blockPub struct {
	hub *live.Hub
	k   int
	n   int
}

func (p *blockPub) Publish(ctx context.Context, channel string, v any) (live.Position, error) {
	if p.n == p.k {
		fmt.Println("published")
		select {}
	}
	pos, err := p.hub.Publish(ctx, channel, v)
	if err == nil {
		p.n++
	}
	return pos, err
}

// runRedisRelay is the child of TestRelayKilledMidBatchRedis: a relay
// publishing through a Hub of its own on Redis.
func runRedisRelay(ob *outbox.Outbox, n int) error {
	b, err := redisbroker.Open(os.Getenv("LIVE_REDIS_URL"), &redisbroker.Options{Prefix: os.Getenv("OUTBOX_PREFIX")})
	if err != nil {
		return err
	}
	hub := live.NewHub(&live.Options{Broker: b})
	k, _ := strconv.Atoi(os.Getenv("OUTBOX_K"))
	r := ob.NewRelay(&blockPub{hub: hub, k: k}, outbox.RelayOptions{Lease: 2 * time.Second, Batch: n})
	return r.Run(context.Background())
}

// End to end over Redis, across processes: a relay publishing through its
// node's Hub is SIGKILLed mid-batch; another node's relay takes over and
// publishes the batch again through its own Hub, and subscribers of a
// third see each publication once, in order.
func TestRelayKilledMidBatchRedis(t *testing.T) {
	url := os.Getenv("LIVE_REDIS_URL")
	if url == "" {
		t.Skip("needs LIVE_REDIS_URL")
	}
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		prefix := "outboxtest:" + randHex(4) + ":"
		const n, k = 30, 12
		for i := 1; i <= n; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		sub, err := redisbroker.Open(url, &redisbroker.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Close() })
		t.Cleanup(func() { dropKeys(t, url, prefix) })
		s := subscribe(t, sub, "todos")

		cmd, out := child(t, "relay-redis", childEnv(d, ob, "todos", n, "OUTBOX_PREFIX="+prefix, "OUTBOX_K="+strconv.Itoa(k))...)
		expectLine(t, out, "published")
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if got := len(s.wait(t, k, 10*time.Second)); got != k {
			t.Fatalf("%d deliveries before the kill, want %d", got, k)
		}

		b, err := redisbroker.Open(url, &redisbroker.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		hub := live.NewHub(&live.Options{Broker: b, Logger: quietLogger(t)})
		t.Cleanup(func() { hub.Close(context.Background()); b.Close() })
		r, _ := runRelay(t, ob, hub, outbox.RelayOptions{Lease: time.Second, PollMin: 10 * time.Millisecond, PollMax: 100 * time.Millisecond})
		checkOnceInOrder(t, s.wait(t, n, 30*time.Second), n)
		waitUntil(t, 10*time.Second, "the relay to mark all delivered", func() bool { return r.Stats().Delivered == n && r.Stats().Pending == 0 })
		if got := s.count(); got != n {
			t.Fatalf("%d deliveries, want %d", got, n)
		}
	})
}

// dropKeys deletes the Redis keys under prefix.
func dropKeys(t testing.TB, url, prefix string) {
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Error(err)
		return
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}
