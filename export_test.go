package live

import (
	"context"
	"net/http"
	"runtime"
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
	var conns []*conn
	s.stop = func() {
		cancel()
		wg.Wait()
		for _, c := range conns {
			h.leave(c)
		}
	}
	tb.Cleanup(s.stop)
	for range n {
		c := newConn(h, nil, false)
		if err := h.enter(c); err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
		if err := h.subscribe(ctx, c, channel, resumeFrom{}, nil); err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.serve(ctx, sinkTransport{s})
		}()
	}
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

// Recorder is one in-process WebSocket-style subscriber whose writes can
// be held back, to make a client slow at will.
type Recorder struct {
	gate   chan struct{} // receives a token per batch allowed through
	mu     sync.Mutex    // guards frames
	frames [][]byte
	got    chan struct{} // signalled after each batch
	stop   func()
}

// AttachRecorder subscribes a recorder to channel. Its first batch waits
// until Release is called.
func (h *Hub) AttachRecorder(tb testing.TB, channel string) *Recorder {
	r := &Recorder{gate: make(chan struct{}), got: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	c := newConn(h, nil, true)
	if err := h.enter(c); err != nil {
		tb.Fatal(err)
	}
	if err := h.subscribe(ctx, c, channel, resumeFrom{}, nil); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.serve(ctx, recorderTransport{r})
	}()
	r.stop = func() {
		cancel()
		<-done
		h.leave(c)
	}
	tb.Cleanup(r.stop)
	return r
}

// Release lets every later batch through.
func (r *Recorder) Release() { close(r.gate) }

// Frames waits until n frames have been written, or the test's patience
// ends, and returns them.
func (r *Recorder) Frames(tb testing.TB, n int) [][]byte {
	for {
		r.mu.Lock()
		got := len(r.frames)
		r.mu.Unlock()
		if got >= n {
			break
		}
		<-r.got
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.frames...)
}

type recorderTransport struct{ r *Recorder }

func (t recorderTransport) write(ctx context.Context, batch []*frame) error {
	select {
	case <-t.r.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.r.mu.Lock()
	for _, f := range batch {
		t.r.frames = append(t.r.frames, f.ws)
	}
	t.r.mu.Unlock()
	select {
	case t.r.got <- struct{}{}:
	default:
	}
	return nil
}

func (recorderTransport) heartbeat(context.Context) error { return nil }

// HandleFrames feeds WebSocket frames from one in-process client to the
// hub and returns the frames queued in reply.
func (h *Hub) HandleFrames(frames ...[]byte) [][]byte {
	c := newConn(h, &http.Request{Header: http.Header{}}, true)
	if h.enter(c) != nil {
		return nil
	}
	defer h.leave(c)
	for _, b := range frames {
		h.handleFrame(context.Background(), c, b)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.q {
		out = append(out, f.ws)
	}
	return out
}

// QueuedBytes returns the bytes waiting in every connection's queue.
func (h *Hub) QueuedBytes() int { return h.queuedBytes() }

// Drains counts the goroutines started to write to connections that
// cannot be written without blocking.
func (h *Hub) Drains() int64 { return h.drains.Load() }

// MemoryChannels returns how many channels b keeps.
func MemoryChannels(b *MemoryBroker) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}

// HubChannels returns how many channels h keeps.
func HubChannels(h *Hub) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.channels)
}

// WatchesIdleStreams reports whether idle SSE streams wait in the hub's
// epoll set rather than with a reader goroutine each.
func WatchesIdleStreams() bool { return nonblocking && runtime.GOOS == "linux" }

// ParkedWebSockets returns how many of h's WebSockets have no reader
// goroutine, their sockets waiting in the close watcher.
func ParkedWebSockets(h *Hub) int {
	n := 0
	for _, c := range h.connections() {
		c.wmu.Lock()
		if c.parked {
			n++
		}
		c.wmu.Unlock()
	}
	return n
}
