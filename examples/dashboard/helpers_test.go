package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	pgbroker "github.com/go-live/live/postgres"
	redisbroker "github.com/go-live/live/redis"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait in these tests.
const waitTimeout = servertest.Timeout

// A node is one dashboard process: an app behind an HTTP server.
type node struct {
	t   testing.TB
	app *app
	url string
}

// newNode starts a node, closed at the end of t.
func newNode(t testing.TB, o appOptions) *node {
	t.Helper()
	if o.Logger == nil {
		o.Logger = servertest.Logger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	a, err := newApp(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Errorf("closing the app: %v", err)
		}
		srv.Close()
	})
	return &node{t: t, app: a, url: srv.URL}
}

// do sends a request with a JSON body (none if body is "") and returns
// the status and the body.
func (n *node) do(method, path, body string, header ...string) (int, string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, n.url+path, strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// getJSON decodes the JSON answer to a GET of path into v.
func (n *node) getJSON(path string, v any) {
	n.t.Helper()
	status, body := n.do("GET", path, "")
	if status != http.StatusOK {
		n.t.Fatalf("GET %s: %d %s", path, status, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		n.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// add posts an activity and returns the created entry.
func (n *node) add(message string) activity {
	n.t.Helper()
	status, body := n.do("POST", "/api/activity", `{"message":`+strconv.Quote(message)+`}`)
	if status != http.StatusCreated {
		n.t.Fatalf("POST /api/activity: %d %s", status, body)
	}
	var a activity
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		n.t.Fatal(err)
	}
	return a
}

// feedIDs returns the ids GET /api/activity lists, in order.
func (n *node) feedIDs() []string {
	n.t.Helper()
	var items []activity
	n.getJSON("/api/activity", &items)
	ids := make([]string, len(items))
	for i, a := range items {
		ids[i] = a.ID
	}
	return ids
}

// eventually polls cond until it holds, failing t after waitTimeout.
// Nodes apply what other nodes published on their own subscription, so
// there is no response to wait for.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

// A backend is a shared broker the multi-node tests run on. shared
// returns a function that opens a broker as each node of one dashboard
// would: all of them keep their data under one name that no other test or
// run uses, removed at the end of t. The brokers are closed at the end of
// t too. It skips t when the backend's service is not configured.
type backend struct {
	name   string
	shared func(t testing.TB) func() live.Broker
}

var backends = []backend{
	{"redis", redisShared},
	{"nats", natsShared},
	{"postgres", postgresShared},
}

// forEachBackend runs test as a subtest on each backend.
func forEachBackend(t *testing.T, test func(t *testing.T, open func() live.Broker)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.shared(t)) })
	}
}

// closeAtEnd closes b at the end of t.
func closeAtEnd(t testing.TB, b interface{ Close() error }) {
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing the broker: %v", err)
		}
	})
}

func redisShared(t testing.TB) func() live.Broker {
	t.Helper()
	url, prefix := redisSetup(t)
	return func() live.Broker {
		t.Helper()
		b, err := redisbroker.Open(url, &redisbroker.Options{Prefix: prefix, HistoryAge: -1})
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, b)
		return b
	}
}

// redisSetup returns the Redis URL and a key prefix of the test's own,
// whose keys are deleted when t ends.
func redisSetup(t testing.TB) (url, prefix string) {
	t.Helper()
	url = os.Getenv("LIVE_REDIS_URL")
	if url == "" {
		t.Skip("LIVE_REDIS_URL is not set; to run the multi-node tests on Redis: cd examples/dashboard && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -race ./...")
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	prefix = "dashboardtest:" + servertest.RandomName() + ":"
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		var keys []string
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return url, prefix
}

func natsShared(t testing.TB) func() live.Broker {
	t.Helper()
	url := os.Getenv("LIVE_NATS_URL")
	if url == "" {
		t.Skip("LIVE_NATS_URL is not set; to run the multi-node tests on NATS: cd examples/dashboard && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -race ./...")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	stream := "dashboardtest_" + servertest.RandomName()
	t.Cleanup(func() {
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := js.DeleteStream(ctx, stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("deleting stream %s: %v", stream, err)
		}
	})
	return func() live.Broker {
		t.Helper()
		b, err := natsbroker.Open(url, &natsbroker.Options{Prefix: stream, HistoryAge: -1, Logger: servertest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, b)
		return b
	}
}

func postgresShared(t testing.TB) func() live.Broker {
	t.Helper()
	url := os.Getenv("LIVE_POSTGRES_URL")
	if url == "" {
		t.Skip("LIVE_POSTGRES_URL is not set; to run the multi-node tests on PostgreSQL: cd examples/dashboard && LIVE_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go test -race ./...")
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	schema := "dashboardtest_" + servertest.RandomName()
	t.Cleanup(func() {
		defer pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return func() live.Broker {
		t.Helper()
		b, err := pgbroker.Open(url, &pgbroker.Options{Schema: schema, HistoryAge: -1, Logger: servertest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, b)
		return b
	}
}
