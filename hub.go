package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-live/live/observe"
	"golang.org/x/sync/errgroup"
)

// Locks, in the order they may be taken (a goroutine holding one takes
// only those after it):
//
//	memChannel.mu (MemoryBroker, which delivers under it)
//	→ hubChannel.mu (fan-out, resume)
//	→ conn.mu (a connection's queue, queue.go)
//	→ conn.wmu (its socket's output buffer, socket.go) or State.mu
//
// presence.mu comes after the broker's locks (the broker delivers
// presence messages under them) and before conn.mu (a joining subscriber
// gets its snapshot under it); it is never held with hubChannel.mu.
// closeWatcher.mu comes after conn.mu (park checks that the connection
// lives while it registers it) and before conn.wmu (watch and park record
// the descriptor under both); kill takes it holding neither.
//
// Hub.mu stands apart: it guards the hub's maps and is held only briefly,
// never while taking another of these, so no socket is closed and no
// connection locked under it. It may be taken holding them: a
// subscription reads the control generation under hubChannel.mu and
// conn.mu as it registers (recheck.go). conn.wlock (socket.go) orders
// writes to one socket and is held across a write, taking conn.wmu but
// never conn.mu; conn.mu and conn.wmu are never held across one.

// A Hub fans publications out to SSE and WebSocket clients. Mount it on
// any mux (see [Hub.ServeHTTP]), publish from server code with
// [Hub.Publish], and call [Hub.Close] on shutdown ([Hub.Drain] first, on
// a node that leaves others serving).
//
// A Hub is safe for concurrent use. WebSocket connections and HTTP/1.1
// SSE streams are taken over from net/http: a small pool of writer
// goroutines (one per CPU, at least two) writes to all of them, and each
// WebSocket has a reader goroutine while its client is sending; on Linux
// one goroutine per hub waits for the sockets of idle clients, elsewhere
// each keeps its reader. Other SSE streams (HTTP/2) are written from
// their handler's goroutine. The Hub also runs one goroutine per channel with
// local subscribers, one heartbeat timer, two goroutines that follow and
// apply the control messages of [Hub.Disconnect] and [Hub.Reauthorize],
// and, on a broker it did not make, one that tells the other hubs it is
// alive, all ended and waited for by Close.
//
// Taking over a connection means middleware that wraps the ResponseWriter
// sees the stream begin but not its bytes, and the hub writes the response
// head itself (status 200, the headers set so far, Connection: close).
type Hub struct {
	id        string // names the hub to the others sharing its broker: host, process, random
	opts      Options
	broker    Broker
	history   PagedHistory // never nil: see historyOf
	cond      Conditional  // nil when the broker cannot publish on condition
	ownBroker bool
	idem      *memoryIdempotency // HookOptions.Idempotency's default
	lease     time.Duration      // a keyed request's claim in a shared store: claimTTL, shorter in tests
	presence  *presence          // nil without Options.Presence
	roster    *roster            // the other hubs sharing the broker
	closes    closeWatcher       // waits for idle clients' sockets without a goroutine each, where it can
	// ownAuthorize is set when Options.Authorize or Identify is the
	// application's: streams then keep their request, for Hub.Reauthorize
	// and for running Identify again after control messages were lost.
	ownAuthorize bool
	stats        counters
	insp         inspection   // what the inspector reads (inspect_node.go)
	retryWarned  atomic.Int64 // when a failed retry window was last logged, in Unix ns

	obs observe.Hooks // Options.Observe's

	ctx    context.Context // ends at Close; parent of channel subscriptions
	cancel context.CancelFunc
	done   <-chan struct{} // ctx.Done()
	group  errgroup.Group  // channel subscriptions, catch-ups, heartbeat, writers

	// back is closed, and replaced, whenever a subscription to the broker
	// starts again after one broke: the broker answers, so subscriptions
	// waiting out a backoff try again at once.
	backMu  sync.Mutex // guards back and waiting
	back    chan struct{}
	waiting map[*hubChannel]*time.Timer // channels waiting to follow the broker again, and their timers

	// follower follows the hub's channels: the broker, if it is a
	// Follower, or else a goroutine per channel calling Subscribe.
	follower Follower

	outbox outbox // promised publications the broker has not taken

	writers writers        // the pool that writes taken-over connections
	drains  atomic.Int64   // goroutines started to wait for a client (tests read it)
	readers sync.WaitGroup // their readers; Add only under mu while not closed

	mu       sync.Mutex // guards channels, states, conns, perIP, closed, draining, idle, left, gen and recent
	channels map[string]*hubChannel
	states   map[string]*State
	conns    map[*conn]struct{}
	perIP    map[string]int
	closed   bool
	draining bool // Drain was called: no new connection is admitted (but polls, until their turn)
	// drainStart and drainWindow are the first drain's.
	drainStart  time.Time
	drainWindow time.Duration
	idle        chan struct{} // closed when closed is set and conns is empty
	left        chan struct{} // made by Drain, closed and made again whenever conns empties
	drainPolled bool          // a poll was admitted while draining
	// The control generation (recheck.go): how many control messages
	// were applied, and the last of them, recent[gen%recentControls].
	gen    uint64
	recent [recentControls]controlMsg
}

// NewHub returns a Hub configured by opts, which may be nil. It starts the
// Hub's heartbeat timer; Close stops it.
func NewHub(opts *Options) *Hub {
	o := opts.withDefaults()
	h := &Hub{
		id:       hubID(),
		lease:    claimTTL,
		opts:     o,
		broker:   o.Broker,
		channels: make(map[string]*hubChannel),
		conns:    make(map[*conn]struct{}),
		perIP:    make(map[string]int),
		idle:     make(chan struct{}),
		back:     make(chan struct{}),
	}
	h.insp.started = time.Now()
	h.idem = newMemoryIdempotency(func(n int) {
		h.stats.retriesLost.Add(int64(n))
		h.warnRetries("live: the in-memory idempotency store dropped responses within their retry window to make room; their retries will run again (use a shared store, or fewer or smaller responses)", nil)
	})
	h.ownAuthorize = opts != nil && (opts.Authorize != nil || opts.Identify != nil)
	h.closes.h = h
	if o.Observe != nil {
		h.obs = *o.Observe
	}
	h.stats.resetsBy = newResetCounters()
	if h.broker == nil {
		h.broker = NewMemoryBroker(nil)
		h.ownBroker = true
	}
	h.history = historyOf(h.broker)
	h.cond, _ = h.broker.(Conditional)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.done = h.ctx.Done()
	h.follower, _ = h.broker.(Follower)
	if h.follower == nil {
		h.follower = subscriber{h}
	}
	h.roster = newRoster(h)
	h.group.Go(h.heartbeat)
	h.outbox.init(h)
	h.group.Go(h.outbox.run)
	h.group.Go(h.runControl)
	if !h.ownBroker {
		h.group.Go(h.roster.run)
	}
	if o.Presence != nil {
		h.presence = newPresence(h)
		h.group.Go(h.presence.run)
		h.group.Go(h.presence.follow)
	}
	h.writers.init(h.obs.Waited)
	for range max(2, runtime.GOMAXPROCS(0)) {
		h.group.Go(h.runWriter)
	}
	return h
}

// Publish publishes v on channel and returns its position. v is encoded
// with encoding/json; pass a json.RawMessage to publish JSON you already
// have (it is validated and compacted), or a [Text] (or *Text) to publish
// text, such as an HTML fragment, that one-channel SSE streams send as it
// is. Server code publishes regardless of Options.Authorize. After Close,
// Publish returns ErrClosed.
func (h *Hub) Publish(ctx context.Context, channel string, v any) (Position, error) {
	ctx, data, err := h.encodePublication(ctx, channel, v)
	if err != nil {
		return Position{}, err
	}
	return h.publish(ctx, channel, data)
}

// encodePublication checks a publication of v on channel and returns it
// as compact JSON, with ctx marking it as text if it is a [Text].
func (h *Hub) encodePublication(ctx context.Context, channel string, v any) (context.Context, []byte, error) {
	if err := ValidChannel(channel); err != nil {
		return nil, nil, err
	}
	if reserved(channel) {
		return nil, nil, fmt.Errorf("live: publish %q: %w", channel, errReserved)
	}
	if t, ok := asText(v); ok {
		if err := h.checkTextKind(channel); err != nil {
			return nil, nil, err
		}
		data, mark, err := encodeText(t)
		if err != nil {
			return nil, nil, fmt.Errorf("live: publish %q: %w", channel, err)
		}
		return withText(ctx, mark), data, nil
	}
	data, err := json.Marshal(v)
	if err == nil && !utf8.Valid(data) {
		err = errBadJSON
	}
	if err != nil {
		return nil, nil, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return ctx, data, nil
}

// prepare attaches the hub's meta for channel to ctx, refusing a
// publication that the closed hub cannot send or that is too large.
func (h *Hub) prepare(ctx context.Context, channel string, data []byte) (context.Context, []byte, error) {
	select {
	case <-h.done:
		return nil, nil, fmt.Errorf("live: publish %q: %w", channel, ErrClosed)
	default:
	}
	if key, ok := ctx.Value(publishKeyKey{}).(string); ok {
		if err := checkPublishKey(key); err != nil {
			return nil, nil, fmt.Errorf("live: publish %q: %w", channel, err)
		}
	}
	ctx, meta := withMeta(ctx, channel)
	if h.obs.Inject != nil {
		ctx, meta = h.inject(ctx, channel, meta)
	}
	if max, n := h.maxPublication(), len(data)+len(meta); n > max {
		h.stats.tooLarge.Add(1)
		err := fmt.Errorf("live: publish %q: %d bytes, more than %d (half of Options.QueueBytes): %w", channel, n, max, ErrTooLarge)
		h.traced(ctx, err)
		return nil, nil, err
	}
	return ctx, meta, nil
}

// publish sends compact JSON data to the broker, behind the promised
// publications on channel that wait for it.
func (h *Hub) publish(ctx context.Context, channel string, data []byte) (Position, error) {
	return h.publishIf(ctx, channel, nil, data)
}

// publishIf is publish, on condition that the channel's head is *head
// when head is not nil, which the broker must be able to check (h.cond is
// not nil). A conditional publication is never queued behind promised
// publications waiting in the outbox: taken after them, the channel would
// no longer be at *head, so while they wait it is refused as the broker's
// failure, not as a conflict.
func (h *Hub) publishIf(ctx context.Context, channel string, head *Position, data []byte) (Position, error) {
	ctx, meta, err := h.prepare(ctx, channel, data)
	if err != nil {
		return Position{}, err
	}
	if h.outbox.waiting(channel) {
		if head != nil {
			err := fmt.Errorf("live: publish %q: publications promised before it wait for the broker: %w", channel, errUnavailable)
			h.traced(ctx, err)
			return Position{}, err
		}
		// Promised publications wait for the broker: this one follows them.
		pos, err := h.publishBehind(ctx, channel, data, meta)
		h.traced(ctx, err)
		return pos, err
	}
	var pos Position
	var start int64
	if h.obs.Published != nil {
		start = nanotime()
	}
	if head != nil {
		pos, err = h.cond.PublishIf(ctx, channel, *head, data)
	} else {
		pos, err = h.broker.Publish(ctx, channel, data)
	}
	if h.obs.Published != nil {
		h.observePublish(channel, start, err)
	}
	h.traced(ctx, err)
	if errors.Is(err, ErrConflict) {
		return Position{}, err // the broker's answer, not its failure
	}
	if err != nil {
		h.stats.brokerErrors.Add(1)
		h.note("broker", "publish failed: "+err.Error(), channel, "")
		return Position{}, err
	}
	h.stats.published.Add(1)
	return pos, nil
}

// Head returns the position of the newest publication on channel, as its
// broker reports it (in a numbering with nothing published yet, the
// position before the first publication). A server-rendered page reads it
// before it reads what it shows, and streams the channel from there:
//
//	pos, err := hub.Head(ctx, "feed")
//	rows := loadRows(ctx) // everything up to pos, perhaps a little more
//	// render, with <div hx-ext="sse" sse-connect="/live/feed?cursor={{pos}}">
//
// The stream then sends everything published after pos, whatever
// happened between the render and its request, so the page misses
// nothing: at worst it gets again a change it already showed. A stream
// that reconnects sends Last-Event-ID, which wins over the URL's cursor,
// so it resumes after what it received.
//
// The Position returned by [Hub.Publish] serves the same purpose for a
// page rendered right after a publication of its own. Head refuses an
// invalid or reserved channel, and returns ErrClosed after Close.
func (h *Hub) Head(ctx context.Context, channel string) (Position, error) {
	if err := ValidChannel(channel); err != nil {
		return Position{}, err
	}
	if reserved(channel) {
		return Position{}, fmt.Errorf("live: head of %q: %w", channel, errReserved)
	}
	select {
	case <-h.done:
		return Position{}, fmt.Errorf("live: head of %q: %w", channel, ErrClosed)
	default:
	}
	return h.brokerHead(ctx, channel)
}

// brokerHead returns the channel's head as the broker reports it to a
// subscription that starts now.
func (h *Hub) brokerHead(ctx context.Context, channel string) (Position, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var head Position
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.broker.Subscribe(ctx, channel, func(p Position) { head = p; close(ready) }, func(Message) {})
	}()
	select {
	case <-ready:
		cancel()
		<-done
		return head, nil
	case err := <-done:
		if err == nil {
			err = errUnavailable // ctx ended first
		}
		return Position{}, fmt.Errorf("live: head of %q: %w", channel, err)
	}
}

// maxPublication is the largest publication the hub accepts.
func (h *Hub) maxPublication() int { return h.opts.QueueBytes / 2 }

// closer is the optional ability of a broker that can be closed, as
// MemoryBroker can (its subscriptions end with ErrClosed): Hub.Close
// closes a broker the Hub made. One the application made is the
// application's to close.
type closer interface {
	Close() error
}

// Close ends every stream at once (WebSocket connections get status
// 1001, going away; SSE streams end, and EventSource reconnects elsewhere
// or later; [Hub.Drain] first spreads the endings over a window),
// stops the Hub's goroutines and waits for them and for every connection
// handler to return, or for ctx to end. Later calls to Publish fail with
// ErrClosed. Close closes the broker only if the Hub made it.
//
// net/http's Server.Shutdown does not end hijacked or streaming
// connections, so close the Hub when the server shuts down:
//
//	srv.RegisterOnShutdown(func() { hub.Close(context.Background()) })
func (h *Hub) Close(ctx context.Context) error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		if len(h.conns) == 0 {
			close(h.idle)
		}
	}
	var taken []*conn
	for c := range h.conns {
		taken = append(taken, c)
	}
	h.mu.Unlock()
	h.outbox.close(ctx)
	if h.presence != nil {
		h.presence.goodbye(ctx)
	}
	h.cancel()
	h.unwaitAll()
	// Connections served by the writers have no goroutine watching the
	// hub: end them here.
	// One deadline for all: clients that do not read delay Close by
	// closeWait in all, not each.
	until := time.Now().Add(closeWait)
	for _, c := range taken {
		c.mu.Lock()
		w := c.wire
		c.mu.Unlock()
		if w != wireNone {
			c.closeWith(statusGoingAway, "server shutting down", until)
			c.kill(ErrClosed)
		}
	}
	// Its connections ended, the hub is no one a revocation need wait for.
	h.roster.bye(ctx)

	select {
	case <-h.idle:
	case <-ctx.Done():
		return fmt.Errorf("live: close: waiting for connections: %w", ctx.Err())
	}
	h.writers.close()
	h.group.Wait()
	h.readers.Wait()
	if h.ownBroker {
		if c, ok := h.broker.(closer); ok {
			return c.Close()
		}
	}
	return nil
}

// queryKey returns the channel's query key as JSON, or nil.
func (h *Hub) queryKey(channel string) []byte {
	if h.opts.QueryKey == nil {
		return nil
	}
	k := h.opts.QueryKey(channel)
	if k == nil {
		return nil
	}
	b, _ := json.Marshal(k)
	return b
}

// heartbeat marks a heartbeat due on every connection at each tick. It
// walks a copy of the connections, so that closing one found dead (which
// closes its socket) never happens under the hub-wide lock.
func (h *Hub) heartbeat() error {
	t := time.NewTicker(h.opts.Heartbeat)
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-h.done:
			return nil
		case <-t.C:
		}
		h.mu.Lock()
		for c := range h.conns {
			conns = append(conns, c)
		}
		h.mu.Unlock()
		now := time.Now()
		for _, c := range conns {
			c.heartbeatDue(now)
		}
		clear(conns)
		conns = conns[:0]
	}
}

// errUnavailable is reported when the broker cannot serve a subscription.
var errUnavailable = errors.New("live: broker unavailable")

// isState reports whether channel is a state channel.
func (h *Hub) isState(channel string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.states[channel] != nil
}
