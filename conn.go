package live

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// A conn is one client connection, SSE or WebSocket (or a long-poll). Its
// output is a bounded queue that fan-out appends to without blocking. The
// hub's writers drain it into the connection taken over from net/http
// (WebSockets, HTTP/1.1 streams) or, for streams that cannot be taken
// over (HTTP/2), into the ResponseWriter, while the handler waits; a
// long-poll's handler reads the queue itself. Either way a slow client
// delays only itself.
//
// A conn has two halves, each with its locks: the queue (queue.go), which
// fan-out fills and the writers take, under mu; and the socket
// (socket.go), which the writers write, under wmu and wlock. mu comes
// before wmu, and only wlock is held across a write (the lock order is in
// hub.go).
type conn struct {
	hub *Hub
	// req is the request that opened the connection, for Authorize and
	// Identify to run again (see authRequest); nil for the hub's own
	// subscribers, and for taken-over streams when neither is the
	// application's. A WebSocket's carries ctx. Set before the connection
	// is taken over; Hub.Reauthorize reads it under mu.
	req *http.Request
	ws  bool
	ip  string // the client's address, for Options.MaxConnsPerIP
	key string // names the connection to the client, for ConnectionHeader
	// acks is how many subscriptions a stream opened with: its queue has
	// room for their acknowledgements beyond the bounds, which it queues
	// before it writes anything. Set before the connection is shared.
	acks int

	tr transport // how the client is reached, for Stats and Options.Observe

	// until is set on a poll the hub admits while it drains: its turn to
	// be told to go, which bounds its hold (Hub.pollTurn).
	until time.Time
	// id is the connection's Identity, its Info encoded as JSON; nil
	// when anonymous.
	id *Identity
	// ctx is the connection's, for Authorize run later and a WebSocket's
	// frames: a WebSocket's is set before it is taken over, a stream's by
	// authRequest. cancel ends it; kill and leave call it. Both are
	// guarded by mu.
	ctx    context.Context
	cancel context.CancelFunc

	queue
	socket

	// A WebSocket's reading side, used by its reader goroutine.
	wsc  *websocket.Conn // the library's side: reads, close handshakes
	br   *bufio.Reader   // what the library reads from
	seen atomic.Int64    // when the client last sent anything (unix ns)
	// expiry ends the connection when its Identity expires (expiry.go);
	// set by enter, stopped by leave, under the hub's mu.
	expiry *time.Timer
	// tokens and refilled rate-limit the client's publish frames.
	tokens   float64
	refilled time.Time
}

func newConn(h *Hub, r *http.Request, ws bool) *conn {
	c := &conn{hub: h, req: r, ws: ws, tr: transportOf(r, ws), key: newConnKey(), queue: queue{wake: make(chan struct{}, 1)}}
	if r != nil {
		c.ip = h.opts.ClientIP(r)
		if id, ok := r.Context().Value(identityKey{}).(Identity); ok && (id.User != "" || id.Info != nil || !id.Expires.IsZero()) {
			c.id = &id
		}
	}
	c.tokens = float64(h.opts.PublishRate)
	return c
}

// authRequest returns the request Authorize gets for c once c's handler
// may have returned, when net/http has canceled its own request's context:
// c.req with a context that keeps its values and ends with c (or the hub,
// which ends c). A stream makes that context on first use, so that idle
// streams do not hold one; a WebSocket's request carries it already. nil
// for the hub's own connections.
func (c *conn) authRequest() *http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.req
	if r == nil || c.ctx != nil && r.Context() == c.ctx {
		return r
	}
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(r.Context()))
		if c.ended {
			c.cancel()
		}
	}
	return r.WithContext(c.ctx)
}

// allowPublish takes a token from the connection's publish bucket, which
// refills at Options.PublishRate per second up to one second's worth.
func (c *conn) allowPublish(now time.Time) bool {
	rate := float64(c.hub.opts.PublishRate)
	if rate <= 0 {
		return true
	}
	if !c.refilled.IsZero() {
		c.tokens = min(rate, c.tokens+now.Sub(c.refilled).Seconds()*rate)
	}
	c.refilled = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// takeOver makes the hub's writers serve c on nc from now on. head is
// written before anything queued.
func (c *conn) takeOver(nc output, w wire, head []byte) {
	c.mu.Lock()
	c.wmu.Lock()
	if nc != nil {
		c.setConnLocked(nc)
	}
	if len(head) > 0 {
		c.out = append(getOut(), head...)
	}
	c.wmu.Unlock()
	c.wire = w
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

// kill ends a taken-over connection: its socket closes now, and a writer
// finishes it. It is safe from any goroutine, including fan-out's, and
// from a connection that has not been taken over yet.
func (c *conn) kill(why error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	if lw, ok := why.(*lastWords); ok && c.wire != wireNone {
		// Taken over since end found it was not: end it as it ends those.
		c.mu.Unlock()
		c.endWith(lw)
		return
	}
	c.ended, c.endErr = true, why
	if why == errSlow {
		c.hub.stats.slowEnded.Add(1)
		c.hub.note("slow", "ended: the client did not keep up", "", c.ip)
	}
	c.roomLocked()
	add := c.wire != wireNone && !c.sched
	c.sched = c.sched || add
	held := c.wire == wireNone // a long-poll may be waiting on wake
	cancel := c.cancel
	// Under mu: takeOver records a stream's socket with its wire, so a
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

// finish releases a connection that kill ended. A WebSocket is released
// by its reader instead, which ends when the socket does, unless it has
// none (parked).
func (c *conn) finish() {
	c.mu.Lock()
	lw, _ := c.endErr.(*lastWords)
	c.mu.Unlock()
	switch {
	case lw != nil && c.nc != nil && c.wire == wireWS:
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
	if c.wire != wireWS || c.unpark() {
		c.hub.leave(c)
	}
}

// lastWords ends a connection that Hub.Disconnect, Hub.Reauthorize or
// Hub.Drain ended before it was taken over: a stream still gets its response head,
// then f, as it would have once taken over, and a WebSocket a close frame
// with code and reason; finish writes them. kill ends one taken over
// meanwhile as end does.
type lastWords struct {
	code   uint16
	reason string
	f      *frame
	// retry, set by Hub.Drain, is when the client should come back, in
	// ms: SSE streams get it as a retry line, and f is the close frame.
	retry int64
}

func (*lastWords) Error() string { return errDisconnected.Error() }
func (*lastWords) Unwrap() error { return errDisconnected }

// errTooManyConns refuses a connection over Options.MaxConnsPerIP.
var errTooManyConns = errors.New("live: too many connections from this address")

// enter registers a connection. It fails once the hub is closed, when
// the client's address has too many connections already, or when a
// Disconnect of the connection's user was applied after control
// generation g, read before Identify ran.
func (h *Hub) enter(c *conn, g uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if h.draining {
		if c.until.IsZero() {
			return errDraining
		}
		h.drainPolled = true
	}
	if h.missedLocked(g, "disconnect", c.id, "") {
		return errDisconnected
	}
	if max := h.opts.MaxConnsPerIP; max > 0 && c.ip != "" && h.perIP[c.ip] >= max {
		return errTooManyConns
	}
	h.perIP[c.ip]++
	h.conns[c] = struct{}{}
	h.armExpiryLocked(c)
	h.stats.connections.Add(1)
	h.stats.connsBy[c.tr].Add(1)
	return nil
}

// refuse answers a connection that enter did not admit.
func refuse(w http.ResponseWriter, err error) {
	if errors.Is(err, errDraining) {
		refuseDraining(w, false)
		return
	}
	if errors.Is(err, errTooManyConns) {
		writeError(w, http.StatusTooManyRequests, "too_many_connections", err.Error())
		return
	}
	if errors.Is(err, errDisconnected) {
		// Disconnected while being admitted: identify again.
		writeError(w, http.StatusUnauthorized, "disconnected", "disconnected by the server")
		return
	}
	writeError(w, http.StatusServiceUnavailable, "closed", "the live hub is shutting down")
}

// remoteHost is the default Options.ClientIP.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// leave ends every subscription of c and unregisters it.
func (h *Hub) leave(c *conn) {
	c.mu.Lock()
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for _, s := range subs {
		s.cancel()
	}
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel() // a long-poll's, which leaves without being killed
	}
	h.mu.Lock()
	if _, ok := h.conns[c]; !ok {
		h.mu.Unlock()
		return
	}
	delete(h.conns, c)
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if h.perIP[c.ip]--; h.perIP[c.ip] <= 0 {
		delete(h.perIP, c.ip)
	}
	h.stats.connections.Add(-1)
	h.stats.connsBy[c.tr].Add(-1)
	if h.closed && len(h.conns) == 0 {
		select {
		case <-h.idle:
		default:
			close(h.idle)
		}
	}
	if h.left != nil && len(h.conns) == 0 {
		// Drain waits for this, each time (pollers come and go).
		close(h.left)
		h.left = make(chan struct{})
	}
	h.mu.Unlock()
}

// spawn runs a taken-over connection's reader, which Close waits for. Once
// the hub is closed it kills c instead.
func (h *Hub) spawn(c *conn, read func()) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.kill(ErrClosed)
		h.leave(c)
		return
	}
	h.readers.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.readers.Done()
		read()
	}()
}
