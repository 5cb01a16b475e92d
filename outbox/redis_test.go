package outbox_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
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

// The broker down for 10 s, for real: a private Redis (appending every
// write to disk before it answers) is paused while the application keeps
// committing. Once it answers again, the relay delivers what was
// committed meanwhile, each publication once, in commit order, behind
// the ones before the outage.
func TestBrokerDownRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	if os.Getenv("LIVE_REDIS_URL") == "" {
		t.Skip("needs LIVE_REDIS_URL")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	dir := t.TempDir()
	srv := servertest.StartProcess(t, servertest.ProcessOptions{
		Command: func(port int) *exec.Cmd {
			return exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir, "--loglevel", "warning")
		},
		Ready: func(ctx context.Context, port int) error {
			c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
			defer c.Close()
			return c.Ping(ctx).Err()
		},
	})
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", srv.Port)

	// The one database is enough: what is tested is the broker's outage.
	d := databases(t)
	db, ob := open(t, d[len(d)-1])
	b, err := redisbroker.Open(url, &redisbroker.Options{StallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hub := live.NewHub(&live.Options{Broker: b, Logger: quietLogger(t), WriteTimeout: time.Second})
	t.Cleanup(func() { hub.Close(context.Background()); b.Close() })
	r, _ := runRelay(t, ob, hub, outbox.RelayOptions{Lease: 2 * time.Second, PollMin: 10 * time.Millisecond, PollMax: 200 * time.Millisecond})

	const n = 40
	for i := 1; i <= 5; i++ {
		publishTx(t, db, ob, "todos", map[string]int{"i": i})
	}
	waitUntil(t, 10*time.Second, "the first five delivered", func() bool { return r.Stats().Delivered == 5 })

	srv.Stop()
	up := time.Now().Add(10 * time.Second)
	for i := 6; i <= n; i++ {
		publishTx(t, db, ob, "todos", map[string]int{"i": i})
	}
	time.Sleep(time.Until(up)) // the outage itself
	if st := r.Stats(); st.Delivered != 5 || st.Pending == 0 {
		t.Errorf("during the outage: %+v; want 5 delivered and the rest pending", st)
	}
	srv.Cont()

	waitUntil(t, 30*time.Second, "all delivered", func() bool {
		st := r.Stats()
		return st.Delivered >= n && st.Pending == 0
	})
	// What the broker holds is what every subscriber reads, live or
	// resuming: each publication once, in order.
	msgs, err := b.Since(context.Background(), "todos", live.Position{Epoch: headOf(t, hub, "todos").Epoch})
	if err != nil {
		t.Fatal(err)
	}
	checkOnceInOrder(t, msgs, n)
}

// headOf returns channel's head on hub.
func headOf(t testing.TB, hub *live.Hub, channel string) live.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pos, err := hub.Head(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}
