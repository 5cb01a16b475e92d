package live

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// SlowPolicy says what the Hub does with a client whose outgoing queue
// exceeds [Options].QueueBytes or [Options].QueueMessages.
type SlowPolicy int

const (
	// SlowDisconnect drops the queue and closes the connection (WebSocket
	// status 1013, try again later; an SSE stream simply ends). Clients
	// reconnect with their cursor and resume from history, so nothing is
	// lost inside the history window, and a React LiveProvider client, which refetches
	// after reconnecting, stays correct too. This is the default.
	SlowDisconnect SlowPolicy = iota

	// SlowReset drops the queued publications and sends the client a reset
	// frame for each channel that lost some, carrying the cursor of the
	// newest one dropped; publications after it keep flowing. The client
	// must refetch those channels.
	SlowReset
)

// errSlow ends a connection under SlowDisconnect.
var errSlow = errors.New("live: client too slow")

// A conn is one client connection, SSE or WebSocket (or a long-poll). Its
// output is a bounded queue that fan-out appends to without blocking. The
// hub's writers drain it into the connection taken over from net/http
// (WebSockets, HTTP/1.1 streams) or, for streams that cannot be taken
// over (HTTP/2), into the ResponseWriter, while the handler waits; a
// long-poll's handler reads the queue itself. Either way a slow client
// delays only itself.
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
	// id is the connection's Identity, its Info encoded as JSON; nil
	// when anonymous.
	id *Identity

	// tokens and refilled rate-limit the client's publish frames; only
	// the connection's reader goroutine uses them.
	tokens   float64
	refilled time.Time
	// wake has room for one token: pushes leave one there when the writer
	// may be asleep.
	wake chan struct{}

	mu    sync.Mutex // guards the fields below
	q     []*frame
	bytes int
	beat  bool // a heartbeat is due
	slow  bool // disconnect requested under SlowDisconnect
	subs  map[string]*subscription
	skip  map[string]Position // per state channel: publications up to here were conflated
	room  chan struct{}       // closed when the queue is taken; nil when nobody waits for room

	// Connections taken over by the hub's writers (writer.go) use these.
	kind     int                   // how frames are encoded; 0 until taken over. Written once, under mu, by takeOver; read under mu, or by c's writer, which takeOver scheduled
	sched    bool                  // queued for a writer or being written (guarded by mu)
	ended    bool                  // killed; a writer finishes it (guarded by mu)
	endErr   error                 // why (guarded by mu)
	spare    []*frame              // a drained queue to reuse (guarded by mu)
	wlock    sync.Mutex            // held while writing to nc, so writes keep their order
	rawWrite func(fd uintptr) bool // writes wbuf into wn and werr; used under wlock
	wbuf     []byte
	wn       int
	werr     error
	wmu      sync.Mutex         // guards out
	out      []byte             // encoded output not yet written
	nc       output             // written once, under wmu, before c is taken over; read under wmu where that may not have happened (kill), without it by c's writers
	raw      syscall.RawConn    // nc's, for non-blocking writes; nil without
	watched  int32              // 1 + the descriptor in the hub's close watcher, 0 when not watched (guarded by wmu)
	parked   bool               // the WebSocket has no reader: the close watcher starts one when bytes arrive (guarded by wmu)
	wsc      *websocket.Conn    // a WebSocket's library side: reads, close handshakes
	flate    bool               // the WebSocket negotiated compression
	ctx      context.Context    // the connection's, for Authorize run later and a WebSocket's frames: a WebSocket's is set before it is taken over, a stream's by authRequest (guarded by mu)
	cancel   context.CancelFunc // ends ctx; kill and leave call it (guarded by mu)
	seen     atomic.Int64       // when the WebSocket client last sent anything (unix ns)
	br       *bufio.Reader      // what the WebSocket library reads from
}

func newConn(h *Hub, r *http.Request, ws bool) *conn {
	c := &conn{hub: h, req: r, ws: ws, key: newConnKey(), wake: make(chan struct{}, 1)}
	if r != nil {
		c.ip = h.opts.ClientIP(r)
		if id, ok := r.Context().Value(identityKey{}).(Identity); ok && (id.User != "" || id.Info != nil) {
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

// push queues f. It never blocks; when the queue is at its bounds it
// applies the hub's SlowPolicy.
func (c *conn) push(f *frame) {
	if f == nil {
		return
	}
	n := f.cost()
	c.mu.Lock()
	if c.slow || c.ended || (c.skip != nil && c.skipLocked(f)) {
		c.mu.Unlock()
		return
	}
	// The bounds apply to what is queued before f, so the queue holds at
	// most one frame beyond them: one publication larger than QueueBytes
	// reaches a client that keeps up instead of evicting it.
	if c.bytes >= c.hub.opts.QueueBytes || len(c.q) >= c.hub.opts.QueueMessages {
		c.overflowLocked(f)
	} else {
		c.q = append(c.q, f)
		c.bytes += n
	}
	slow := c.slow
	c.unlockAndWake()
	if slow {
		c.kill(errSlow) // interrupts a write waiting for the client
	}
}

// pushSome queues the first frames of fs as push would while the queue is
// under its bounds, and returns how many it took; those it leaves wait for
// room (pushPaced). ok is false once c is slow or ended: nothing more
// reaches it.
func (c *conn) pushSome(fs []*frame) (n int, ok bool) {
	c.mu.Lock()
	if c.slow || c.ended {
		c.mu.Unlock()
		return 0, false
	}
	for n < len(fs) && c.bytes < c.hub.opts.QueueBytes && len(c.q) < c.hub.opts.QueueMessages {
		f := fs[n]
		n++
		if c.skip != nil && c.skipLocked(f) {
			continue
		}
		c.q = append(c.q, f)
		c.bytes += f.cost()
	}
	c.unlockAndWake()
	return n, true
}

// pushPaced queues fs as the client reads them: what the queue does not
// admit at once (pushSome) waits for a writer to take the queue. It is
// how a resuming client gets what it missed, so that a long replay is
// neither taken for a slow client nor held beyond the queue's bounds. It
// reports false if ctx ended, or c did, before all were queued.
func (c *conn) pushPaced(ctx context.Context, fs []*frame) bool {
	for {
		n, ok := c.pushSome(fs)
		if !ok {
			return false
		}
		if fs = fs[n:]; len(fs) == 0 {
			return true
		}
		if !c.waitRoom(ctx) {
			return false
		}
	}
}

// waitRoom waits until c's queue is under its bounds. It reports false if
// ctx ended, or c did, first.
func (c *conn) waitRoom(ctx context.Context) bool {
	for {
		c.mu.Lock()
		if c.slow || c.ended {
			c.mu.Unlock()
			return false
		}
		if c.bytes < c.hub.opts.QueueBytes && len(c.q) < c.hub.opts.QueueMessages {
			c.mu.Unlock()
			return true
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return false
		}
	}
}

// roomLocked wakes those waiting for room in c's queue: the queue was
// taken, or c ended.
func (c *conn) roomLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// tooSlow applies SlowDisconnect to c, whose client cannot keep up: its
// queue is dropped and it ends.
func (c *conn) tooSlow() {
	c.hub.stats.slow.Add(1)
	c.mu.Lock()
	clear(c.q)
	c.q, c.bytes, c.slow = c.q[:0], 0, true
	c.unlockAndWake()
	c.kill(errSlow)
}

// overflowLocked applies the slow-client policy when f does not fit.
//
// The queued publications of channels whose kind folds them (lists and
// States) give way to fewer frames that bring the client to the same
// place; those of a State to one frame holding the latest value, after
// which publications it already contains are skipped. When every channel
// folds, nothing is lost; otherwise the hub's SlowPolicy decides, and
// under SlowReset the channels that do not fold are reset.
func (c *conn) overflowLocked(f *frame) {
	c.hub.stats.slow.Add(1)
	lost := make(map[string][]*frame) // each channel's droppable frames, in order
	var order []string
	kept := make([]*frame, 0, 8)
	for _, g := range append(c.q, f) {
		if !g.data && !g.reset {
			kept = append(kept, g)
			continue
		}
		if lost[g.channel] == nil {
			order = append(order, g.channel)
		}
		lost[g.channel] = append(lost[g.channel], g)
	}
	clear(c.q)
	c.q = c.q[:0]
	conflatable := true
	folded := make([][]*frame, len(order))
	for i, ch := range order {
		s, fs := c.subs[ch], lost[ch]
		if s == nil {
			continue // unsubscribed meanwhile: nothing to send
		}
		if !slices.ContainsFunc(fs, func(g *frame) bool { return g.data }) {
			folded[i] = fs[len(fs)-1:] // resets only: the last says it all
			continue
		}
		out, skip, ok := s.hc.kindOf().fold(fs)
		if !ok {
			conflatable = false
			continue
		}
		folded[i] = out
		if skip.Epoch != "" {
			if c.skip == nil {
				c.skip = make(map[string]Position)
			}
			c.skip[ch] = skip
		}
	}
	if conflatable || c.hub.opts.SlowPolicy == SlowReset {
		for i, ch := range order {
			if folded[i] != nil || c.subs[ch] == nil {
				kept = append(kept, folded[i]...)
				continue
			}
			fs := lost[ch]
			kept = append(kept, resetFrame(ch, fs[len(fs)-1].pos, resetSlow, c.ws))
			c.hub.stats.reset(resetSlow)
		}
		bytes := 0
		for _, g := range kept {
			bytes += g.cost()
		}
		if bytes <= c.hub.opts.QueueBytes && len(kept) <= c.hub.opts.QueueMessages {
			c.q, c.bytes = append(c.q, kept...), bytes
			return
		}
		// What is left still overflows: nothing sensible can be sent.
	}
	c.bytes = 0
	c.slow = true
}

// skipLocked reports whether f is a publication already contained in a
// conflated frame sent before it.
func (c *conn) skipLocked(f *frame) bool {
	p, ok := c.skip[f.channel]
	if !ok || !f.data {
		return false
	}
	if f.pos.Epoch != p.Epoch || f.pos.Seq > p.Seq {
		delete(c.skip, f.channel)
		return false
	}
	return f.pos.Seq <= p.Seq
}

// heartbeatDue marks a heartbeat for the writer.
func (c *conn) heartbeatDue(now time.Time) {
	c.mu.Lock()
	kind := c.kind
	c.mu.Unlock()
	if kind == kindWS {
		// The pings are unsolicited: a client that answered none since
		// the previous heartbeat, within the write timeout, is gone.
		quiet := now.Sub(time.Unix(0, c.seen.Load()))
		if quiet > c.hub.opts.Heartbeat+c.hub.opts.WriteTimeout {
			c.kill(errNoPong)
			return
		}
	}
	c.mu.Lock()
	c.beat = true
	c.unlockAndWake()
}

// errNoPong ends a WebSocket connection whose client stopped answering.
var errNoPong = errors.New("live: WebSocket client stopped answering pings")

// lastWords ends a connection that Hub.Disconnect or Hub.Reauthorize
// ended before it was taken over: a stream still gets its response head,
// then f, as it would have once taken over, and a WebSocket a close frame
// with code and reason; finish writes them. kill ends one taken over
// meanwhile as end does.
type lastWords struct {
	code   uint16
	reason string
	f      *frame
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
	if h.missedLocked(g, "disconnect", c.id, "") {
		return errDisconnected
	}
	if max := h.opts.MaxConnsPerIP; max > 0 && c.ip != "" && h.perIP[c.ip] >= max {
		return errTooManyConns
	}
	h.perIP[c.ip]++
	h.conns[c] = struct{}{}
	h.stats.connections.Add(1)
	return nil
}

// refuse answers a connection that enter did not admit.
func refuse(w http.ResponseWriter, err error) {
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
	if h.perIP[c.ip]--; h.perIP[c.ip] <= 0 {
		delete(h.perIP, c.ip)
	}
	h.stats.connections.Add(-1)
	if h.closed && len(h.conns) == 0 {
		select {
		case <-h.idle:
		default:
			close(h.idle)
		}
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
