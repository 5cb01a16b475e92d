package natsbroker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
	natsbroker "github.com/go-live/live/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait for NATS in these tests.
const waitTimeout = 10 * time.Second

// natsURL returns the URL of the shared NATS server, or skips t.
func natsURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("LIVE_NATS_URL")
	if u == "" {
		t.Skip("LIVE_NATS_URL is not set; to run the NATS tests: cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test ./...")
	}
	return u
}

// connect returns a connection configured as Open configures its own,
// closed at the end of t after the cleanups registered after it.
func connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{
		nats.Name("livetest"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectBufSize(-1),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func randomName() string { return strconv.FormatUint(rand.Uint64(), 36) }

// testPrefix returns a stream name and subject prefix that no other test
// or run uses, and deletes the stream from the server at url when t ends,
// on a connection of its own: the test may have broken its own.
func testPrefix(t testing.TB, url string) string {
	t.Helper()
	prefix := "livetest_" + randomName()
	t.Cleanup(func() { deleteStream(t, url, prefix) })
	return prefix
}

// deleteStream deletes the stream of prefix from the server at url, as a
// server that lost its data, on a connection of its own.
func deleteStream(t testing.TB, url, prefix string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Errorf("deleting stream %s: %v", prefix, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, prefix); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("deleting stream %s: %v", prefix, err)
	}
}

// newBroker returns a broker on a new connection to url, with its own
// prefix, closed at the end of t.
func newBroker(t testing.TB, url string, opts *natsbroker.Options) (*natsbroker.Broker, *nats.Conn, string) {
	t.Helper()
	nc := connect(t, url)
	o := natsbroker.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = testPrefix(t, url)
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	b := natsbroker.New(nc, &o)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, nc, o.Prefix
}

// channelName returns a channel no other test uses, with a dot and an
// equals sign, which must be escaped in subjects.
func channelName(t testing.TB) string {
	name := strings.NewReplacer("/", ":").Replace(t.Name()) + ".x=" + randomName()
	if len(name) > live.MaxChannelLen {
		name = name[len(name)-live.MaxChannelLen:]
	}
	return name
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
// and NATS connection, behind an HTTP server.
type node struct {
	hub    *live.Hub
	broker *natsbroker.Broker
	url    string // the SSE handler's prefix: url + channel
}

func newNode(t testing.TB, nc *nats.Conn, opts *natsbroker.Options) *node {
	t.Helper()
	o := *opts
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	b := natsbroker.New(nc, &o)
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

// testLogger logs to t, which shows warnings with -v.
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

// checkContiguous reports events whose cursors do not follow the one
// before, starting after cursor.
func checkContiguous(t testing.TB, cursor string, events []event) {
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

// A server is a private nats-server with JetStream, which the fault tests
// kill, stop and restart without disturbing the shared one.
type server struct {
	t     testing.TB
	port  int
	store string
	cmd   *exec.Cmd
}

// natsServer is the binary the fault tests run.
const natsServer = "/usr/sbin/nats-server"

// startServer starts nats-server with JetStream on a free port, storing
// in a directory of t, or skips t if there is no nats-server.
func startServer(t testing.TB) *server {
	t.Helper()
	natsURL(t) // the NATS tests run only when asked for
	if _, err := os.Stat(natsServer); err != nil {
		t.Skipf("%s is not installed", natsServer)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, port: l.Addr().(*net.TCPAddr).Port, store: t.TempDir()}
	l.Close()
	s.start()
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cont() // in case the test stopped it
			s.kill()
		}
	})
	return s
}

func (s *server) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// start runs nats-server and waits until JetStream answers.
func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command(natsServer, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.store)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		err := s.ping()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nats-server on port %d did not start: %v", s.port, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the server to come up
	}
}

func (s *server) ping() error {
	nc, err := nats.Connect(s.url(), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// kill ends the server as a crash would. What it stored stays in its
// store directory.
func (s *server) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// wipe empties the store, as a server that lost its disk.
func (s *server) wipe() {
	s.t.Helper()
	if err := os.RemoveAll(s.store); err != nil {
		s.t.Fatal(err)
	}
	if err := os.MkdirAll(s.store, 0o755); err != nil {
		s.t.Fatal(err)
	}
}

func (s *server) stop() { s.signal(syscall.SIGSTOP) }
func (s *server) cont() { s.signal(syscall.SIGCONT) }

func (s *server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}
