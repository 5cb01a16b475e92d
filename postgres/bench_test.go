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
// which take turns on the channel's row lock (throughput); 8Channels
// spreads them over 8 channels, which do not wait for each other. 100 B
// publications travel inside the NOTIFY; 16 KiB ones, over its 8000-byte
// limit, are read from the table by the subscriber.
func BenchmarkPublishDeliver(b *testing.B) {
	url := pgURL(b)
	for _, bc := range []struct {
		name                 string
		size                 int
		publishers, channels int
	}{
		{"Sequential/100B", 100, 1, 1},
		{"Parallel8/100B", 100, 8, 1},
		{"Parallel8/8Channels/100B", 100, 8, 8},
		{"Sequential/16KiB", 16 << 10, 1, 1},
		{"Parallel8/16KiB", 16 << 10, 8, 1},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPublishDeliver(b, url, bc.size, bc.publishers, bc.channels) })
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

func benchPublishDeliver(b *testing.B, url string, size, publishers, channels int) {
	pool := benchPool(b, url)
	schema := testSchema(b, pool)
	pub := pgbroker.New(pool, &pgbroker.Options{Schema: schema, Logger: testLogger(b)})
	b.Cleanup(func() { pub.Close() })
	sub := pgbroker.New(benchPool(b, url), &pgbroker.Options{Schema: schema, Logger: testLogger(b)})
	b.Cleanup(func() { sub.Close() })
	data := []byte(`"` + strings.Repeat("x", size-2) + `"`)
	n := b.N
	perChannel := (n + channels - 1) / channels

	// One subscription per channel; times are indexed by channel and by
	// Seq after the head.
	type channelRun struct {
		name               string
		head               live.Position
		started, delivered []time.Time
		published          atomic.Int64
	}
	runs := make([]*channelRun, channels)
	each := make(chan struct{}, 1)
	var remaining atomic.Int64
	remaining.Store(int64(n))
	all := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, channels)
	for i := range runs {
		r := &channelRun{name: channelName(b), started: make([]time.Time, perChannel+1), delivered: make([]time.Time, perChannel+1)}
		runs[i] = r
		readyc := make(chan struct{})
		go func() {
			done <- sub.Subscribe(ctx, r.name,
				func(h live.Position) { r.head = h; close(readyc) },
				func(m live.Message) {
					r.delivered[m.Pos.Seq-r.head.Seq] = time.Now()
					select {
					case each <- struct{}{}:
					default:
					}
					if remaining.Add(-1) == 0 {
						close(all)
					}
				})
		}()
		select {
		case <-readyc:
		case err := <-done:
			b.Fatalf("Subscribe returned %v", err)
		}
	}
	defer func() {
		cancel()
		for range runs {
			<-done
		}
	}()

	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	begin := time.Now()
	for range publishers {
		wg.Go(func() {
			for {
				k := next.Add(1)
				if k > int64(n) {
					return
				}
				r := runs[k%int64(channels)]
				t0 := time.Now()
				pos, err := pub.Publish(ctx, r.name, data)
				if err != nil {
					b.Error(err)
					return
				}
				r.started[pos.Seq-r.head.Seq] = t0
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
		b.Fatalf("Subscribe returned %v", err)
	}
	elapsed := time.Since(begin)
	b.StopTimer()

	var latencies []time.Duration
	for _, r := range runs {
		for i := 1; i < len(r.started); i++ {
			if !r.started[i].IsZero() {
				latencies = append(latencies, r.delivered[i].Sub(r.started[i]))
			}
		}
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
}
