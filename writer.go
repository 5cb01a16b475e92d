package live

import (
	"sync"
	"time"
)

// Connections the Hub has taken over from net/http (WebSocket, and SSE on
// HTTP/1.1) have no writer goroutine of their own. A small pool of writers
// serves them in turn: a connection with output joins a queue once, and
// the writer that takes it encodes everything it has queued into one
// buffer and writes it with one non-blocking system call. Under load the
// queue is long, so each connection gathers many messages per write;
// when idle, a message is written as soon as it is published.
//
// A connection whose socket is full is handed to a goroutine of its own
// that waits, up to Options.WriteTimeout, for the client to read; the
// pool's writers never wait for a client. Idle connections hold no
// goroutine (SSE) or only their reader (WebSocket), no timer and no
// buffer.
//
// A connection's frames wait in its queue (queue.go); a writer's turn on
// it (conn.flush, socket.go) encodes them into its socket's output and
// writes that.

// writers is the Hub's pool of writer goroutines and their queue.
type writers struct {
	mu     sync.Mutex // guards the fields below; wake waits on it
	wake   sync.Cond
	queue  []*conn // connections with output, in order; queue[head:] are waiting
	head   int
	idle   int // writers waiting for work
	closed bool
	waited func(time.Duration) // Options.Observe.Waited, or nil
}

func (w *writers) init(waited func(time.Duration)) {
	w.wake.L = &w.mu
	w.waited = waited
}

// add queues c. The caller has marked c scheduled, so c is queued once.
func (w *writers) add(c *conn) {
	var now int64
	if w.waited != nil {
		now = nanotime()
	}
	w.mu.Lock()
	c.joined = now
	w.queue = append(w.queue, c)
	wake := w.idle > 0
	w.mu.Unlock()
	if wake {
		w.wake.Signal()
	}
}

// take returns the next connection to write, waiting for one; ok is false
// once the pool is closed and its queue is empty.
func (w *writers) take() (c *conn, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.head == len(w.queue) {
		if w.closed {
			return nil, false
		}
		w.idle++
		w.wake.Wait()
		w.idle--
	}
	c = w.queue[w.head]
	w.queue[w.head] = nil
	w.head++
	switch {
	case w.head == len(w.queue):
		w.queue, w.head = w.queue[:0], 0
	case w.head >= 1024 && w.head*2 >= len(w.queue):
		n := copy(w.queue, w.queue[w.head:])
		clear(w.queue[n:])
		w.queue, w.head = w.queue[:n], 0
	}
	return c, true
}

func (w *writers) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.wake.Broadcast()
}

// runWriter is one writer goroutine.
func (h *Hub) runWriter() error {
	for {
		c, ok := h.writers.take()
		if !ok {
			return nil
		}
		if w := h.writers.waited; w != nil && c.joined != 0 {
			// Read after take, which ordered it after add's write; add
			// writes it again only once this turn has ended.
			w(time.Duration(nanotime() - c.joined))
		}
		c.flush()
	}
}
