//go:build linux && !live_blocking

package live

import (
	"errors"
	"io"
	"sync"
	"syscall"
)

// An idle connection needs no goroutine of its own. An SSE client sends
// nothing after its request, so the only news its socket can bring is
// that the client left; a WebSocket client sends frames now and then.
// The hub registers such sockets in one epoll set, which a single
// goroutine waits on: it ends a stream when its socket becomes readable
// (EOF, a reset, or bytes the protocol does not expect), and starts a
// WebSocket's reader, which parks the socket here again once it has read
// everything.

// closeWatcher is a hub's epoll set of taken-over SSE streams and parked
// WebSockets.
type closeWatcher struct {
	h    *Hub
	once sync.Once
	epfd int
	wake [2]int // a pipe whose read end is in the set: Close writes to it
	err  error  // why the set could not be made; streams then get a reader goroutine

	mu     sync.Mutex // guards conns and closed, and the set's descriptor once run ends
	conns  map[int32]*conn
	closed bool // run ended and closed the set
}

// watch registers c's socket, whose descriptor raw holds, and reports
// whether it could; c.unwatch undoes it before the socket is closed.
func (w *closeWatcher) watch(c *conn, raw syscall.RawConn) bool {
	w.once.Do(w.start)
	if w.err != nil {
		return false
	}
	var fd int32 = -1
	var err error = syscall.EBADF
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	cerr := raw.Control(func(f uintptr) {
		fd = int32(f)
		w.conns[fd] = c
		err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(f), &syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: fd})
	})
	if cerr != nil || err != nil {
		if fd >= 0 {
			delete(w.conns, fd)
		}
		return false
	}
	c.wmu.Lock()
	c.watched = fd + 1
	c.wmu.Unlock()
	return true
}

// park hands the socket of c, a WebSocket whose reader is about to end,
// to the watcher, which starts a reader when bytes arrive. It reports
// false, and the reader carries on, where the socket cannot be watched or
// c has ended.
func (w *closeWatcher) park(c *conn) bool {
	if c.raw == nil {
		return false
	}
	w.once.Do(w.start)
	if w.err != nil {
		return false
	}
	// Registered under c.mu, kill either finds the socket watched, and
	// takes it out of the set before closing it, or comes first.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// One event per park: the reader it starts parks the socket again.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	var err error = syscall.EBADF
	cerr := c.raw.Control(func(f uintptr) {
		ev.Fd = int32(f)
		if c.watched != 0 {
			err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_MOD, int(f), &ev)
			return
		}
		if err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(f), &ev); err == nil {
			w.conns[ev.Fd] = c
			c.watched = ev.Fd + 1
		}
	})
	if cerr != nil || err != nil {
		return false
	}
	c.parked = true
	return true
}

// unwatch removes c's socket from the set, before it is closed, so that
// its descriptor's number can be reused safely.
func (w *closeWatcher) unwatch(c *conn, raw syscall.RawConn, fd int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conns[fd] == c {
		delete(w.conns, fd)
	}
	if w.closed {
		return // the set is gone, and its number may be another's now
	}
	raw.Control(func(f uintptr) {
		syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(f), nil)
	})
}

func (w *closeWatcher) start() {
	w.conns = make(map[int32]*conn)
	w.epfd, w.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if w.err != nil {
		return
	}
	if w.err = syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); w.err != nil {
		syscall.Close(w.epfd)
		return
	}
	if w.err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(w.wake[0])}); w.err != nil {
		syscall.Close(w.epfd)
		syscall.Close(w.wake[0])
		syscall.Close(w.wake[1])
		return
	}
	// Started when the first stream comes, perhaps as the hub closes:
	// counted with the readers, which Close waits for, under the lock that
	// tells whether it has begun.
	h := w.h
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		w.err = ErrClosed
		syscall.Close(w.epfd)
		syscall.Close(w.wake[0])
		syscall.Close(w.wake[1])
		return
	}
	h.readers.Add(2)
	h.mu.Unlock()
	go func() {
		defer h.readers.Done()
		w.run()
	}()
	go func() {
		defer h.readers.Done()
		<-h.done
		syscall.Write(w.wake[1], []byte{1})
	}()
}

// run ends the streams whose clients left, until the hub closes.
func (w *closeWatcher) run() {
	defer func() {
		w.mu.Lock()
		w.closed = true
		syscall.Close(w.epfd)
		syscall.Close(w.wake[0])
		syscall.Close(w.wake[1])
		w.mu.Unlock()
	}()
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == w.wake[0] {
				return
			}
			w.mu.Lock()
			c := w.conns[ev.Fd]
			w.mu.Unlock()
			switch {
			case c == nil:
			case c.wsc != nil:
				if c.unpark() {
					c.hub.spawn(c, c.readWS)
				}
			default:
				c.readGone()
			}
		}
	}
}

// readGone reads what made c's watched socket readable: the end of the
// stream or a reset end c, and so do bytes, which an SSE client does not
// send after its request: a client that streams them cannot keep the
// hub's one watcher busy.
func (c *conn) readGone() {
	var n int
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		var b [256]byte
		n, err = syscall.Read(int(fd), b[:])
	})
	switch {
	case cerr != nil:
		c.kill(cerr)
	case err == syscall.EAGAIN || err == syscall.EINTR:
	case err != nil:
		c.kill(err)
	case n == 0:
		c.kill(io.EOF)
	default:
		c.kill(errSSEInput)
	}
}

// errSSEInput ends an SSE stream whose client sent bytes after its request.
var errSSEInput = errors.New("live: an SSE client sent data after its request")
