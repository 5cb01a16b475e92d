package redisbroker_test

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
)

// BenchmarkPublishDeliver measures the time from calling Publish on one
// broker to the delivery on another (two processes sharing Redis), and the
// publications per second delivered:
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchtime 5000x
//
// Sequential waits for each delivery before publishing again (latency
// without queueing); Parallel8 publishes from 8 goroutines (throughput).
// 128KiB publications are announced without their data, which the
// subscriber reads from the stream. (Eight publishers of 128 KiB outrun
// one subscriber, because Redis sends a client at most 64 KB per event
// loop pass: it falls HistorySize behind and Subscribe fails, as it must.)
func BenchmarkPublishDeliver(b *testing.B) {
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// BenchmarkPresence: users joining a presence channel on one node, as seen
// by a subscriber on another.
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Presence -benchtime 1000x
func BenchmarkPresence(b *testing.B) {
	brokertest.BenchmarkPresence(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// BenchmarkManyChannels: one node following 10,000 channels.
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench ManyChannels -benchtime 10000x
func BenchmarkManyChannels(b *testing.B) {
	brokertest.BenchmarkManyChannels(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// BenchmarkFollowMany: one node following b.N channels with Follow, as
// a Hub does, with callbacks shared by every channel so that what is
// measured is the broker's part: how long until every follow was ready
// (follow-ms), the heap (B/channel) and goroutines (goroutines/channel)
// each costs, how long one publication on every channel through a second
// broker took to arrive (deliver-ms) and how long stopping them all took
// (release-ms).
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench FollowMany -benchtime 10000x
func BenchmarkFollowMany(b *testing.B) {
	brokers := sharedBrokers(b)
	sub, pub := brokers(b), brokers(b)
	b.Cleanup(func() { sub.(*redisbroker.Broker).Close(); pub.(*redisbroker.Broker).Close() })
	f := sub.(live.Follower)
	n := b.N
	names := make([]string, n)
	base := "many-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	for i := range names {
		names[i] = base + strconv.Itoa(i)
	}
	stops := make([]func(), n)
	var ready, delivered sync.WaitGroup
	ready.Add(n)
	delivered.Add(n)
	failed := make(chan error, 1)
	onReady := func(live.Position) { ready.Done() }
	onDeliver := func(live.Message) { delivered.Done() }
	onEnded := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	wait := func(wg *sync.WaitGroup) {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case err := <-failed:
			b.Fatal(err) // leaves the goroutine above waiting: the benchmark ends
		}
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	b.ResetTimer()
	start := time.Now()
	for i, name := range names {
		stop, err := f.Follow(name, onReady, onDeliver, onEnded)
		if err != nil {
			b.Fatal(err)
		}
		stops[i] = stop
	}
	wait(&ready)
	followed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	extra := runtime.NumGoroutine() - goroutines

	start = time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if _, err := pub.Publish(context.Background(), names[i], []byte(`1`)); err != nil {
					b.Error(err)
					delivered.Done()
				}
			}
		})
	}
	wg.Wait()
	wait(&delivered)
	deliver := time.Since(start)

	start = time.Now()
	for _, stop := range stops {
		stop()
	}
	released := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(followed.Milliseconds()), "follow-ms")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "B/channel")
	b.ReportMetric(float64(extra)/float64(n), "goroutines/channel")
	b.ReportMetric(float64(deliver.Milliseconds()), "deliver-ms")
	b.ReportMetric(float64(released.Milliseconds()), "release-ms")
	b.ReportMetric(0, "ns/op")
}

// sharedBrokers returns a maker of brokers that share one test prefix,
// for the benchmarks: each node of a benchmark is a broker of its own.
func sharedBrokers(b *testing.B) func(*testing.B) live.Broker {
	url := redisURL(b)
	prefix := testPrefix(b, newClient(b, url))
	return func(b *testing.B) live.Broker {
		return redisbroker.New(newClient(b, url), &redisbroker.Options{Prefix: prefix})
	}
}

// BenchmarkManyPublishers: 64 goroutines of one node publishing over 1,000
// channels, each followed by another node, as a busy multi-tenant
// application does; and 8 on one channel.
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench ManyPublishers -benchtime 50000x
func BenchmarkManyPublishers(b *testing.B) {
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New:   sharedBrokers(b),
		Loads: brokertest.ManyPublishers,
	})
}

// BenchmarkClusterManyPublishers is BenchmarkManyPublishers on a private
// cluster of three masters (and three replicas) on this machine.
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench ClusterManyPublishers -benchtime 50000x
func BenchmarkClusterManyPublishers(b *testing.B) {
	cl := startCluster(b)
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New: func(b *testing.B) live.Broker {
			return redisbroker.New(cl.client(b), &redisbroker.Options{Prefix: "livetest:"})
		},
		Loads: brokertest.ManyPublishers,
	})
}

// BenchmarkPublish measures Publish alone, without a subscriber: one
// publisher waiting for each publication, and eight whose publications
// share script calls; without an idempotency key and each under a key of
// its own, which the script looks up, stores and trims with the history.
//
//	cd redis && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench 'Publish$' -benchtime 20000x
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel int // goroutines per GOMAXPROCS; 0: one publisher
		keyed    bool
	}{
		{"Sequential/NoKey", 0, false},
		{"Sequential/Key", 0, true},
		{"Parallel8/NoKey", 4, false},
		{"Parallel8/Key", 4, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			br, _, _ := newBroker(b, redisURL(b), nil)
			channel := "bench-" + servertest.RandomName()
			data := []byte(`{"n":1234567890,"text":"a publication of about a hundred bytes, as a small update is"}`)
			var n atomic.Uint64
			publish := func() error {
				ctx := context.Background()
				if bc.keyed {
					ctx = live.WithPublishKey(ctx, "k"+strconv.FormatUint(n.Add(1), 36))
				}
				_, err := br.Publish(ctx, channel, data)
				return err
			}
			b.ResetTimer()
			if bc.parallel == 0 {
				for range b.N {
					if err := publish(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(bc.parallel)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := publish(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
