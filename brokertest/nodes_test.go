package brokertest_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
)

// A memoryServer stands for a broker's server in these tests: the brokers
// it hands out share one MemoryBroker, which a loss of data replaces.
type memoryServer struct {
	mu   sync.Mutex // guards b, lost and old
	b    *live.MemoryBroker
	lost chan struct{} // closed when b is replaced
	old  []*live.MemoryBroker
}

const memoryHistorySize = 16

// errDataLost ends the subscriptions of a memoryServer that lost its data.
var errDataLost = errors.New("memory server: data lost")

func newMemoryServer(tb testing.TB) *memoryServer {
	s := &memoryServer{
		b:    live.NewMemoryBroker(&live.MemoryOptions{HistorySize: memoryHistorySize}),
		lost: make(chan struct{}),
	}
	tb.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, b := range append(s.old, s.b) {
			b.Close()
		}
	})
	return s
}

func (s *memoryServer) current() (*live.MemoryBroker, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b, s.lost
}

// loseData replaces the server's data with nothing.
func (s *memoryServer) loseData() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.old = append(s.old, s.b)
	s.b = live.NewMemoryBroker(&live.MemoryOptions{HistorySize: memoryHistorySize})
	close(s.lost)
	s.lost = make(chan struct{})
}

// A memoryClient is one process's broker on a memoryServer.
type memoryClient struct{ s *memoryServer }

func (c memoryClient) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	b, _ := c.s.current()
	return b.Publish(ctx, channel, data)
}

func (c memoryClient) PublishIf(ctx context.Context, channel string, head live.Position, data []byte) (live.Position, error) {
	b, _ := c.s.current()
	return b.PublishIf(ctx, channel, head, data)
}

func (c memoryClient) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	b, _ := c.s.current()
	return b.Since(ctx, channel, after)
}

func (c memoryClient) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	b, lost := c.s.current()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-lost:
			cancel(errDataLost)
		case <-ctx.Done():
		}
	}()
	err := b.Subscribe(ctx, channel, ready, deliver)
	if errors.Is(context.Cause(ctx), errDataLost) {
		return errDataLost
	}
	return err
}

// A cutClient is a memoryClient whose link to the server breaks for good
// once cut is closed.
type cutClient struct {
	memoryClient
	cut chan struct{}
}

var errCut = errors.New("memory server: link cut")

func (c cutClient) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	select {
	case <-c.cut:
		return live.Position{}, errCut
	default:
	}
	return c.memoryClient.Publish(ctx, channel, data)
}

func (c cutClient) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.cut:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := c.memoryClient.Subscribe(ctx, channel, ready, deliver)
	select {
	case <-c.cut:
		return errCut
	default:
		return err
	}
}

// TestRunNodesMemory runs RunNodes on brokers that share a MemoryBroker.
func TestRunNodesMemory(t *testing.T) {
	s := newMemoryServer(t)
	brokertest.RunNodes(t, brokertest.Config{
		New:         func(*testing.T) live.Broker { return memoryClient{s} },
		HistorySize: memoryHistorySize,
		LoseData:    func(*testing.T) { s.loseData() },
		Cut: func(*testing.T) (live.Broker, func()) {
			c := cutClient{memoryClient{s}, make(chan struct{})}
			return c, func() { close(c.cut) }
		},
	})
}

// TestRunMemoryShared runs Run on the same brokers: a Config for RunNodes
// serves Run too.
func TestRunMemoryShared(t *testing.T) {
	s := newMemoryServer(t)
	brokertest.Run(t, brokertest.Config{
		New:         func(*testing.T) live.Broker { return memoryClient{s} },
		HistorySize: memoryHistorySize,
	})
}

// BenchmarkMemory measures the delivery from one broker to another through
// a shared MemoryBroker, with every kind of load.
func BenchmarkMemory(b *testing.B) {
	s := newMemoryServer(b)
	brokertest.Benchmark(b, brokertest.BenchConfig{
		New: func(*testing.B) live.Broker { return memoryClient{s} },
		Loads: []brokertest.Load{
			{Name: "Sequential/100B", Size: 100},
			{Name: "Parallel8/100B", Size: 100, Publishers: 8},
			{Name: "Parallel8TwoBrokers/100B", Size: 100, Publishers: 8, Brokers: 2},
			{Name: "Parallel8/8Channels/100B", Size: 100, Publishers: 8, Channels: 8},
		},
		Report: func(b *testing.B, pubs []live.Broker, sub live.Broker) {
			b.ReportMetric(float64(len(pubs)), "brokers")
		},
	})
}

func BenchmarkPresenceMemory(b *testing.B) {
	s := newMemoryServer(b)
	brokertest.BenchmarkPresence(b, brokertest.BenchConfig{New: func(*testing.B) live.Broker { return memoryClient{s} }})
}

func BenchmarkManyChannelsMemory(b *testing.B) {
	s := newMemoryServer(b)
	brokertest.BenchmarkManyChannels(b, brokertest.BenchConfig{New: func(*testing.B) live.Broker { return memoryClient{s} }})
}
