package redisbroker_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"testing"

	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait for Redis in these tests.
const waitTimeout = servertest.Timeout

// redisURL returns the URL of the shared Redis server, or skips t.
func redisURL(t testing.TB) string {
	t.Helper()
	return servertest.EnvURL(t, "LIVE_REDIS_URL", "Redis tests: cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test ./...")
}

// newClient returns a client configured as Open configures its own, then
// by configure, closed at the end of t after the cleanups registered
// after it.
func newClient(t testing.TB, url string, configure ...func(*redis.Options)) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	o.MaxRetries = -1
	o.ContextTimeoutEnabled = true
	o.ClientName = "livetest-" + servertest.RandomName()
	for _, f := range configure {
		f(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// testPrefix returns a key prefix that no other test or run uses, and
// deletes the keys under it when t ends.
func testPrefix(t testing.TB, c *redis.Client) string {
	t.Helper()
	prefix := "livetest:" + servertest.RandomName() + ":"
	t.Cleanup(func() { deleteKeys(t, c, prefix) })
	return prefix
}

// deleteKeys deletes the keys under prefix, as a Redis that lost its data.
func deleteKeys(t testing.TB, c *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("listing the keys under %s: %v", prefix, err)
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Errorf("deleting the keys under %s: %v", prefix, err)
		}
	}
}

// newBroker returns a broker on a new client to url, with its own key
// prefix, closed at the end of t.
func newBroker(t testing.TB, url string, opts *redisbroker.Options) (*redisbroker.Broker, *redis.Client, string) {
	t.Helper()
	c := newClient(t, url)
	o := redisbroker.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = testPrefix(t, c)
	}
	b := redisbroker.New(c, &o)
	servertest.CloseAtEnd(t, b)
	return b, c, o.Prefix
}

// A node is one server process of an application: a Hub on its own broker
// and Redis client, behind an HTTP server.
type node = servertest.BrokerNode[*redisbroker.Broker]

func newNode(t testing.TB, client *redis.Client, opts *redisbroker.Options) *node {
	t.Helper()
	return servertest.NewBrokerNode(t, redisbroker.New(client, opts))
}

// A server is a private redis-server, which the fault tests kill, stop
// and restart without disturbing the shared one.
type server struct{ *servertest.Process }

// startServer starts redis-server without persistence on a free port, or
// skips t if there is no redis-server. With a dir, the server loads and
// writes its RDB snapshot there, but snapshots only when told to (SAVE).
func startServer(t testing.TB, dir ...string) *server {
	t.Helper()
	return &server{startRedis(t, func(int) []string {
		args := []string{"--save", "", "--appendonly", "no", "--loglevel", "warning"}
		if len(dir) > 0 {
			args = append(args, "--dir", dir[0])
		}
		return args
	})}
}

// startRedis starts redis-server on a free port of 127.0.0.1, with the
// arguments that args returns for that port, and waits until it answers
// PING; or skips t if there is no redis-server.
func startRedis(t testing.TB, args func(port int) []string) *servertest.Process {
	t.Helper()
	redisURL(t) // the Redis tests run only when asked for
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	return servertest.StartProcess(t, servertest.ProcessOptions{
		Command: func(port int) *exec.Cmd {
			return exec.Command("redis-server", append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1"}, args(port)...)...)
		},
		Ready: func(ctx context.Context, port int) error {
			c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
			defer c.Close()
			return c.Ping(ctx).Err()
		},
	})
}

// url returns the server's URL. Killing the server loses its data: it
// keeps none on disk.
func (s *server) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.Port) }
