package live

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live/internal/sse"
)

// Sink is a set of in-process SSE subscribers, served by the hub's
// writers like any stream, whose connections discard what they are
// written after counting the publications in it: the cost of the hub
// without the network.
type Sink struct {
	delivered atomic.Int64
	target    atomic.Int64
	reached   chan struct{}
}

// AttachSink subscribes n discarding connections to channel.
func (h *Hub) AttachSink(tb testing.TB, channel string, n int) *Sink {
	s := &Sink{reached: make(chan struct{}, 1)}
	s.target.Store(-1)
	var conns []*conn
	tb.Cleanup(func() {
		for _, c := range conns {
			c.kill(ErrClosed)
			h.leave(c)
		}
	})
	for range n {
		c := newConn(h, nil, false)
		if err := h.enter(c, h.controlGen()); err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
		if err := h.subscribe(context.Background(), c, channel, resumeFrom{}, nil, h.controlGen()); err != nil {
			tb.Fatal(err)
		}
		c.takeOver(sinkConn{s}, wireSSE, nil)
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

// countData counts the whole events in p that have a data line, and
// returns the start of an event written in part. It is the Sink's own
// reader, not internal/sse's: it allocates nothing, so that
// BenchmarkFanout's allocations are the hub's.
func countData(p []byte) (n int, rest []byte) {
	for {
		end := bytes.Index(p, []byte("\n\n"))
		if end < 0 {
			return n, p
		}
		if bytes.HasPrefix(p, []byte("data: ")) || bytes.Contains(p[:end], []byte("\ndata: ")) {
			n++
		}
		p = p[end+2:]
	}
}

// sinkConn is a sink connection's output: it takes everything at once
// and counts the events with data, which are publications (the others
// are acknowledgements and heartbeats).
type sinkConn struct{ s *Sink }

func (k sinkConn) TryWrite(p []byte) (int, error) {
	n, _ := countData(p)
	k.s.delivered.Add(int64(n))
	k.s.check()
	return len(p), nil
}

func (k sinkConn) Write(p []byte) (int, error)    { return k.TryWrite(p) }
func (sinkConn) SetWriteDeadline(time.Time) error { return nil }
func (sinkConn) Close() error                     { return nil }

// Recorder is one in-process subscriber that gets every frame as the
// WebSocket sends it (a multiplexed SSE stream, served by the hub's
// writers), whose writes can be held back to make a client slow at will.
type Recorder struct {
	gate   chan struct{} // closed by Release
	closed chan struct{} // closed when the hub closes the connection
	once   sync.Once
	mu     sync.Mutex // guards frames and rest
	frames [][]byte
	rest   []byte        // the start of an event written in part
	got    chan struct{} // signalled after each write
}

// AttachRecorder subscribes a recorder to channel. Its first write waits
// until Release is called.
func (h *Hub) AttachRecorder(tb testing.TB, channel string) *Recorder {
	return h.AttachRecorderFrom(tb, channel, "")
}

// AttachRecorderFrom subscribes a recorder to channel that resumes from
// cursor, if it is not empty.
func (h *Hub) AttachRecorderFrom(tb testing.TB, channel, cursor string) *Recorder {
	r := &Recorder{gate: make(chan struct{}), closed: make(chan struct{}), got: make(chan struct{}, 1)}
	c := newConn(h, nil, true)
	if err := h.enter(c, h.controlGen()); err != nil {
		tb.Fatal(err)
	}
	var from resumeFrom
	if cursor != "" {
		from = parseResume(cursor)
	}
	if err := h.subscribe(context.Background(), c, channel, from, nil, h.controlGen()); err != nil {
		tb.Fatal(err)
	}
	c.takeOver(r, wireSSEMux, nil)
	tb.Cleanup(func() {
		c.kill(ErrClosed)
		h.leave(c)
	})
	return r
}

// Release lets every later write through.
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

// Write records the frames in p, once Release was called.
func (r *Recorder) Write(p []byte) (int, error) {
	select {
	case <-r.gate:
	case <-r.closed:
		return 0, net.ErrClosed
	}
	r.mu.Lock()
	rest := sse.Split(append(r.rest, p...), func(ev sse.Event) {
		if ev.Data != "" {
			r.frames = append(r.frames, []byte(ev.Data))
		}
	})
	r.rest = bytes.Clone(rest)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (*Recorder) SetWriteDeadline(time.Time) error { return nil }

func (r *Recorder) Close() error {
	r.once.Do(func() { close(r.closed) })
	return nil
}

// HandleFrames feeds WebSocket frames from one in-process client to the
// hub and returns the frames queued in reply.
func (h *Hub) HandleFrames(frames ...[]byte) [][]byte {
	c := newConn(h, &http.Request{Header: http.Header{}}, true)
	if h.enter(c, h.controlGen()) != nil {
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

// Hubs sharing a broker beat faster in tests, so that one waits less to
// know the others.
func init() { hubBeat = 300 * time.Millisecond }

// HubID names h as errors about hubs that did not answer do.
func HubID(h *Hub) string { return h.id }

// BoundRetryStore sets the bounds of the hub's in-memory idempotency
// store, which are 64 MiB and 100,000 entries otherwise.
func (h *Hub) BoundRetryStore(bytes, entries int) {
	h.idem.mu.Lock()
	defer h.idem.mu.Unlock()
	h.idem.maxBytes, h.idem.maxEntries = bytes, entries
}

// RetryClaims returns how many requests hold a claim in the hub's
// in-memory idempotency store.
func (h *Hub) RetryClaims() int {
	h.idem.mu.Lock()
	defer h.idem.mu.Unlock()
	n := 0
	for _, sc := range h.idem.scopes {
		n += sc.claims
	}
	return n
}
