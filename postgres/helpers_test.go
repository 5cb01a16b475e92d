package pgbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/liveclient"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait for PostgreSQL in these tests.
const waitTimeout = 10 * time.Second

// pgURL returns the URL of the shared PostgreSQL server, or skips t.
func pgURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("LIVE_POSTGRES_URL")
	if u == "" {
		t.Skip("LIVE_POSTGRES_URL is not set; to run the PostgreSQL tests: cd postgres && LIVE_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go test ./...")
	}
	return u
}

// newPool returns a pool on url, closed at the end of t after the
// cleanups registered after it.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func randomName() string { return strconv.FormatUint(rand.Uint64(), 36) }

// testSchema returns a schema name that no other test or run uses, and
// drops the schema when t ends.
func testSchema(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	schema := "livetest_" + randomName()
	t.Cleanup(func() {
		if err := dropSchema(pool, schema); err != nil {
			t.Logf("dropping schema %s: %v", schema, err)
		}
	})
	return schema
}

// dropSchema drops schema and the broker's tables in it, as a server that
// lost its data.
func dropSchema(pool *pgxpool.Pool, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	return err
}

// newBroker returns a broker on a new pool to url, with its own schema,
// closed at the end of t.
func newBroker(t testing.TB, url string, opts *pgbroker.Options) (*pgbroker.Broker, *pgxpool.Pool, string) {
	t.Helper()
	pool := newPool(t, url)
	o := pgbroker.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Schema == "" {
		o.Schema = testSchema(t, pool)
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	b := pgbroker.New(pool, &o)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, pool, o.Schema
}

// channelName returns a channel no other test uses.
func channelName(t testing.TB) string {
	name := strings.NewReplacer("/", ":").Replace(t.Name()) + "-" + randomName()
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
		t.Fatalf("Publish(%q, %.40s): %v", channel, data, err)
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
// and pool, behind an HTTP server with the SSE and WebSocket handlers.
type node struct {
	hub    *live.Hub
	broker *pgbroker.Broker
	sse    string // the SSE handler's prefix: sse + "/" + channel
	ws     string // the WebSocket handler's URL
}

func newNode(t testing.TB, pool *pgxpool.Pool, opts *pgbroker.Options) *node {
	t.Helper()
	o := *opts
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	b := pgbroker.New(pool, &o)
	t.Cleanup(func() { b.Close() })
	hub := live.NewHub(&live.Options{Broker: b, Logger: testLogger(t)})
	mux := http.NewServeMux()
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	mux.Handle("/ws", hub.WebSocketHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := hub.Close(ctx); err != nil {
			t.Errorf("Hub.Close: %v", err)
		}
	})
	return &node{hub: hub, broker: b, sse: srv.URL + "/live", ws: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
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

// A logRecorder keeps what a logger wrote, and logs it to t.
type logRecorder struct {
	t  testing.TB
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.t.Log(strings.TrimSuffix(string(p), "\n"))
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.Write(p)
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.String()
}

// A follower is a liveclient following one channel of a hub, as a
// service or a browser would, until stopped or the end of the test.
type follower struct {
	c         *liveclient.Client
	channel   string
	msgs      chan liveclient.Message
	connected chan struct{} // signalled on each connection; buffer of 1
	cancel    context.CancelFunc
	done      chan error
}

// follow follows channel at url from cursor (none if empty) and returns
// once subscribed, so that what the test publishes next reaches it.
func follow(t testing.TB, url, channel, cursor string) *follower {
	t.Helper()
	f := &follower{
		channel:   channel,
		msgs:      make(chan liveclient.Message, 1<<12),
		connected: make(chan struct{}, 1),
		done:      make(chan error, 1),
	}
	f.c = liveclient.New(url, &liveclient.Options{
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnState: func(s string, _ int) {
			if s == "connected" {
				select {
				case f.connected <- struct{}{}:
				default:
				}
			}
		},
	})
	if cursor != "" {
		f.c.SetCursor(channel, cursor)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		f.done <- f.c.Follow(ctx, []string{channel}, func(m liveclient.Message) error {
			select {
			case f.msgs <- m:
			default:
				return fmt.Errorf("follower: too many messages")
			}
			return nil
		})
	}()
	t.Cleanup(f.stop)
	select {
	case <-f.connected:
	case <-time.After(waitTimeout):
		t.Fatalf("not subscribed to %q at %s", channel, url)
	}
	return f
}

// stop disconnects, as a client that goes away. It may be called again.
func (f *follower) stop() {
	f.cancel()
	if err := <-f.done; err != nil {
		panic(err)
	}
	f.done <- nil
}

func (f *follower) next(t testing.TB) liveclient.Message {
	t.Helper()
	select {
	case m := <-f.msgs:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no message")
	}
	panic("unreachable")
}

// A cluster is a private PostgreSQL server, which the fault tests kill,
// stop and restart without disturbing the shared one.
type cluster struct {
	t    testing.TB
	dir  string // owned by the server's user
	data string // the current data directory
	port int
	cmd  *exec.Cmd
	// exited receives what the postmaster's Wait returned.
	exited chan error
	cred   *syscall.Credential // of the server's user, when the tests run as root
}

// startCluster makes a new cluster with initdb and starts it on a free
// port, or skips t if that is impossible here. It is stopped and removed
// when t ends.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	pgURL(t) // the PostgreSQL tests run only when asked for
	for _, tool := range []string{"initdb", "postgres"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not in PATH (e.g. /usr/local/bin); the tests that kill and restart a server need a private cluster", tool)
		}
	}
	c := &cluster{t: t}
	dir, err := os.MkdirTemp("", "livepg")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() {
		if c.cmd != nil {
			c.signal(syscall.SIGCONT)
			c.kill()
		}
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres user to run a private cluster: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	c.data = c.initdb()
	c.start()
	return c
}

func (c *cluster) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

func (c *cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

// initdb makes a new, empty data directory and returns its path.
func (c *cluster) initdb() string {
	c.t.Helper()
	data := filepath.Join(c.dir, "data-"+randomName())
	out, err := c.command("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
		"--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		c.t.Skipf("initdb failed, so no private cluster can run here: %v\n%s", err, out)
	}
	return data
}

// start runs postgres on c.data and waits until it accepts connections.
func (c *cluster) start() {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		c.cmd = c.command("postgres", "-D", c.data, "-p", strconv.Itoa(c.port), "-k", c.dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50")
		var log strings.Builder
		c.cmd.Stderr = &log
		if err := c.cmd.Start(); err != nil {
			c.t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func(cmd *exec.Cmd) { exited <- cmd.Wait() }(c.cmd)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn, err := pgx.Connect(ctx, c.url())
			cancel()
			if err == nil {
				conn.Close(context.Background())
				c.exited = exited
				return
			}
			select {
			case err := <-exited:
				// A server killed a moment ago may still hold its shared
				// memory or port: try again.
				if time.Now().After(deadline) {
					c.t.Fatalf("postgres exited: %v\n%s", err, log.String())
				}
				c.cmd = nil
			case <-time.After(20 * time.Millisecond): // polling for the server to come up
				if time.Now().After(deadline) {
					c.t.Fatalf("postgres on port %d did not accept connections: %v\n%s", c.port, err, log.String())
				}
				continue
			}
			break
		}
	}
}

// kill ends the server and its backends as a crash would. Its data stays
// on disk.
func (c *cluster) kill() {
	c.signal(syscall.SIGKILL)
	<-c.exited
	c.cmd = nil
}

func (c *cluster) stop() { c.signal(syscall.SIGSTOP) }
func (c *cluster) cont() { c.signal(syscall.SIGCONT) }

// signal signals the postmaster and its children, the backends, which
// run in sessions of their own.
func (c *cluster) signal(sig syscall.Signal) {
	pids := []int{c.cmd.Process.Pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so split after ")".
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(c.cmd.Process.Pid) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
}
