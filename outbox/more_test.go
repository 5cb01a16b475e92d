package outbox_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
)

// A row that can never be published (written by hand, not JSON) is
// dropped, counted and marked, and the channel goes on after it; the
// metrics say so.
func TestUnpublishableRow(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		ctx := context.Background()
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		publishTx(t, db, ob, "todos", map[string]int{"i": 1})
		// By hand, past the checks: seq 2 is not JSON.
		tb := ob.Table()
		ph := placeholder(d.dialect)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+tb+`_channels SET seq = seq + 1 WHERE channel = 'todos'`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+tb+` (channel, seq, data) VALUES ('todos', 2, `+ph(1)+`)`, "not json"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		publishTx(t, db, ob, "todos", map[string]int{"i": 2})
		r, _ := runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond})
		checkOnceInOrder(t, s.wait(t, 2, 10*time.Second), 2)
		waitUntil(t, 10*time.Second, "the row dropped, the others counted", func() bool { return r.Stats().Dropped == 1 && r.Stats().Delivered == 2 })

		rec := httptest.NewRecorder()
		r.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Body)
		for _, want := range []string{"live_outbox_dropped_total 1\n", "live_outbox_delivered_total 2\n", "live_outbox_leader 1\n", "live_outbox_lag_seconds "} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q:\n%s", want, body)
			}
		}
	})
}

// Migrate may run in several processes at once, and again.
func TestMigrateConcurrently(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				o, err := outbox.New(db, d.dialect, outbox.Options{Table: ob.Table()})
				if err == nil {
					err = o.Migrate(context.Background())
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if seq := publishTx(t, db, ob, "todos", map[string]int{"i": 1}); seq != 1 {
			t.Fatalf("Publish after migrations = %d", seq)
		}
	})
}

// Delivered rows are deleted after the retention; undelivered never.
func TestRetention(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		for i := 1; i <= 3; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 50 * time.Millisecond, Retention: time.Millisecond})
		s.wait(t, 3, 10*time.Second)
		waitUntil(t, 15*time.Second, "delivered rows deleted", func() bool {
			var n int
			db.QueryRow(`SELECT count(*) FROM ` + ob.Table()).Scan(&n)
			return n == 0
		})
		// Numbering goes on.
		if seq := publishTx(t, db, ob, "todos", map[string]int{"i": 4}); seq != 4 {
			t.Fatalf("Publish after the purge = %d, want 4", seq)
		}
		checkOnceInOrder(t, s.wait(t, 4, 10*time.Second), 4)
	})
}

// Bad arguments are refused with clear errors, never a panic.
func TestBadInput(t *testing.T) {
	if _, err := outbox.New(nil, outbox.SQLite, outbox.Options{Table: "Bad-Name"}); err != outbox.ErrTable {
		t.Errorf("New with a bad table = %v, want ErrTable", err)
	}
	if _, err := outbox.New(nil, outbox.Dialect{}, outbox.Options{}); err == nil {
		t.Error("New with no dialect: no error")
	}
	d := databases(t)
	db, ob := open(t, d[len(d)-1]) // SQLite
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := ob.Publish(context.Background(), tx, "bad channel", 1); err == nil {
		t.Error("Publish on an invalid channel: no error")
	}
	if _, err := ob.Publish(context.Background(), tx, "@live:x", 1); err == nil {
		t.Error("Publish on a reserved channel: no error")
	}
	if _, err := ob.Publish(context.Background(), tx, "ok", func() {}); err == nil {
		t.Error("Publish of a func: no error")
	}
	tx.Rollback() // SQLite: its write lock would hold the relay back
	r := ob.NewRelay(&brokerPub{b: live.NewMemoryBroker(nil)}, outbox.RelayOptions{Logger: quietLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	waitUntil(t, 10*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })
	if err := r.Run(ctx); err != outbox.ErrRunning {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	<-done
}

// Outbox.Commit wakes this process's relay at once, however long it would
// sleep.
func TestCommitWakes(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		r, _ := runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: time.Minute, PollMax: time.Minute})
		waitUntil(t, 10*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })
		for i := 1; i <= 3; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i}) // commits with ob.Commit
			s.wait(t, i, 5*time.Second)
		}
		checkOnceInOrder(t, s.wait(t, 3, time.Second), 3)
	})
}

// Channels published in parallel each keep their own order.
func TestChannelsInOrder(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		b := live.NewMemoryBroker(nil)
		const channels, n = 6, 25
		sinks := make([]*sink, channels)
		for c := range channels {
			sinks[c] = subscribe(t, b, "c"+strconv.Itoa(c))
		}
		ctx := context.Background()
		for i := 1; i <= n; i++ {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for c := range channels {
				if _, err := ob.Publish(ctx, tx, "c"+strconv.Itoa(c), map[string]int{"i": i}); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{Batch: 7, Parallel: 3, PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond})
		for c := range channels {
			checkOnceInOrder(t, sinks[c].wait(t, n, 20*time.Second), n)
		}
	})
}

// Concurrent transactions on one channel, relayed while they commit: every
// publication once, each writer's in the order it committed them, and the
// outbox's numbers in delivery order without a gap.
func TestConcurrentWriters(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond})
		const writers, each = 8, 15
		ctx := context.Background()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for k := 1; k <= each; k++ {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := ob.Publish(ctx, tx, "todos", map[string]int{"w": w, "k": k}); err != nil {
						tx.Rollback()
						t.Error(err)
						return
					}
					if k%5 == 0 { // some roll back, giving their numbers back
						tx.Rollback()
						continue
					}
					if err := tx.Commit(); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		want := writers * (each - each/5)
		msgs := s.wait(t, want, 30*time.Second)
		last := map[int]int{}
		for i, m := range msgs {
			var v struct{ W, K int }
			if err := json.Unmarshal(m.Data, &v); err != nil {
				t.Fatal(err)
			}
			if v.K%5 == 0 {
				t.Fatalf("a rolled-back publication was delivered: %s", m.Data)
			}
			if v.K <= last[v.W] {
				t.Fatalf("writer %d: %d after %d", v.W, v.K, last[v.W])
			}
			last[v.W] = v.K
			if i > 0 && m.Pos.Seq != msgs[i-1].Pos.Seq+1 {
				t.Fatalf("gap: %v after %v", m.Pos, msgs[i-1].Pos)
			}
		}
		var max int64
		db.QueryRow(`SELECT seq FROM ` + ob.Table() + `_channels WHERE channel = 'todos'`).Scan(&max)
		if int(max) != want || len(msgs) != want {
			t.Fatalf("%d delivered, the channel numbered %d, want %d", len(msgs), max, want)
		}
	})
}
