package live

import (
	"encoding/binary"
	"sync"
	"syscall"
	"time"
)

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

// A socket is the half of a conn that the hub's writers write: the output
// a taken-over connection is written to, and the bytes encoded for it but
// not written yet. A writer's turn (flush) moves the queue's frames here.
type socket struct {
	// nc is written once, under wmu, before the connection is taken over
	// (setConnLocked, with raw and rawWrite); it is read under wmu where
	// that may not have happened (kill), without it by the connection's
	// writers. flate is set before the connection is taken over.
	nc    output
	raw   syscall.RawConn // nc's, for non-blocking writes; nil without
	flate bool            // the WebSocket negotiated compression

	// wlock is held while writing to nc, so that writes keep their order.
	// rawWrite writes wbuf, non-blocking, into wn and werr under it.
	wlock    sync.Mutex
	rawWrite func(fd uintptr) bool
	wbuf     []byte
	wn       int
	werr     error

	// wmu guards the fields below. It is never held across a write.
	wmu     sync.Mutex
	out     []byte // encoded output not yet written
	watched int32  // 1 + the descriptor in the hub's close watcher, 0 when not watched
	parked  bool   // the WebSocket has no reader: the close watcher starts one when bytes arrive
}

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

// setConnLocked records the connection the writers write to, and its
// descriptor where the system allows non-blocking writes to it; without
// one (TLS, or another system), the output is written through nc from a
// goroutine of its own. The caller holds wmu.
func (s *socket) setConnLocked(nc output) {
	s.nc = nc
	if sc, ok := nc.(syscall.Conn); ok && nonblocking {
		s.raw, _ = sc.SyscallConn()
		s.rawWrite = func(fd uintptr) bool {
			s.wn, s.werr = writeNonblocking(fd, s.wbuf)
			return true
		}
	}
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
	oldest := c.oldest
	c.oldest = 0
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
	if c.hub.obs.Wrote != nil && len(batch) > 0 {
		c.observeWrite(len(batch), oldest)
	}
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

// flushTurn takes the writer's turn that pushTurn gave the caller: it
// writes c's queue on the calling goroutine when the socket takes writes
// without waiting, and otherwise hands the turn to the writers, who also
// take over a connection that is ending or slow (its last words may wait
// for the client).
func (c *conn) flushTurn() {
	c.mu.Lock()
	handOff := c.slow || c.ended || c.beat
	c.mu.Unlock()
	if handOff || !c.nonblocking() {
		c.hub.writers.add(c)
		return
	}
	c.flush()
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

// closeWait bounds the time spent writing last words before a close.
const closeWait = 100 * time.Millisecond

// closeWith sends a WebSocket close frame, or on a multiplexed SSE stream
// its "close" frame (closeFrame), as far as the socket takes it by until.
func (c *conn) closeWith(code uint16, reason string, until time.Time) {
	if c.wire != wireWS && c.wire != wireSSEMux {
		return
	}
	c.wmu.Lock()
	b := c.out
	if b == nil {
		b = getOut()
	}
	if c.wire == wireWS {
		b = appendWSHeader(b, opClose, 2+len(reason))
		b = binary.BigEndian.AppendUint16(b, code)
		c.out = append(b, reason...)
	} else {
		c.out = c.appendFrame(b, closeFrame(code, reason))
	}
	c.wmu.Unlock()
	c.writeLast(until)
}

// writeLast takes the write turn from whoever has it, bounding a wait for
// the client to read by until, so that last words (queued in out) follow
// what was written, and writes them as far as the socket takes them.
func (c *conn) writeLast(until time.Time) {
	c.nc.SetWriteDeadline(until)
	c.wlock.Lock()
	c.writeLastLocked(until)
	c.wlock.Unlock()
}

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

// takeOut takes the pending output; the caller writes it or puts it back.
func (s *socket) takeOut() []byte {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	buf := s.out
	s.out = nil
	return buf
}

// nonblocking reports whether the output can be written without waiting.
func (s *socket) nonblocking() bool {
	if s.raw != nil {
		return true
	}
	_, ok := s.nc.(tryWriter)
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
func (s *socket) unpark() bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	p := s.parked
	s.parked = false
	return p
}
