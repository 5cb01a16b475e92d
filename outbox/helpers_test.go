package outbox_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// A database is one the tests run against.
type database struct {
	name    string
	dialect outbox.Dialect
	driver  string
	dsn     string
}

// databases returns the databases reachable for t: PostgreSQL at
// LIVE_POSTGRES_URL, MariaDB/MySQL at LIVE_MYSQL_URL (a go-sql-driver DSN,
// root@tcp(127.0.0.1:3306)/test), and always SQLite in a temporary file.
func databases(t testing.TB) []database {
	var dbs []database
	if u := os.Getenv("LIVE_POSTGRES_URL"); u != "" {
		dbs = append(dbs, database{"postgres", outbox.Postgres, "pgx", u})
	}
	if u := os.Getenv("LIVE_MYSQL_URL"); u != "" {
		dbs = append(dbs, database{"mysql", outbox.MySQL, "mysql", u})
	}
	dir := t.TempDir()
	dbs = append(dbs, database{"sqlite", outbox.SQLite, "sqlite",
		"file:" + filepath.Join(dir, "test.db") + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"})
	return dbs
}

// forEach runs f on every database, in parallel.
func forEach(t *testing.T, f func(t *testing.T, d database)) {
	for _, d := range databases(t) {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			f(t, d)
		})
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// open opens d and an outbox on a table of its own, migrated, dropped at
// the end of the test.
func open(t testing.TB, d database) (*sql.DB, *outbox.Outbox) {
	t.Helper()
	return openTable(t, d, "ob_"+randHex(6))
}

func openTable(t testing.TB, d database, table string) (*sql.DB, *outbox.Outbox) {
	t.Helper()
	db, err := sql.Open(d.driver, d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	if d.dialect == outbox.SQLite {
		db.SetMaxOpenConns(8)
	}
	ob, err := outbox.New(db, d.dialect, outbox.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		switch d.dialect {
		case outbox.Postgres:
			db.ExecContext(ctx, "DROP FUNCTION IF EXISTS "+table+"_publish(text, json)")
		case outbox.MySQL:
			db.ExecContext(ctx, "DROP PROCEDURE IF EXISTS "+table+"_publish")
		}
		for _, s := range []string{table, table + "_channels", table + "_relay"} {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+s); err != nil {
				t.Errorf("drop %s: %v", s, err)
			}
		}
		db.Close()
	})
	return db, ob
}

// publishTx publishes v on channel in a transaction of its own.
func publishTx(t testing.TB, db *sql.DB, ob *outbox.Outbox, channel string, v any) uint64 {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := ob.Publish(ctx, tx, channel, v)
	if err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	if err := ob.Commit(tx); err != nil {
		t.Fatal(err)
	}
	return seq
}

// brokerPub publishes into a broker as a Hub does, and can be made to
// fail as an unreachable broker does.
type brokerPub struct {
	b     live.Broker
	calls atomic.Int64
	down  atomic.Bool
	// lost, when set, makes the next attempt while down take the
	// publication and still fail, as a timeout after the broker took it.
	lost atomic.Bool
}

func (p *brokerPub) Publish(ctx context.Context, channel string, v any) (live.Position, error) {
	p.calls.Add(1)
	data, err := json.Marshal(v)
	if err != nil {
		return live.Position{}, err
	}
	if p.down.Load() {
		if p.lost.CompareAndSwap(true, false) {
			p.b.Publish(ctx, channel, data)
		}
		return live.Position{}, errors.New("broker unreachable")
	}
	return p.b.Publish(ctx, channel, data)
}

// A sink records what a broker delivers on one channel.
type sink struct {
	mu   sync.Mutex
	msgs []live.Message
	more chan struct{}
}

// subscribe starts recording channel's deliveries, from the next one.
func subscribe(t testing.TB, b live.Broker, channel string) *sink {
	t.Helper()
	s := &sink{more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Subscribe(ctx, channel, func(live.Position) { close(ready) }, func(m live.Message) {
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
			select {
			case s.more <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("subscription not ready")
	}
	return s
}

// wait returns the first n deliveries, failing t if they do not come
// within d.
func (s *sink) wait(t testing.TB, n int, d time.Duration) []live.Message {
	t.Helper()
	deadline := time.After(d)
	for {
		s.mu.Lock()
		got := len(s.msgs)
		msgs := append([]live.Message(nil), s.msgs...)
		s.mu.Unlock()
		if got >= n {
			return msgs
		}
		select {
		case <-s.more:
		case <-deadline:
			t.Fatalf("%d deliveries after %v, want %d", got, d, n)
		}
	}
}

// count returns how many deliveries there were so far.
func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// checkOnceInOrder checks that msgs are {"i":1} … {"i":n}, each once, at
// consecutive positions.
func checkOnceInOrder(t testing.TB, msgs []live.Message, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("%d deliveries, want %d", len(msgs), n)
	}
	for k, m := range msgs {
		var v struct{ I int }
		if err := json.Unmarshal(m.Data, &v); err != nil || v.I != k+1 {
			t.Fatalf("delivery %d is %s, want {\"i\":%d}", k, m.Data, k+1)
		}
		if k > 0 && m.Pos.Seq != msgs[k-1].Pos.Seq+1 {
			t.Fatalf("delivery %d at %v after %v", k, m.Pos, msgs[k-1].Pos)
		}
	}
}

// runRelay runs a relay until the test ends.
func runRelay(t testing.TB, ob *outbox.Outbox, pub outbox.Publisher, opts outbox.RelayOptions) (*outbox.Relay, context.CancelFunc) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger(t)
	}
	r := ob.NewRelay(pub, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return r, stop
}

// quietLogger logs to the test's log.
func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitUntil waits for cond, failing t after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// brokerServer serves POST /?channel=&key= publishing the body into b,
// for relays in other processes.
func brokerServer(t testing.TB, b live.Broker) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		ctx := live.WithPublishKey(r.Context(), r.URL.Query().Get("key"))
		pos, err := b.Publish(ctx, r.URL.Query().Get("channel"), body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.WriteString(w, pos.String())
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// httpPub publishes through a brokerServer.
type httpPub struct {
	url string
	// after, when not nil, runs after each successful publication.
	after func(n int64)
	n     atomic.Int64
}

func (p *httpPub) Publish(ctx context.Context, channel string, v any) (live.Position, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return live.Position{}, err
	}
	u := p.url + "?channel=" + url.QueryEscape(channel) + "&key=" + url.QueryEscape(live.PublishKey(ctx))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(string(data)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return live.Position{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return live.Position{}, fmt.Errorf("%s: %s", resp.Status, body)
	}
	if p.after != nil {
		p.after(p.n.Add(1))
	}
	return live.ParsePosition(string(body))
}

// child starts this test binary as a child running role, and returns it
// with a reader of its standard output.
func child(t testing.TB, role string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"OUTBOX_CHILD=" + role}, env...)...)
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

// expectLine reads sc until a line equal to want, failing t at EOF.
func expectLine(t testing.TB, sc *bufio.Scanner, want string) {
	t.Helper()
	for sc.Scan() {
		if sc.Text() == want {
			return
		}
	}
	t.Fatalf("child ended without printing %q (%v)", want, sc.Err())
}
