package redisbroker_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
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
	url := redisURL(b)
	for _, bc := range []struct {
		name       string
		size       int
		publishers int
	}{
		{"Sequential/100B", 100, 1},
		{"Parallel8/100B", 100, 8},
		{"Parallel8/16KiB", 16 << 10, 8},
		{"Sequential/128KiB", 128 << 10, 1},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPublishDeliver(b, url, bc.size, bc.publishers) })
	}
}

func benchPublishDeliver(b *testing.B, url string, size, publishers int) {
	pub, _, prefix := newBroker(b, url, nil)
	sub := redisbroker.New(newClient(b, url), &redisbroker.Options{Prefix: prefix})
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
	<-readyc

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
