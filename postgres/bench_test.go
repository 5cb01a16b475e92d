package pgbroker_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkPublishDeliver measures the time from calling Publish on one
// broker to the delivery on another (two processes sharing the database),
// and the publications per second delivered:
//
//	cd postgres && LIVE_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go test -run '^$' -bench . -benchtime 5000x
//
// Sequential waits for each delivery before publishing again (latency
// without queueing); Parallel8 publishes from 8 goroutines on one channel,
// which take turns on the channel's row lock (throughput). 100 B
// publications travel inside the NOTIFY; 16 KiB ones, over its 8000-byte
// limit, are read from the table by the subscriber.
func BenchmarkPublishDeliver(b *testing.B) {
	url := pgURL(b)
	for _, bc := range []struct {
		name       string
		size       int
		publishers int
	}{
		{"Sequential/100B", 100, 1},
		{"Parallel8/100B", 100, 8},
		{"Sequential/16KiB", 16 << 10, 1},
		{"Parallel8/16KiB", 16 << 10, 8},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPublishDeliver(b, url, bc.size, bc.publishers) })
	}
}

func benchPool(b *testing.B, url string) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

func benchPublishDeliver(b *testing.B, url string, size, publishers int) {
	pool := benchPool(b, url)
	schema := testSchema(b, pool)
	pub := pgbroker.New(pool, &pgbroker.Options{Schema: schema, Logger: testLogger(b)})
	b.Cleanup(func() { pub.Close() })
	sub := pgbroker.New(benchPool(b, url), &pgbroker.Options{Schema: schema, Logger: testLogger(b)})
	b.Cleanup(func() { sub.Close() })
	channel := channelName(b)
	data := []byte(`"` + strings.Repeat("x", size-2) + `"`)
	n := b.N

	delivered := make([]time.Time, n+1) // by Seq after the head
	each := make(chan struct{}, 1)
	all := make(chan struct{})
	readyc := make(chan live.Position, 1)
	var head live.Position
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sub.Subscribe(ctx, channel,
			func(h live.Position) { head = h; readyc <- h },
			func(m live.Message) {
				i := int(m.Pos.Seq - head.Seq)
				delivered[i] = time.Now()
				select {
				case each <- struct{}{}:
				default:
				}
				if i == n {
					close(all)
				}
			})
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-readyc:
	case err := <-done:
		b.Fatalf("Subscribe returned %v", err)
	}

	started := make([]time.Time, n+1)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	begin := time.Now()
	for range publishers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				pos, err := pub.Publish(ctx, channel, data)
				if err != nil {
					b.Error(err)
					return
				}
				started[pos.Seq-head.Seq] = t0
				if publishers == 1 {
					<-each
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	case err := <-done:
		done <- err
		b.Fatalf("Subscribe returned %v", err)
	}
	elapsed := time.Since(begin)
	b.StopTimer()

	latencies := make([]time.Duration, n)
	for i := range n {
		latencies[i] = delivered[i+1].Sub(started[i+1])
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[n/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(latencies[n*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
}
