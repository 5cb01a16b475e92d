package live

import (
	"encoding/binary"
	"sync"
	"syscall"
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

// writers is the Hub's pool of writer goroutines and their queue.
type writers struct {
	mu     sync.Mutex
	wake   sync.Cond
	queue  []*conn // connections with output, in order; queue[head:] are waiting
	head   int
	idle   int // writers waiting for work
	closed bool
}

func (w *writers) init() { w.wake.L = &w.mu }

// add queues c. The caller has marked c scheduled, so c is queued once.
func (w *writers) add(c *conn) {
	w.mu.Lock()
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

// run is one writer goroutine.
func (h *Hub) runWriter() error {
	for {
		c, ok := h.writers.take()
		if !ok {
			return nil
		}
		c.flush()
	}
}

// How a taken-over connection encodes frames.
const (
	kindSSE    = iota + 1 // one channel: each frame's SSE encoding
	kindSSEMux            // many channels: "data: <WebSocket frame>"
	kindWS                // WebSocket text messages
)

// outPool recycles output buffers. Idle connections hold none. A buffer
// is pooled in a box (sync.Pool holds pointers), and the boxes of buffers
// in use wait in boxPool, so that recycling allocates nothing.
var (
	outPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
	boxPool = sync.Pool{New: func() any { return new([]byte) }}
)

func getOut() []byte {
	p := outPool.Get().(*[]byte)
	b := (*p)[:0]
	*p = nil
	boxPool.Put(p)
	return b
}

func putOut(b []byte) {
	if cap(b) > 64<<10 {
		return
	}
	p := boxPool.Get().(*[]byte)
	*p = b[:0]
	outPool.Put(p)
}

// An output is what the writers write a connection to: the net.Conn taken
// over from net/http, or a stream's ResponseWriter (streamConn). Close
// must make a write waiting for the client return. The writers write a
// socket without waiting (setConnLocked), and any other output that is a
// tryWriter; the rest from a goroutine of the connection's own.
type output interface {
	Write(p []byte) (int, error)
	SetWriteDeadline(t time.Time) error
	Close() error
}

// A tryWriter writes as much as it can of p without waiting.
type tryWriter interface {
	TryWrite(p []byte) (int, error)
}

// takeOver makes the hub's writers serve c on nc from now on. head is
// written before anything queued.
func (c *conn) takeOver(nc output, kind int, head []byte) {
	c.mu.Lock()
	c.wmu.Lock()
	if nc != nil {
		c.setConnLocked(nc)
	}
	if len(head) > 0 {
		c.out = append(getOut(), head...)
	}
	c.wmu.Unlock()
	c.kind = kind
	c.sched = true
	c.mu.Unlock()
	c.hub.writers.add(c)
	select {
	case <-c.hub.done:
		// Close may have looked for taken-over connections before this one.
		c.closeWith(statusGoingAway, "server shutting down", time.Now().Add(closeWait))
		c.kill(ErrClosed)
	default:
	}
}

// setConnLocked records the connection the writers write to, and its
// descriptor where the system allows non-blocking writes to it; without
// one (TLS, or another system), c's output is written through nc from a
// goroutine of its own.
func (c *conn) setConnLocked(nc output) {
	c.nc = nc
	if sc, ok := nc.(syscall.Conn); ok && nonblocking {
		c.raw, _ = sc.SyscallConn()
		c.rawWrite = func(fd uintptr) bool {
			c.wn, c.werr = writeNonblocking(fd, c.wbuf)
			return true
		}
	}
}

// schedule queues a taken-over connection for a writer unless it is
// queued or being written already.
func (c *conn) scheduleLocked() bool {
	if c.sched || c.kind == 0 || c.ended {
		return false
	}
	c.sched = true
	return true
}

func (c *conn) schedule() {
	c.mu.Lock()
	c.unlockAndWake()
}

// unlockAndWake releases c.mu and wakes whoever writes c: the hub's
// writers for a taken-over connection, otherwise its own goroutine.
func (c *conn) unlockAndWake() {
	add, served := c.scheduleLocked(), c.kind != 0
	c.mu.Unlock()
	switch {
	case add:
		c.hub.writers.add(c)
	case !served:
		c.signal()
	}
}

// kill ends a taken-over connection: its socket closes now, and a writer
// finishes it. It is safe from any goroutine, including fan-out's, and
// from a connection that has not been taken over yet.
func (c *conn) kill(why error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	if lw, ok := why.(*lastWords); ok && c.kind != 0 {
		// Taken over since end found it was not: end it as it ends those.
		c.mu.Unlock()
		c.end(lw.code, lw.reason, lw.f)
		return
	}
	c.ended, c.endErr = true, why
	c.roomLocked()
	add := c.kind != 0 && !c.sched
	c.sched = c.sched || add
	held := c.kind == 0 // a long-poll may be waiting on wake
	cancel := c.cancel
	// Under mu: takeOver records a stream's socket with its kind, so a
	// stream not taken over has none to close yet. A WebSocket in its
	// handshake has one, kept for its last words: finish writes them and
	// closes it once it is taken over.
	_, words := why.(*lastWords)
	c.wmu.Lock()
	nc, watched := c.nc, c.watched
	c.watched = 0
	c.wmu.Unlock()
	c.mu.Unlock()
	if watched != 0 {
		c.hub.closes.unwatch(c, c.raw, watched-1)
	}
	if nc != nil && !words {
		nc.Close()
	}
	if cancel != nil {
		cancel()
	}
	if held {
		c.signal()
	}
	if add {
		c.hub.writers.add(c)
	}
}

// fail ends c from a goroutine that holds its schedule (a writer, or
// drain), and hands it to a writer to finish.
func (c *conn) fail(err error) {
	c.kill(err)
	c.hub.writers.add(c)
}

// flush is a writer's turn on c: encode what is queued, write it without
// waiting, and queue c again if more arrived meanwhile.
func (c *conn) flush() {
	c.mu.Lock()
	c.roomLocked()
	if c.ended {
		c.sched = false
		c.mu.Unlock()
		c.finish()
		return
	}
	batch := c.q
	c.q, c.spare = c.spare, nil
	c.bytes = 0
	beat, slow := c.beat, c.slow
	c.beat = false
	c.mu.Unlock()
	if slow {
		c.closeWith(statusTryAgainLater, "too slow: resume with your cursors", time.Now().Add(closeWait))
		c.fail(errSlow)
		return
	}

	c.wmu.Lock()
	if c.out == nil && (len(batch) > 0 || beat) {
		c.out = getOut()
	}
	for _, f := range batch {
		c.out = c.appendFrame(c.out, f)
	}
	if beat {
		c.out = c.appendHeartbeat(c.out)
	}
	pending := len(c.out) > 0
	c.wmu.Unlock()
	c.hub.stats.delivered.Add(int64(len(batch)))
	clear(batch)
	if cap(batch) <= 256 {
		c.mu.Lock()
		c.spare = batch[:0]
		c.mu.Unlock()
	}

	switch {
	case !pending:
		c.idle()
		return
	case !c.nonblocking():
		// No non-blocking writes on this connection (TLS, HTTP/2): write
		// from a goroutine of its own.
		c.hub.group.Go(c.drain)
		return
	}
	c.wlock.Lock()
	buf := c.takeOut()
	n, err := c.writeNow(buf)
	if n < len(buf) && err == nil {
		// The socket is full: keep the rest first in line and wait for
		// the client elsewhere.
		c.wmu.Lock()
		rest := append(getOut(), buf[n:]...)
		c.out = append(rest, c.out...)
		c.wmu.Unlock()
	}
	c.wlock.Unlock()
	if buf != nil {
		putOut(buf)
	}
	switch {
	case err != nil:
		c.fail(err)
	case n < len(buf):
		c.hub.group.Go(c.drain)
	default:
		c.idle()
	}
}

// idle ends a writer's turn on c: c leaves the writers unless more
// arrived meanwhile, in which case it goes to the back of the line.
func (c *conn) idle() {
	c.mu.Lock()
	more := len(c.q) > 0 || c.beat || c.slow || c.ended
	if !more {
		c.wmu.Lock()
		more = len(c.out) > 0
		c.wmu.Unlock()
	}
	if !more {
		c.sched = false
	}
	c.mu.Unlock()
	if more {
		c.hub.writers.add(c)
	}
}

// drain writes c's pending output, waiting up to the write timeout for
// the client to read it, then gives c back to the writers. It runs on a
// goroutine of its own while the client is slow (or always, for
// connections without non-blocking writes).
func (c *conn) drain() error {
	c.hub.drains.Add(1)
	c.wlock.Lock()
	buf := c.takeOut()
	var err error
	if len(buf) > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.hub.opts.WriteTimeout))
		_, err = c.nc.Write(buf)
		c.nc.SetWriteDeadline(time.Time{})
	}
	c.wlock.Unlock()
	putOut(buf)
	if err != nil {
		c.fail(err)
		return nil
	}
	c.hub.writers.add(c) // still scheduled: a writer takes it from here
	return nil
}

// finish releases a connection that kill ended. A WebSocket is released
// by its reader instead, which ends when the socket does, unless it has
// none (parked).
func (c *conn) finish() {
	c.mu.Lock()
	lw, _ := c.endErr.(*lastWords)
	c.mu.Unlock()
	switch {
	case lw != nil && c.nc != nil && c.kind == kindWS:
		c.closeWith(lw.code, lw.reason, time.Now().Add(closeWait))
	case lw != nil && c.nc != nil:
		// Ended before it was taken over: the response head, then the
		// reason, and nothing queued meanwhile.
		c.wmu.Lock()
		if c.out == nil {
			c.out = getOut()
		}
		c.out = c.appendLast(c.out, lw)
		c.wmu.Unlock()
		c.wlock.Lock()
		c.writeLastLocked(time.Now().Add(closeWait))
		c.wlock.Unlock()
	}
	c.wmu.Lock()
	if c.out != nil {
		putOut(c.out)
		c.out = nil
	}
	nc := c.nc
	c.wmu.Unlock()
	if nc != nil {
		nc.Close() // kill may have come before the connection was taken over
	}
	if c.kind != kindWS || c.unpark() {
		c.hub.leave(c)
	}
}

// closeWait bounds the time spent writing last words before a close.
const closeWait = 100 * time.Millisecond

// flushNow writes what c has pending if no writer is writing it, without
// waiting for the client; it is for last words before a close.
func (c *conn) flushNow() {
	if !c.wlock.TryLock() {
		return
	}
	c.writeLastLocked(time.Now().Add(closeWait))
	c.wlock.Unlock()
}

// writeLastLocked writes what c has pending as far as the socket takes it
// by until. The caller holds wlock.
func (c *conn) writeLastLocked(until time.Time) {
	buf := c.takeOut()
	if len(buf) == 0 || c.nc == nil {
		return
	}
	if c.nonblocking() {
		c.writeNow(buf)
	} else {
		c.nc.SetWriteDeadline(until)
		c.nc.Write(buf)
	}
	putOut(buf)
}

// takeOut takes c's pending output; the caller writes it or puts it back.
func (c *conn) takeOut() []byte {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	buf := c.out
	c.out = nil
	return buf
}

// nonblocking reports whether c's output can be written without waiting.
func (c *conn) nonblocking() bool {
	if c.raw != nil {
		return true
	}
	_, ok := c.nc.(tryWriter)
	return ok
}

// writeNow writes as much of b as the socket takes without waiting. The
// caller holds wlock.
func (c *conn) writeNow(b []byte) (n int, err error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.hub.stats.writes.Add(1)
	if c.raw == nil {
		return c.nc.(tryWriter).TryWrite(b)
	}
	c.wbuf = b
	err = c.raw.Write(c.rawWrite)
	n, werr := c.wn, c.werr
	c.wbuf, c.werr = nil, nil
	if err == nil {
		err = werr
	}
	return n, err
}

// unpark takes a parked WebSocket from the close watcher, for a reader
// to start or for finish to release, and reports whether it was parked.
func (c *conn) unpark() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	p := c.parked
	c.parked = false
	return p
}

// closeWith sends a WebSocket close frame, or on a multiplexed SSE stream
// its "close" frame (closeFrame), as far as the socket takes it by until.
func (c *conn) closeWith(code uint16, reason string, until time.Time) {
	if c.kind != kindWS && c.kind != kindSSEMux {
		return
	}
	c.wmu.Lock()
	b := c.out
	if b == nil {
		b = getOut()
	}
	if c.kind == kindWS {
		b = appendWSHeader(b, opClose, 2+len(reason))
		b = binary.BigEndian.AppendUint16(b, code)
		c.out = append(b, reason...)
	} else {
		c.out = c.appendFrame(b, closeFrame(code, reason))
	}
	c.wmu.Unlock()
	// Take the write turn from whoever has it, bounding a wait for the
	// client to read, so the close frame follows what was written.
	c.nc.SetWriteDeadline(until)
	c.wlock.Lock()
	c.writeLastLocked(until)
	c.wlock.Unlock()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}
