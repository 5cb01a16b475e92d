package pgbroker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait for PostgreSQL in these tests.
const waitTimeout = servertest.Timeout

// pgURL returns the URL of the shared PostgreSQL server, or skips t.
func pgURL(t testing.TB) string {
	t.Helper()
	return servertest.EnvURL(t, "LIVE_POSTGRES_URL", "PostgreSQL tests: cd postgres && LIVE_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go test ./...")
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

// testSchema returns a schema name that no other test or run uses, and
// drops the schema when t ends.
func testSchema(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	schema := "livetest_" + servertest.RandomName()
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
		o.Logger = servertest.Logger(t)
	}
	b := pgbroker.New(pool, &o)
	servertest.CloseAtEnd(t, b)
	return b, pool, o.Schema
}

// A node is one server process of an application: a Hub on its own broker
// and pool, behind an HTTP server with the SSE and WebSocket handlers.
type node = servertest.BrokerNode[*pgbroker.Broker]

func newNode(t testing.TB, pool *pgxpool.Pool, opts *pgbroker.Options) *node {
	t.Helper()
	o := *opts
	if o.Logger == nil {
		o.Logger = servertest.Logger(t)
	}
	return servertest.NewBrokerNode(t, pgbroker.New(pool, &o))
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

// A cluster is a private PostgreSQL server, which the fault tests kill,
// stop and restart without disturbing the shared one.
type cluster struct {
	*servertest.Process
	dir  string              // owned by the server's user
	data string              // the data directory the next start uses
	cred *syscall.Credential // of the server's user, when the tests run as root
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
	dir, err := os.MkdirTemp("", "livepg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after the server is killed
	c := &cluster{dir: dir}
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
	c.data = c.initdb(t)
	c.Process = servertest.StartProcess(t, servertest.ProcessOptions{
		Command: func(port int) *exec.Cmd {
			return c.command("postgres", "-D", c.data, "-p", strconv.Itoa(port), "-k", c.dir,
				"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50")
		},
		Ready: func(ctx context.Context, port int) error {
			conn, err := pgx.Connect(ctx, clusterURL(port))
			if err != nil {
				return err
			}
			return conn.Close(context.Background())
		},
	})
	return c
}

func clusterURL(port int) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
}

// url returns the server's URL. Killing the server keeps its data on
// disk.
func (c *cluster) url() string { return clusterURL(c.Port) }

func (c *cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

// initdb makes a new, empty data directory and returns its path.
func (c *cluster) initdb(t testing.TB) string {
	t.Helper()
	data := filepath.Join(c.dir, "data-"+servertest.RandomName())
	out, err := c.command("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
		"--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		t.Skipf("initdb failed, so no private cluster can run here: %v\n%s", err, out)
	}
	return data
}
