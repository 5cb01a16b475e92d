package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge"
	"github.com/go-live/live"
	redisbroker "github.com/go-live/live/redis"
)

// BenchmarkRedisBrokers runs live's Redis broker and centrifuge's side by
// side, on the same Redis, in the same run: 64 goroutines of one node
// publish 100-byte messages over 1,000 channels, each kept in a history of
// 1,024 for an hour, and another node, subscribed to all of them, receives
// them. One op is one publication; msgs/s counts deliveries, and p50-µs
// and p99-µs the time from the call of Publish to the delivery.
//
//	cd cmd/liveload && LIVE_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench RedisBrokers -benchtime 100000x
func BenchmarkRedisBrokers(b *testing.B) {
	addr := os.Getenv("LIVE_REDIS_URL")
	if addr == "" {
		b.Skip("LIVE_REDIS_URL is not set")
	}
	for _, side := range []struct {
		name string
		open func(b *testing.B, prefix string) (publish func(ch string, data []byte) error, follow func(chs []string, got func(data []byte)))
	}{
		{"live", openLive(addr)},
		{"centrifuge", openCentrifuge(addr)},
	} {
		b.Run(side.name, func(b *testing.B) {
			prefix := fmt.Sprintf("bench%d", time.Now().UnixNano())
			publish, follow := side.open(b, prefix)
			benchBrokers(b, publish, follow)
		})
	}
}

const (
	benchPublishers = 64
	benchChannels   = 1000
	benchHistory    = 1024
)

// benchBrokers publishes b.N messages and waits for their deliveries.
func benchBrokers(b *testing.B, publish func(ch string, data []byte) error, follow func(chs []string, got func(data []byte))) {
	chs := make([]string, benchChannels)
	for i := range chs {
		chs[i] = "c" + strconv.Itoa(i)
	}
	lat := make([]time.Duration, b.N)
	var n atomic.Int64
	all := make(chan struct{})
	follow(chs, func(data []byte) {
		t, err := strconv.ParseInt(string(data[1:20]), 10, 64)
		if err != nil {
			return
		}
		i := n.Add(1)
		if i <= int64(len(lat)) {
			lat[i-1] = time.Duration(time.Now().UnixNano() - t)
		}
		if i == int64(len(lat)) {
			close(all)
		}
	})
	pad := make([]byte, 100-2-19)
	for i := range pad {
		pad[i] = 'x'
	}
	var next atomic.Int64
	var failed atomic.Pointer[error]
	b.ResetTimer()
	var wg sync.WaitGroup
	for range benchPublishers {
		wg.Go(func() {
			data := make([]byte, 0, 100)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				data = append(data[:0], '"')
				data = strconv.AppendInt(data, time.Now().UnixNano(), 10)
				data = append(append(data, pad...), '"')
				if err := publish(chs[i%benchChannels], data); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d delivered in a minute", n.Load(), b.N)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func openLive(addr string) func(b *testing.B, prefix string) (func(string, []byte) error, func([]string, func([]byte))) {
	return func(b *testing.B, prefix string) (func(string, []byte) error, func([]string, func([]byte))) {
		open := func() *redisbroker.Broker {
			br, err := redisbroker.Open(addr, &redisbroker.Options{Prefix: prefix, HistorySize: benchHistory, HistoryAge: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { br.Close() })
			return br
		}
		pub, sub := open(), open()
		ctx := context.Background()
		publish := func(ch string, data []byte) error {
			_, err := pub.Publish(ctx, ch, data)
			return err
		}
		follow := func(chs []string, got func([]byte)) {
			ctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			b.Cleanup(func() {
				cancel()
				wg.Wait()
			})
			var ready sync.WaitGroup
			ready.Add(len(chs))
			for _, ch := range chs {
				wg.Go(func() {
					sub.Subscribe(ctx, ch, func(live.Position) { ready.Done() }, func(m live.Message) { got(m.Data) })
				})
			}
			ready.Wait()
		}
		return publish, follow
	}
}

func openCentrifuge(addr string) func(b *testing.B, prefix string) (func(string, []byte) error, func([]string, func([]byte))) {
	return func(b *testing.B, prefix string) (func(string, []byte) error, func([]string, func([]byte))) {
		u, err := url.Parse(addr)
		if err != nil {
			b.Fatal(err)
		}
		db, _ := strconv.Atoi(u.Path[min(1, len(u.Path)):])
		open := func() *centrifuge.RedisBroker {
			node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError, LogHandler: func(centrifuge.LogEntry) {}})
			if err != nil {
				b.Fatal(err)
			}
			shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: u.Host, DB: db})
			if err != nil {
				b.Fatal(err)
			}
			br, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Prefix: prefix, Shards: []*centrifuge.RedisShard{shard}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				br.Close(context.Background())
				shard.Close()
			})
			return br
		}
		pub, sub := open(), open()
		if err := pub.RegisterBrokerEventHandler(centrifugeHandler(nil)); err != nil {
			b.Fatal(err)
		}
		opts := centrifuge.PublishOptions{HistorySize: benchHistory, HistoryTTL: time.Hour}
		publish := func(ch string, data []byte) error {
			_, err := pub.Publish(ch, data, opts)
			return err
		}
		follow := func(chs []string, got func([]byte)) {
			if err := sub.RegisterBrokerEventHandler(centrifugeHandler(got)); err != nil {
				b.Fatal(err)
			}
			if err := sub.Subscribe(chs...); err != nil {
				b.Fatal(err)
			}
		}
		return publish, follow
	}
}

// centrifugeHandler hands each publication's data to got.
type centrifugeHandler func([]byte)

func (h centrifugeHandler) HandlePublication(_ string, pub *centrifuge.Publication, _ centrifuge.StreamPosition, _ bool, _ *centrifuge.Publication) error {
	if h != nil {
		h(pub.Data)
	}
	return nil
}

func (centrifugeHandler) HandleJoin(string, *centrifuge.ClientInfo) error  { return nil }
func (centrifugeHandler) HandleLeave(string, *centrifuge.ClientInfo) error { return nil }
