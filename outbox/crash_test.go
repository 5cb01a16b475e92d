package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
)

func TestMain(m *testing.M) {
	if role := os.Getenv("OUTBOX_CHILD"); role != "" {
		if err := runChild(role); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild plays a process that the parent test kills.
func runChild(role string) error {
	dialect := map[string]outbox.Dialect{"postgres": outbox.Postgres, "mysql": outbox.MySQL, "sqlite": outbox.SQLite}[os.Getenv("OUTBOX_DIALECT")]
	db, err := sql.Open(os.Getenv("OUTBOX_DRIVER"), os.Getenv("OUTBOX_DSN"))
	if err != nil {
		return err
	}
	ob, err := outbox.New(db, dialect, outbox.Options{Table: os.Getenv("OUTBOX_TABLE")})
	if err != nil {
		return err
	}
	ctx := context.Background()
	channel := os.Getenv("OUTBOX_CHANNEL")
	n, _ := strconv.Atoi(os.Getenv("OUTBOX_N"))
	switch role {
	case "app":
		// Commit n publications, then hold one transaction open with a
		// publication in it; say so and wait for the kill.
		for i := 1; i <= n; i++ {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := ob.Publish(ctx, tx, channel, map[string]int{"i": i}); err != nil {
				return err
			}
			if err := tx.Commit(); err != nil {
				return err
			}
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := ob.Publish(ctx, tx, channel, map[string]int{"i": -1}); err != nil {
			return err
		}
		fmt.Println("committed")
		select {}
	case "relay":
		// Relay through the parent's broker; after k publications, say so
		// and block inside the next, before anything is marked delivered.
		k, _ := strconv.Atoi(os.Getenv("OUTBOX_K"))
		block := make(chan struct{})
		pub := &httpPub{url: os.Getenv("OUTBOX_BROKER")}
		pub.after = func(got int64) {
			if got == int64(k) {
				fmt.Println("published")
				<-block
			}
		}
		r := ob.NewRelay(pub, outbox.RelayOptions{Lease: 2 * time.Second, Batch: n,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		return r.Run(ctx)
	case "relay-redis":
		return runRedisRelay(ob, n)
	}
	return fmt.Errorf("unknown role %q", role)
}

func childEnv(d database, ob *outbox.Outbox, channel string, n int, more ...string) []string {
	return append([]string{"OUTBOX_DIALECT=" + d.name, "OUTBOX_DRIVER=" + d.driver, "OUTBOX_DSN=" + d.dsn,
		"OUTBOX_TABLE=" + ob.Table(), "OUTBOX_CHANNEL=" + channel, "OUTBOX_N=" + strconv.Itoa(n)}, more...)
}

// An application SIGKILLed right after its commits, with one more
// transaction open, loses none of the committed publications: a relay
// started afterwards delivers each once, in order, and never the one whose
// transaction died with the process.
func TestCrashAfterCommit(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		_, ob := open(t, d)
		const n = 20
		cmd, out := child(t, "app", childEnv(d, ob, "todos", n)...)
		expectLine(t, out, "committed")
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		pub := &brokerPub{b: b}
		r, _ := runRelay(t, ob, pub, outbox.RelayOptions{Lease: time.Second})
		checkOnceInOrder(t, s.wait(t, n, 30*time.Second), n)
		waitUntil(t, 10*time.Second, "the relay to mark all delivered", func() bool { return r.Stats().Pending == 0 && r.Stats().Delivered == n })
		if got := s.count(); got != n {
			t.Fatalf("%d deliveries, want %d: the open transaction's publication went out", got, n)
		}
	})
}

// A relay SIGKILLed in the middle of a batch, after publishing some rows
// and before marking any delivered, leaves no gap and no duplicate: the
// relay that takes over once its lease lapses publishes the batch again
// under the same keys, and subscribers see each publication once, in
// order.
func TestRelayKilledMidBatch(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		const n, k = 30, 12
		for i := 1; i <= n; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		srv, calls := brokerServer(t, b)

		cmd, out := child(t, "relay", childEnv(d, ob, "todos", n, "OUTBOX_BROKER="+srv.URL, "OUTBOX_K="+strconv.Itoa(k))...)
		expectLine(t, out, "published")
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if got := s.count(); got != k {
			t.Fatalf("%d deliveries before the kill, want %d", got, k)
		}

		pub := &brokerPub{b: b}
		r, _ := runRelay(t, ob, pub, outbox.RelayOptions{Lease: time.Second, PollMin: 10 * time.Millisecond, PollMax: 100 * time.Millisecond})
		checkOnceInOrder(t, s.wait(t, n, 30*time.Second), n)
		waitUntil(t, 10*time.Second, "the relay to mark all delivered", func() bool { return r.Stats().Delivered == n && r.Stats().Pending == 0 })
		if pub.calls.Load()+calls.Load() <= n {
			t.Fatalf("%d attempts: the killed batch was not published again", pub.calls.Load()+calls.Load())
		}
		if got := s.count(); got != n {
			t.Fatalf("%d deliveries, want %d", got, n)
		}
	})
}

// A broker that is down for 10 seconds, one of whose failed attempts
// took the publication anyway, gets everything once it is back, in
// order, once.
func TestBrokerDown(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		pub := &brokerPub{b: b}
		r, _ := runRelay(t, ob, pub, outbox.RelayOptions{Lease: 2 * time.Second, PollMin: 10 * time.Millisecond, PollMax: 200 * time.Millisecond})
		const n = 40
		for i := 1; i <= 5; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		s.wait(t, 5, 10*time.Second)
		pub.lost.Store(true)
		pub.down.Store(true)
		up := time.Now().Add(10 * time.Second)
		for i := 6; i <= n; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		waitUntil(t, 15*time.Second, "the relay to notice the outage", func() bool { return r.Stats().Errors > 0 })
		waitUntil(t, 5*time.Second, "a lag during the outage", func() bool { return r.Stats().Lag > 0 })
		time.Sleep(time.Until(up)) // the outage itself
		pub.down.Store(false)
		checkOnceInOrder(t, s.wait(t, n, 30*time.Second), n)
		waitUntil(t, 10*time.Second, "all delivered", func() bool { return r.Stats().Pending == 0 && r.Stats().Lag == 0 })
		if got := s.count(); got != n {
			t.Fatalf("%d deliveries, want %d", got, n)
		}
	})
}

// Two relays started at once: one works, the other waits, and takes over
// when the first stops.
func TestTwoRelays(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		opts := outbox.RelayOptions{Lease: 3 * time.Second, PollMin: 10 * time.Millisecond, PollMax: 100 * time.Millisecond}
		p1, p2 := &brokerPub{b: b}, &brokerPub{b: b}
		start := make(chan struct{})
		var r1, r2 *outbox.Relay
		var stop1, stop2 context.CancelFunc
		ready := make(chan struct{}, 2)
		go func() { <-start; r1, stop1 = runRelay(t, ob, p1, opts); ready <- struct{}{} }()
		go func() { <-start; r2, stop2 = runRelay(t, ob, p2, opts); ready <- struct{}{} }()
		close(start)
		<-ready
		<-ready
		const n = 50
		for i := 1; i <= n; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		checkOnceInOrder(t, s.wait(t, n, 30*time.Second), n)
		if a, b := p1.calls.Load(), p2.calls.Load(); a != 0 && b != 0 {
			t.Fatalf("both relays published: %d and %d", a, b)
		}
		if r1.Stats().Leader == r2.Stats().Leader {
			t.Fatalf("leaders: %v and %v, want exactly one", r1.Stats().Leader, r2.Stats().Leader)
		}
		// The leader stops; the other takes over.
		other := r2
		if r2.Stats().Leader {
			stop2()
			other = r1
		} else {
			stop1()
		}
		for i := n + 1; i <= 2*n; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		checkOnceInOrder(t, s.wait(t, 2*n, 30*time.Second), 2*n)
		if !other.Stats().Leader {
			t.Fatal("the remaining relay does not hold the lease")
		}
	})
}

// A rolled-back transaction publishes nothing and gives its number back.
func TestRollback(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		ctx := context.Background()
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond})

		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if seq, err := ob.Publish(ctx, tx, "todos", map[string]int{"i": -1}); err != nil || seq != 1 {
			t.Fatalf("Publish = %d, %v; want 1", seq, err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if seq := publishTx(t, db, ob, "todos", map[string]int{"i": 1}); seq != 1 {
			t.Fatalf("after a rollback, Publish = %d, want 1", seq)
		}
		if seq := publishTx(t, db, ob, "todos", map[string]int{"i": 2}); seq != 2 {
			t.Fatalf("Publish = %d, want 2", seq)
		}
		checkOnceInOrder(t, s.wait(t, 2, 10*time.Second), 2)
	})
}
