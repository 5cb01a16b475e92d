package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
)

// TestFigures measures the README's figures, on every database:
//
//	OUTBOX_FIGURES=1 go test -run TestFigures -v -timeout 20m
//
// It runs the databases one after the other, so that they do not share
// the machine.
func TestFigures(t *testing.T) {
	if os.Getenv("OUTBOX_FIGURES") == "" {
		t.Skip("set OUTBOX_FIGURES=1 to measure")
	}
	for _, d := range databases(t) {
		t.Run(d.name, func(t *testing.T) {
			n, dur := publishRate(t, d, 64, 0, 5*time.Second)
			t.Logf("FIGURE %s baseline: 64 concurrent transactions inserting one row in a plain table: %.0f transactions/s (%d in %v)",
				d.name, float64(n)/dur.Seconds(), n, dur.Round(time.Millisecond))
			for _, channels := range []int{64, 1} {
				n, dur := publishRate(t, d, 64, channels, 5*time.Second)
				t.Logf("FIGURE %s publish: 64 concurrent transactions on %d channel(s), relayed meanwhile: %.0f publications/s (%d in %v)",
					d.name, channels, float64(n)/dur.Seconds(), n, dur.Round(time.Millisecond))
			}
			rn, rdur := relayRate(t, d, 10000)
			t.Logf("FIGURE %s relay: %d publications on 16 channels delivered in %v: %.0f/s",
				d.name, rn, rdur.Round(time.Millisecond), float64(rn)/rdur.Seconds())
			modes := []string{"poll", "commit"}
			if d.dialect == outbox.Postgres {
				modes = append(modes, "notify")
			}
			for _, mode := range modes {
				p50, p99 := latency(t, d, mode, 400, 10*time.Millisecond)
				t.Logf("FIGURE %s commit-to-delivery (%s): p50 %v, p99 %v", d.name, mode, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
			}
		})
	}
}

// publishRate runs workers concurrent transactions, each publishing once
// and committing, on the given number of channels, for d, while a relay
// (listening, on PostgreSQL) delivers them; with 0 channels, each inserts
// a row in a plain table instead, for comparison.
func publishRate(t *testing.T, db database, workers, channels int, d time.Duration) (int64, time.Duration) {
	sdb, ob := open(t, db)
	sdb.SetMaxOpenConns(workers + 4)
	sdb.SetMaxIdleConns(workers + 4)
	ctx := context.Background()
	plain := ob.Table() + "_plain"
	if channels == 0 {
		if _, err := sdb.ExecContext(ctx, `CREATE TABLE `+plain+` (id bigint PRIMARY KEY, data text)`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sdb.Exec(`DROP TABLE ` + plain) })
	}
	if channels > 0 {
		// A relay delivers meanwhile, as in production.
		opts := outbox.RelayOptions{}
		if db.dialect == outbox.Postgres {
			opts.Listen = pgxListen(db.dsn)
		}
		_, stop := runRelay(t, ob, &brokerPub{b: live.NewMemoryBroker(nil)}, opts)
		defer stop()
	}
	var ids atomic.Int64
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			ch := fmt.Sprintf("c%d", w%max(channels, 1))
			for time.Now().Before(stop) {
				tx, err := sdb.BeginTx(ctx, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if channels == 0 {
					if _, err := tx.ExecContext(ctx, `INSERT INTO `+plain+` VALUES (`+placeholder(db.dialect)(1)+`, `+placeholder(db.dialect)(2)+`)`, ids.Add(1), `{"title":"a todo of some length"}`); err != nil {
						tx.Rollback()
						t.Error(err)
						return
					}
				} else if _, err := ob.Publish(ctx, tx, ch, map[string]any{"w": w, "title": "a todo of some length"}); err != nil {
					tx.Rollback()
					t.Error(err)
					return
				}
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	sdb.SetMaxIdleConns(2) // the server's connections are shared
	return n.Load(), elapsed
}

// relayRate fills the outbox with n publications on 16 channels, then
// times a relay delivering them all.
func relayRate(t *testing.T, db database, n int) (int, time.Duration) {
	sdb, ob := open(t, db)
	ctx := context.Background()
	for k := 0; k < n; k += 500 {
		tx, err := sdb.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := k; i < k+500 && i < n; i++ {
			if _, err := ob.Publish(ctx, tx, fmt.Sprintf("c%d", i%16), map[string]int{"i": i}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	b := live.NewMemoryBroker(&live.MemoryOptions{HistorySize: n})
	start := time.Now()
	r, stop := runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{})
	waitUntil(t, 5*time.Minute, "the relay to deliver everything", func() bool { return r.Stats().Delivered == int64(n) })
	d := time.Since(start)
	stop()
	return n, d
}

// latency commits n publications, one every gap, and returns the p50 and
// p99 of the time from each commit's return to its delivery. mode is
// "poll" (the relay polls: commits made elsewhere), "commit" (Outbox.Commit
// wakes the relay in this process) or "notify" (PostgreSQL's NOTIFY wakes
// it).
func latency(t *testing.T, db database, mode string, n int, gap time.Duration) (p50, p99 time.Duration) {
	sdb, ob := open(t, db)
	ctx := context.Background()
	b := live.NewMemoryBroker(&live.MemoryOptions{HistorySize: n})
	var mu sync.Mutex
	committed := make([]time.Time, n+1)
	lat := make([]time.Duration, 0, n)
	all := make(chan struct{})
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	go b.Subscribe(subCtx, "lat", func(live.Position) { close(ready) }, func(m live.Message) {
		now := time.Now()
		var v struct{ I int }
		json.Unmarshal(m.Data, &v)
		mu.Lock()
		lat = append(lat, max(now.Sub(committed[v.I]), 0))
		if len(lat) == n {
			close(all)
		}
		mu.Unlock()
	})
	<-ready
	opts := outbox.RelayOptions{}
	if mode == "notify" {
		opts.Listen = pgxListen(db.dsn)
	}
	r, _ := runRelay(t, ob, &brokerPub{b: b}, opts)
	waitUntil(t, 15*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for i := 1; i <= n; i++ {
		<-tick.C
		tx, err := sdb.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ob.Publish(ctx, tx, "lat", map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
		mu.Lock() // the delivery may come before Commit returns
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		committed[i] = time.Now()
		mu.Unlock()
		if mode == "commit" {
			ob.Wake()
		}
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		t.Fatal("not all delivered")
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}
