package live

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// Sink is a set of in-process subscribers whose transport discards what
// it is given, for benchmarking the hub without the network.
type Sink struct {
	delivered atomic.Int64
	target    atomic.Int64
	reached   chan struct{}
	stop      func()
}

// AttachSink subscribes n discarding connections to channel.
func (h *Hub) AttachSink(tb testing.TB, channel string, n int) *Sink {
	s := &Sink{reached: make(chan struct{}, 1)}
	s.target.Store(-1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	conns := make([]*conn, n)
	for i := range conns {
		c := newConn(h, nil, false)
		if !h.enter(c) {
			tb.Fatal("hub closed")
		}
		if err := h.subscribe(ctx, c, channel, resumeFrom{}, nil); err != nil {
			tb.Fatal(err)
		}
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.serve(ctx, sinkTransport{s})
		}()
	}
	s.stop = func() {
		cancel()
		wg.Wait()
		for _, c := range conns {
			h.leave(c)
		}
	}
	tb.Cleanup(s.stop)
	return s
}

// Expect arranges for Wait to return once total publications have been
// delivered across the sink, counting from now.
func (s *Sink) Expect(total int64) {
	s.target.Store(s.delivered.Load() + total)
	select {
	case <-s.reached:
	default:
	}
	s.check()
}

// Wait blocks until the expected deliveries have happened.
func (s *Sink) Wait() { <-s.reached }

func (s *Sink) check() {
	if t := s.target.Load(); t >= 0 && s.delivered.Load() >= t {
		select {
		case s.reached <- struct{}{}:
		default:
		}
	}
}

type sinkTransport struct{ s *Sink }

func (t sinkTransport) write(_ context.Context, batch []*frame) error {
	n := 0
	for _, f := range batch {
		if f.data {
			n++
		}
	}
	t.s.delivered.Add(int64(n))
	t.s.check()
	return nil
}

func (sinkTransport) heartbeat(context.Context) error { return nil }
