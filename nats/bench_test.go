package natsbroker_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkPublishDeliver measures the time from calling Publish on one
// broker to the delivery on another (two processes sharing NATS), and the
// publications per second delivered:
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench PublishDeliver -benchtime 5000x
//
// Sequential waits for each delivery before publishing again (latency
// without queueing); Parallel8 publishes from 8 goroutines on one broker,
// which take turns on the channel; Parallel8TwoNodes spreads them over two
// brokers on two connections, which race for positions and retry
// (conflicts/op).
func BenchmarkPublishDeliver(b *testing.B) {
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
		Loads: []brokertest.Load{
			{Name: "Sequential/100B", Size: 100, Publishers: 1},
			{Name: "Parallel8/100B", Size: 100, Publishers: 8},
			{Name: "Parallel8TwoNodes/100B", Size: 100, Publishers: 8, Brokers: 2},
			{Name: "Parallel8/16KiB", Size: 16 << 10, Publishers: 8},
			{Name: "Sequential/128KiB", Size: 128 << 10, Publishers: 1},
		},
		Report: func(b *testing.B, pubs []live.Broker, sub live.Broker) {
			var conflicts int64
			for _, p := range pubs {
				conflicts += p.(*natsbroker.Broker).Stats().Conflicts
			}
			b.ReportMetric(float64(conflicts)/float64(b.N), "conflicts/op")
			b.ReportMetric(float64(sub.(*natsbroker.Broker).Stats().Fills)/float64(b.N), "fills/op")
		},
	})
}

// BenchmarkSince measures reading the publications a resuming client
// missed: up to 64 are read one by one along Live-Prev, more with a
// consumer over the channel's retained messages (1024, 100 B each).
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench Since
func BenchmarkSince(b *testing.B) {
	url := natsURL(b)
	br, _, _ := newBroker(b, url, nil)
	channel := channelName(b)
	data := []byte(`"` + strings.Repeat("x", 98) + `"`)
	var head live.Position
	for range 1024 {
		head = servertest.Publish(b, br, channel, string(data))
	}
	for _, missed := range []uint64{1, 10, 64, 65, 200, 1000} {
		b.Run(fmt.Sprint(missed), func(b *testing.B) {
			from := live.Position{Epoch: head.Epoch, Seq: head.Seq - missed}
			for b.Loop() {
				msgs, err := br.Since(b.Context(), channel, from)
				if err != nil || uint64(len(msgs)) != missed {
					b.Fatalf("Since = %d messages, %v", len(msgs), err)
				}
			}
		})
	}
}

// BenchmarkJetStream measures the JetStream operations the design rests
// on, and those of the alternative it passed over (a stream per channel),
// outside the broker, one at a time:
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench JetStream
//
// PublishExpected is what Publish does: a publication that names the
// stream sequence of the subject's last message. PublishAsync256 keeps up
// to 256 publications in flight on one subject, which a stream per channel
// allows because the stream numbers them. CreateStream is what a stream
// per channel costs for each new channel.
func BenchmarkJetStream(b *testing.B) {
	url := natsURL(b)
	nc := connect(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	prefix := testPrefix(b, url)
	if _, err := js.CreateStream(b.Context(), jetstream.StreamConfig{
		Name: prefix, Subjects: []string{prefix + ".c.>"}, MaxMsgsPerSubject: 1024,
	}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 100)
	subject := prefix + ".c.x"

	b.Run("PublishExpected", func(b *testing.B) {
		var last uint64
		if m, err := js.Publish(b.Context(), subject, data); err == nil {
			last = m.Sequence
		}
		for b.Loop() {
			ack, err := js.PublishMsg(b.Context(), &nats.Msg{Subject: subject, Data: data},
				jetstream.WithExpectLastSequencePerSubject(last))
			if err != nil {
				b.Fatal(err)
			}
			last = ack.Sequence
		}
	})
	b.Run("PublishAsync256", func(b *testing.B) {
		ajs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := ajs.PublishAsync(subject, data); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-ajs.PublishAsyncComplete():
		case <-time.After(waitTimeout):
			b.Fatal("async publications not acknowledged")
		}
	})
	b.Run("CreateStream", func(b *testing.B) {
		var names []string
		defer func() {
			for _, name := range names {
				js.DeleteStream(context.Background(), name)
			}
		}()
		for b.Loop() {
			name := fmt.Sprintf("%s_%d", prefix, len(names))
			names = append(names, name)
			if _, err := js.CreateStream(b.Context(), jetstream.StreamConfig{
				Name: name, Subjects: []string{name}, MaxMsgs: 1024,
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPresence: users joining a presence channel on one node, as seen
// by a subscriber on another.
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench Presence -benchtime 1000x
func BenchmarkPresence(b *testing.B) {
	brokertest.BenchmarkPresence(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// BenchmarkManyChannels: one node following 10,000 channels.
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench ManyChannels -benchtime 10000x
func BenchmarkManyChannels(b *testing.B) {
	brokertest.BenchmarkManyChannels(b, brokertest.BenchConfig{
		New: sharedBrokers(b),
	})
}

// sharedBrokers returns a maker of brokers that share one test stream,
// for the benchmarks: each node of a benchmark is a broker of its own.
func sharedBrokers(b *testing.B) func(*testing.B) live.Broker {
	url := natsURL(b)
	prefix := testPrefix(b, url)
	return func(b *testing.B) live.Broker {
		return natsbroker.New(connect(b, url), &natsbroker.Options{Prefix: prefix, Logger: servertest.Logger(b)})
	}
}

// BenchmarkManyPublishers: 64 goroutines of one node publishing over 1,000
// channels, each followed by another node, and 8 on one channel.
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench ManyPublishers -benchtime 30000x
func BenchmarkManyPublishers(b *testing.B) {
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New:   sharedBrokers(b),
		Loads: brokertest.ManyPublishers,
	})
}

// BenchmarkPublishKeyed measures Publish to its acknowledgement, 100 B on
// one channel, without a key and under a new key each time, from one
// goroutine and from 8. A keyed publication is a message of its own, so
// keyed ones that queue behind one on its way are not stored together.
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench PublishKeyed -benchtime 5000x
func BenchmarkPublishKeyed(b *testing.B) {
	url := natsURL(b)
	br, _, _ := newBroker(b, url, nil)
	data := []byte(`"` + strings.Repeat("x", 98) + `"`)
	var keys atomic.Uint64
	for _, keyed := range []bool{false, true} {
		for _, publishers := range []int{1, 8} {
			name := fmt.Sprintf("Plain/Publishers%d", publishers)
			if keyed {
				name = fmt.Sprintf("Keyed/Publishers%d", publishers)
			}
			b.Run(name, func(b *testing.B) {
				channel := channelName(b)
				publish := func() error {
					ctx := b.Context()
					if keyed {
						ctx = live.WithPublishKey(ctx, "k"+strconv.FormatUint(keys.Add(1), 36))
					}
					_, err := br.Publish(ctx, channel, data)
					return err
				}
				if publishers == 1 {
					for b.Loop() {
						if err := publish(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(max(1, publishers/runtime.GOMAXPROCS(0)))
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
}

// BenchmarkFollowMany measures one node following b.N channels with
// Follow, as a Hub does after a restart: how long until every follow is
// ready (follow-ms), the heap and goroutines each costs (B/channel,
// goroutines/channel: the broker's part and the NATS client's
// subscription, the callbacks' closures excluded), how long one
// publication on every channel through a second broker took to arrive
// (deliver-ms), and how long stopping them all took (stop-ms). New
// follows channels without messages, which each get a marker; Existing
// follows them again, when each has one.
//
//	cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench FollowMany -benchtime 10000x
func BenchmarkFollowMany(b *testing.B) {
	shared := sharedBrokers(b)
	newBroker := func(b *testing.B) live.Broker {
		br := shared(b)
		servertest.CloseAtEnd(b, br.(*natsbroker.Broker))
		return br
	}
	sub, pub := newBroker(b).(*natsbroker.Broker), newBroker(b)
	prefix := fmt.Sprintf("many-%d-", time.Now().UnixNano())
	for _, round := range []string{"New", "Existing"} {
		b.Run(round, func(b *testing.B) {
			n := b.N
			names := make([]string, n)
			for i := range names {
				names[i] = prefix + strconv.Itoa(i)
			}
			var ready, delivered sync.WaitGroup
			ready.Add(n)
			delivered.Add(n)
			var failed atomic.Pointer[error]
			readyFn := func(live.Position) { ready.Done() }
			deliverFn := func(live.Message) { delivered.Done() }
			endedFn := func(err error) { failed.CompareAndSwap(nil, &err); ready.Done() }
			stops := make([]func(), n)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			goroutines := runtime.NumGoroutine()
			b.ResetTimer()
			start := time.Now()
			for i, name := range names {
				stop, err := sub.Follow(name, readyFn, deliverFn, endedFn)
				if err != nil {
					b.Fatal(err)
				}
				stops[i] = stop
			}
			ready.Wait()
			followed := time.Since(start)
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			extra := runtime.NumGoroutine() - goroutines

			start = time.Now()
			if round == "New" {
				var next atomic.Int64
				var wg sync.WaitGroup
				for range 64 {
					wg.Go(func() {
						for {
							i := int(next.Add(1)) - 1
							if i >= n {
								return
							}
							if _, err := pub.Publish(context.Background(), names[i], []byte(`1`)); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				delivered.Wait()
			}
			deliver := time.Since(start)
			start = time.Now()
			for _, stop := range stops {
				stop()
			}
			stopped := time.Since(start)
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			b.ReportMetric(float64(followed.Milliseconds()), "follow-ms")
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "B/channel")
			b.ReportMetric(float64(extra)/float64(n), "goroutines/channel")
			if round == "New" {
				b.ReportMetric(float64(deliver.Milliseconds()), "deliver-ms")
			}
			b.ReportMetric(float64(stopped.Milliseconds()), "stop-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
