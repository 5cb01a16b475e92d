package pgbroker_test

import (
	"cmp"
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
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
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
		Loads: []brokertest.Load{
			{Name: "Sequential/100B", Size: 100, Publishers: 1},
			{Name: "Parallel8/100B", Size: 100, Publishers: 8},
			{Name: "Parallel8/8Channels/100B", Size: 100, Publishers: 8, Channels: 8},
			{Name: "Sequential/16KiB", Size: 16 << 10, Publishers: 1},
			{Name: "Parallel8/16KiB", Size: 16 << 10, Publishers: 8},
		},
	})
}

// benchPool returns a pool on url with room for eight publishers, closed
// at the end of b.
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

// BenchmarkPresence: users joining a presence channel on one node, as seen
// by a subscriber on another.
//
//	cd postgres && LIVE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go test -run '^$' -bench Presence -benchtime 1000x
func BenchmarkPresence(b *testing.B) {
	brokertest.BenchmarkPresence(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// BenchmarkManyChannels: one node following 10,000 channels.
//
//	cd postgres && LIVE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go test -run '^$' -bench ManyChannels -benchtime 10000x
func BenchmarkManyChannels(b *testing.B) {
	brokertest.BenchmarkManyChannels(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// sharedBrokers returns a maker of brokers that share one test schema,
// for the benchmarks: each node of a benchmark is a broker of its own.
func sharedBrokers(b *testing.B) func(*testing.B) live.Broker {
	url := pgURL(b)
	schema := testSchema(b, benchPool(b, url))
	return func(b *testing.B) live.Broker {
		return pgbroker.New(benchPool(b, url), &pgbroker.Options{Schema: schema, Logger: servertest.Logger(b)})
	}
}

// BenchmarkManyPublishers: 64 goroutines of one node publishing over 1,000
// channels, each followed by another node, and 8 on one channel.
//
//	cd postgres && LIVE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go test -run '^$' -bench ManyPublishers -benchtime 20000x
func BenchmarkManyPublishers(b *testing.B) {
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New:   sharedBrokers(b),
		Loads: brokertest.ManyPublishers,
	})
}

// BenchmarkPublish measures Publish alone, each call waiting for its
// commit, with no subscriber: without a key, under a new key each time,
// and under a key already taken (a retry, which publishes nothing).
//
//	cd postgres && LIVE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go test -run '^$' -bench 'Publish$' -benchtime 5000x
func BenchmarkPublish(b *testing.B) {
	url := pgURL(b)
	pool := benchPool(b, url)
	broker := pgbroker.New(pool, &pgbroker.Options{Schema: testSchema(b, pool), Logger: servertest.Logger(b)})
	b.Cleanup(func() { broker.Close() })
	data := []byte(`"` + strings.Repeat("x", 98) + `"`)
	if _, err := broker.Publish(b.Context(), servertest.ChannelName(b), data); err != nil { // creates the schema
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		key  func(i int) string // "" for none
	}{
		{"NoKey", func(int) string { return "" }},
		{"NewKey", func(i int) string { return "k-" + strconv.Itoa(i) }},
		{"TakenKey", func(int) string { return "taken" }},
	} {
		b.Run(c.name, func(b *testing.B) {
			channel := servertest.ChannelName(b)
			ctx := b.Context()
			i := 0
			for b.Loop() {
				pctx := ctx
				if key := c.key(i); key != "" {
					pctx = live.WithPublishKey(ctx, key)
				}
				if _, err := broker.Publish(pctx, channel, data); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkFollow measures what one broker pays per channel it follows,
// b.N channels, followed at once as a Hub does after a restart: the time
// until all are ready (follow-ms), the heap and goroutines each adds,
// the stacks of those goroutines (stack-B/channel), the CPU the process
// spends per second once they are followed and nothing is published
// (idle-cpu-ms/s, over idleWindow), and the time to stop them all
// (stop-ms). A broker that is not a live.Follower is followed with a
// goroutine per channel calling Subscribe, counted as the broker's.
//
//	cd postgres && LIVE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go test -run '^$' -bench 'Follow$' -benchtime 10000x
func BenchmarkFollow(b *testing.B) {
	url := pgURL(b)
	pool := benchPool(b, url)
	broker := pgbroker.New(pool, &pgbroker.Options{Schema: testSchema(b, pool), Logger: servertest.Logger(b)})
	b.Cleanup(func() { broker.Close() })
	n := b.N
	names := make([]string, n)
	prefix := servertest.ChannelName(b) + "-"
	for i := range names {
		names[i] = prefix + strconv.Itoa(i)
	}
	var ready sync.WaitGroup
	ready.Add(n)
	var mu sync.Mutex // guards failed
	var failed error
	onReady := func(live.Position) { ready.Done() }
	onDeliver := func(live.Message) {}
	onEnded := func(err error) {
		mu.Lock()
		failed = cmp.Or(failed, err)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(b.Context())
	var subscribers sync.WaitGroup
	followOne := func(name string) (func(), error) {
		return broker.Follow(name, onReady, onDeliver, onEnded)
	}
	if _, ok := any(broker).(live.Follower); !ok {
		followOne = func(name string) (func(), error) {
			subscribers.Go(func() {
				if err := broker.Subscribe(ctx, name, onReady, onDeliver); err != nil {
					onEnded(err)
				}
			})
			return nil, nil
		}
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	b.ResetTimer()
	start := time.Now()
	stops := make([]func(), n)
	for i, name := range names {
		stop, err := followOne(name)
		if err != nil {
			b.Fatal(err)
		}
		stops[i] = stop
	}
	ready.Wait()
	followed := time.Since(start)
	b.StopTimer()
	stopsBytes := uint64(n) * 8 // the stops slice is the benchmark's
	runtime.GC()
	runtime.ReadMemStats(&after)
	extra := runtime.NumGoroutine() - goroutines

	cpu0, idleStart := processCPU(), time.Now()
	time.Sleep(idleWindow) // a window of measurement: nothing is awaited
	cpu, idle := processCPU()-cpu0, time.Since(idleStart)

	start = time.Now()
	for _, stop := range stops {
		if stop != nil {
			stop()
		}
	}
	cancel()
	subscribers.Wait()
	stopped := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(followed.Milliseconds()), "follow-ms")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)-int64(stopsBytes))/float64(n), "B/channel")
	b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/float64(n), "stack-B/channel")
	b.ReportMetric(float64(extra)/float64(n), "goroutines/channel")
	b.ReportMetric(float64(cpu.Microseconds())/1000/idle.Seconds(), "idle-cpu-ms/s")
	b.ReportMetric(float64(stopped.Milliseconds()), "stop-ms")
	b.ReportMetric(0, "ns/op")
}

// idleWindow is how long BenchmarkFollow measures the CPU of a node that
// follows its channels while nothing is published.
const idleWindow = 10 * time.Second

// processCPU returns the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
