package brokertest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
)

// BenchConfig describes the brokers that [Benchmark] measures.
type BenchConfig struct {
	// New returns a fresh broker for one run of a load, or fails b. The
	// brokers it returns for one b must share what they store, as for
	// [RunNodes]: one subscribes, the others publish, as separate
	// processes would. Register with b.Cleanup whatever the broker depends
	// on; if the broker has a Close() error method, Benchmark closes it
	// first.
	New func(b *testing.B) live.Broker

	// Loads are the benchmarks to run, each a sub-benchmark of its Name.
	// Nil means Sequential/100B, Parallel8/100B, Parallel8/16KiB and
	// Sequential/128KiB: one or eight publishing goroutines on one broker
	// and one channel, with publications of that size.
	Loads []Load

	// Report, if set, is called after each run of a load with the brokers
	// that published and the one that subscribed, to report the broker's
	// own figures with b.ReportMetric, per publication (b.N of them).
	Report func(b *testing.B, publishers []live.Broker, subscriber live.Broker)
}

// A Load is one benchmark of [Benchmark]: b.N publications, each timed
// from the call of Publish to its delivery to a subscriber on another
// broker.
type Load struct {
	Name string // of the sub-benchmark, such as "Parallel8/100B"

	// Size is the length of each publication, a JSON string, in bytes;
	// at least 2.
	Size int

	// Publishers is how many goroutines publish the b.N publications
	// between them; 0 means 1. A single publisher waits for each delivery
	// before it publishes again, which measures the latency without
	// queueing; more measure the throughput.
	Publishers int

	// Brokers is how many brokers the publishers publish on, in turn; 0
	// means 1. With more than one, brokers contend for the positions on a
	// channel as separate processes do.
	Brokers int

	// Channels is how many channels the publications are spread over, in
	// turn, each with its own subscription; 0 means 1.
	Channels int
}

// ManyPublishers are loads of a busy node: 64 goroutines publishing over
// 1,000 channels, and 8 on one channel. Each module's
// BenchmarkManyPublishers runs them.
var ManyPublishers = []Load{
	{Name: "Parallel64/1000Channels/100B", Size: 100, Publishers: 64, Channels: 1000},
	{Name: "Parallel8/100B", Size: 100, Publishers: 8},
}

var defaultLoads = []Load{
	{Name: "Sequential/100B", Size: 100, Publishers: 1},
	{Name: "Parallel8/100B", Size: 100, Publishers: 8},
	{Name: "Parallel8/16KiB", Size: 16 << 10, Publishers: 8},
	{Name: "Sequential/128KiB", Size: 128 << 10, Publishers: 1},
}

// Benchmark runs each load of cfg as a sub-benchmark of b and reports the
// median and 99th percentile of the time from Publish to delivery
// (p50-µs, p99-µs) and the publications delivered per second (msgs/s).
// Run it with a fixed count, so every load publishes the same number:
//
//	func BenchmarkPublishDeliver(b *testing.B) {
//		brokertest.Benchmark(b, brokertest.BenchConfig{New: newSharedBroker})
//	}
//
//	go test -run '^$' -bench PublishDeliver -benchtime 5000x
//
// A subscription that ends, or a publication that fails, fails b.
func Benchmark(b *testing.B, cfg BenchConfig) {
	if cfg.New == nil {
		panic("brokertest: BenchConfig.New is nil")
	}
	loads := cfg.Loads
	if loads == nil {
		loads = defaultLoads
	}
	for _, l := range loads {
		if l.Size < 2 {
			panic(fmt.Sprintf("brokertest: Load %q has Size %d, want at least 2", l.Name, l.Size))
		}
		b.Run(l.Name, func(b *testing.B) { benchLoad(b, cfg, l) })
	}
}

// benchChannel is one channel of a load with its subscription. Times are
// indexed by Seq after the head.
type benchChannel struct {
	name               string
	head               live.Position // set by ready, before any publication
	started, delivered []time.Time
}

// broker returns a broker from cfg.New, closed when b ends.
func (cfg BenchConfig) broker(b *testing.B) live.Broker {
	b.Helper()
	return closedAtEnd(b, cfg.New(b), "BenchConfig.New")
}

func benchLoad(b *testing.B, cfg BenchConfig, l Load) {
	newBroker := func() live.Broker { return cfg.broker(b) }
	sub := newBroker()
	pubs := make([]live.Broker, max(l.Brokers, 1))
	for i := range pubs {
		pubs[i] = newBroker()
	}
	publishers, n := max(l.Publishers, 1), b.N
	data := []byte(`"` + strings.Repeat("x", l.Size-2) + `"`)
	chans := make([]*benchChannel, max(l.Channels, 1))
	perChannel := (n + len(chans) - 1) / len(chans)

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	each := make(chan struct{}, 1) // a delivery; for a single publisher
	all := make(chan struct{})     // closed on the last delivery
	var remaining, strays atomic.Int64
	remaining.Store(int64(n))
	done := make(chan error, len(chans)) // what the subscriptions returned
	subscribed := 0
	defer func() {
		cancel(nil)
		for range subscribed {
			<-done
		}
	}()
	for i := range chans {
		c := &benchChannel{
			name:      fmt.Sprintf("%s-%d", channelName(b), i),
			started:   make([]time.Time, perChannel+1),
			delivered: make([]time.Time, perChannel+1),
		}
		chans[i] = c
		readyc := make(chan struct{})
		subscribed++
		go func() {
			done <- sub.Subscribe(ctx, c.name,
				func(head live.Position) { c.head = head; close(readyc) },
				func(m live.Message) {
					i := m.Pos.Seq - c.head.Seq
					if i < 1 || i >= uint64(len(c.delivered)) || !c.delivered[i].IsZero() {
						strays.Add(1)
						return
					}
					c.delivered[i] = time.Now()
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
			done <- err
			b.Fatalf("Subscribe(%q) returned %v before ready", c.name, err)
		}
	}

	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	begin := time.Now()
	for p := range publishers {
		pub := pubs[p%len(pubs)]
		wg.Go(func() {
			for {
				k := next.Add(1)
				if k > int64(n) {
					return
				}
				c := chans[k%int64(len(chans))]
				t0 := time.Now()
				pos, err := pub.Publish(ctx, c.name, data)
				if err != nil {
					cancel(fmt.Errorf("Publish(%q): %w", c.name, err))
					return
				}
				if i := pos.Seq - c.head.Seq; i >= 1 && i < uint64(len(c.started)) {
					c.started[i] = t0
				}
				if publishers == 1 {
					select {
					case <-each:
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	select {
	case <-all:
	case err := <-done:
		done <- err
		cancel(fmt.Errorf("a subscription returned %v during the benchmark", err))
	case <-ctx.Done():
	}
	elapsed := time.Since(begin)
	b.StopTimer()
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		b.Fatal(err)
	}
	if k := strays.Load(); k > 0 {
		b.Fatalf("%d deliveries were not the next publication of their channel", k)
	}

	var latencies []time.Duration
	for _, c := range chans {
		for i := 1; i < len(c.started); i++ {
			if !c.started[i].IsZero() {
				latencies = append(latencies, c.delivered[i].Sub(c.started[i]))
			}
		}
	}
	if len(latencies) != n {
		b.Fatalf("%d of %d publications were timed: Publish returned positions other than those delivered", len(latencies), n)
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[n/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(latencies[n*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	if cfg.Report != nil {
		cfg.Report(b, pubs, sub)
	}
}

// BenchmarkManyChannels measures a node following many channels, one
// subscriber each, as a Hub does after a restart: b.N subscriptions are
// made at once on one broker (with Follow if it is a [live.Follower],
// otherwise each Subscribe on a goroutine of its own), and it reports how long they took to become
// ready (subscribe-ms), the heap and goroutines each costs the broker
// (B/channel and goroutines/channel, besides the goroutine calling
// Subscribe, which is the caller's), how long one publication on every
// channel through a second broker took to arrive (deliver-ms), and how
// long the subscriptions took to end once cancelled (release-ms). Run it
// with a fixed count:
//
//	go test -run '^$' -bench ManyChannels -benchtime 10000x
func BenchmarkManyChannels(b *testing.B, cfg BenchConfig) {
	if cfg.New == nil {
		panic("brokertest: BenchConfig.New is nil")
	}
	sub, pub := cfg.broker(b), cfg.broker(b)
	prefix := fmt.Sprintf("many-%d-", time.Now().UnixNano())
	n := b.N
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready, delivered sync.WaitGroup
	ready.Add(n)
	delivered.Add(n)
	var ended sync.WaitGroup
	errs := make(chan error, n)
	f, following := sub.(live.Follower)
	stops := make([]func(), 0, n)
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		var once, got sync.Once
		ready := func(live.Position) { once.Do(ready.Done) }
		deliver := func(live.Message) { got.Do(delivered.Done) }
		if following {
			stop, err := f.Follow(prefix+strconv.Itoa(i), ready, deliver, func(err error) { errs <- err })
			if err != nil {
				b.Fatal(err)
			}
			stops = append(stops, stop)
			continue
		}
		ended.Add(1)
		go func() {
			defer ended.Done()
			err := sub.Subscribe(ctx, prefix+strconv.Itoa(i), ready, deliver)
			if err != nil && ctx.Err() == nil {
				errs <- err
			}
		}()
	}
	ready.Wait()
	subscribed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	extra := runtime.NumGoroutine() - goroutines
	if !following {
		extra -= n // the callers'
	}

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
				if _, err := pub.Publish(ctx, prefix+strconv.Itoa(i), []byte(`1`)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	delivered.Wait()
	deliver := time.Since(start)

	start = time.Now()
	cancel()
	for _, stop := range stops {
		stop()
	}
	ended.Wait()
	released := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(subscribed.Milliseconds()), "subscribe-ms")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "B/channel")
	b.ReportMetric(float64(extra)/float64(n), "goroutines/channel")
	b.ReportMetric(float64(deliver.Milliseconds()), "deliver-ms")
	b.ReportMetric(float64(released.Milliseconds()), "release-ms")
	b.ReportMetric(0, "ns/op")
}
