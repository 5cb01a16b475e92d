package redisbroker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait for Redis in these tests.
const waitTimeout = 10 * time.Second

// redisURL returns the URL of the shared Redis server, or skips t.
func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("LIVE_REDIS_URL")
	if u == "" {
		t.Skip("LIVE_REDIS_URL is not set; to run the Redis tests: cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test ./...")
	}
	return u
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
	o.ClientName = "livetest-" + randomName()
	for _, f := range configure {
		f(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func randomName() string { return strconv.FormatUint(rand.Uint64(), 36) }

// testPrefix returns a key prefix that no other test or run uses, and
// deletes the keys under it when t ends.
func testPrefix(t testing.TB, c *redis.Client) string {
	t.Helper()
	prefix := "livetest:" + randomName() + ":"
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
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, c, o.Prefix
}

// channelName returns a channel no other test uses.
func channelName(t testing.TB) string {
	return strings.NewReplacer("/", ":").Replace(t.Name()) + "-" + randomName()
}

func publish(t testing.TB, b live.Broker, channel, data string) live.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pos, err := b.Publish(ctx, channel, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%q, %s): %v", channel, data, err)
	}
	return pos
}

// A watcher runs one Subscribe call and records what the broker hands it.
type watcher struct {
	readyc chan live.Position
	msgs   chan live.Message
	done   chan error
	cancel context.CancelFunc
}

// watch calls b.Subscribe on a new goroutine, cancelled and waited for at
// the end of t.
func watch(t testing.TB, b live.Broker, channel string) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		readyc: make(chan live.Position, 1),
		msgs:   make(chan live.Message, 1<<14),
		done:   make(chan error, 1),
		cancel: cancel,
	}
	go func() {
		w.done <- b.Subscribe(ctx, channel,
			func(head live.Position) { w.readyc <- head },
			func(m live.Message) {
				select {
				case w.msgs <- m:
				default:
					panic("watcher: too many deliveries")
				}
			})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(waitTimeout):
			t.Errorf("Subscribe(%q) did not return after its context ended", channel)
		}
	})
	return w
}

func (w *watcher) ready(t testing.TB) live.Position {
	t.Helper()
	select {
	case head := <-w.readyc:
		return head
	case err := <-w.done:
		w.done <- err
		t.Fatalf("Subscribe returned %v before ready", err)
	case <-time.After(waitTimeout):
		t.Fatal("Subscribe did not call ready")
	}
	panic("unreachable")
}

func (w *watcher) next(t testing.TB) live.Message {
	t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case err := <-w.done:
		w.done <- err
		t.Fatalf("Subscribe returned %v while a delivery was awaited", err)
	case <-time.After(waitTimeout):
		t.Fatal("no delivery")
	}
	panic("unreachable")
}

// failure waits up to d for Subscribe to return, and returns its error.
func (w *watcher) failure(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err
		if err == nil {
			t.Fatal("Subscribe returned nil before its context ended")
		}
		return err
	case <-time.After(d):
		t.Fatalf("Subscribe still running after %v", d)
	}
	panic("unreachable")
}

// A node is one server process of an application: a Hub on its own broker
// and Redis client, behind an HTTP server.
type node struct {
	hub    *live.Hub
	broker *redisbroker.Broker
	url    string // the SSE handler's prefix: url + channel
}

func newNode(t testing.TB, client *redis.Client, opts *redisbroker.Options) *node {
	t.Helper()
	b := redisbroker.New(client, opts)
	t.Cleanup(func() { b.Close() })
	hub := live.NewHub(&live.Options{Broker: b, Logger: testLogger(t)})
	mux := http.NewServeMux()
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := hub.Close(ctx); err != nil {
			t.Errorf("Hub.Close: %v", err)
		}
	})
	return &node{hub: hub, broker: b, url: srv.URL + "/live/"}
}

func (n *node) publish(t testing.TB, channel, data string) live.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pos, err := n.hub.Publish(ctx, channel, json.RawMessage(data))
	if err != nil {
		t.Fatalf("Hub.Publish(%q, %s): %v", channel, data, err)
	}
	return pos
}

// testLogger logs to t, which shows the Hub's warnings with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// An event is one Server-Sent Event.
type event struct {
	ID, Event, Data string
}

// A stream reads Server-Sent Events from one response.
type stream struct {
	events chan event
	done   chan struct{} // closed when the reader has returned
	cancel context.CancelFunc
}

// openStream requests url with Last-Event-ID lastID (if not empty), and
// returns once the response headers arrived, so the subscription is
// registered. It is closed at the end of t.
func openStream(t testing.TB, url, lastID string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	s := &stream{events: make(chan event, 1<<12), done: make(chan struct{}), cancel: cancel}
	go s.read(resp.Body)
	t.Cleanup(s.close)
	return s
}

func (s *stream) read(body io.ReadCloser) {
	defer close(s.done)
	defer close(s.events)
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	var e event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if e.Data != "" || e.Event != "" { // bare id lines move the cursor only
				s.events <- e
			}
			e = event{}
		case strings.HasPrefix(line, "id: "):
			e.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.Data = line[6:]
		}
	}
}

// close disconnects, as a browser tab that goes away.
func (s *stream) close() {
	s.cancel()
	<-s.done
}

func (s *stream) next(t testing.TB) event {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended while an event was awaited")
		}
		return e
	case <-time.After(waitTimeout):
		t.Fatal("no event")
	}
	panic("unreachable")
}

// A server is a private redis-server, which the fault tests kill, stop
// and restart without disturbing the shared one.
type server struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// startServer starts redis-server without persistence on a free port, or
// skips t if there is no redis-server.
func startServer(t testing.TB) *server {
	t.Helper()
	redisURL(t) // the Redis tests run only when asked for
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	s.start()
	t.Cleanup(func() {
		if s.cmd != nil {
			s.kill()
		}
	})
	return s
}

func (s *server) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port) }

// start runs redis-server and waits until it answers PING.
func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on port %d did not start: %v", s.port, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the server to come up
	}
}

// kill ends the server as a crash would: no persistence, so its data is lost.
func (s *server) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

func (s *server) stop() { s.signal(syscall.SIGSTOP) }
func (s *server) cont() { s.signal(syscall.SIGCONT) }

func (s *server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// checkContiguous reports events whose cursors do not follow the one
// before, starting after cursor.
func checkContiguous(t *testing.T, cursor string, events []event) {
	t.Helper()
	prev, err := live.ParseCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		pos, err := live.ParseCursor(e.ID)
		if err != nil || pos.Epoch != prev.Epoch || pos.Seq != prev.Seq+1 {
			t.Errorf("event %q after %v: not the next position", e.ID, prev)
		}
		prev = pos
	}
}
