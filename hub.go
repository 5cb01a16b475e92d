package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"
)

// Options configures a Hub. A nil *Options, or a zero field, means the
// default documented on the field.
type Options struct {
	// Broker carries publications and assigns their positions. Default: a
	// new MemoryBroker with default options, which the Hub closes in Close.
	// A broker you pass in is yours to close, after the Hub.
	Broker Broker

	// Authorize decides whether the request may perform op on channel. It
	// runs for every SSE stream, every WebSocket subscribe and publish frame
	// and every HTTP publish, before any history is replayed; r is the
	// request that opened the stream or WebSocket, so read the user from
	// its cookies or context (browsers cannot set headers on EventSource
	// and WebSocket requests). It is evaluated once per subscription: a
	// subscription it allowed goes on until the client leaves.
	//
	// A non-nil error refuses: 403 over HTTP, an error frame over
	// WebSocket. The client sees a generic message and the error goes to
	// Logger, unless it came from [Deny], whose message is meant for the
	// client. Wrap [ErrUnknownChannel] to answer 404 instead; but where
	// channels name tenants or users, refuse unknown and forbidden ones
	// alike, or clients can tell which exist.
	//
	// Default: subscribing is allowed, publishing from clients is refused.
	Authorize func(r *http.Request, channel string, op Op) error

	// Identify says who a request is, the way the application already
	// knows it: from its session cookie, or the user its own auth
	// middleware put in the request's context. It runs once per SSE
	// stream, WebSocket and HTTP publish, before Authorize, which reads
	// the result with IdentityOf. A non-nil error refuses the request
	// with 401 (the client sees a generic message, or that of [Deny]).
	// Default: every request is anonymous.
	Identify func(r *http.Request) (Identity, error)

	// OriginPatterns lists the browser origins, besides the request's own
	// host, allowed to open WebSockets, read SSE streams and publish over
	// HTTP (CORS). Patterns match the Origin's host with path.Match, or
	// "scheme://host" when they contain "://". Default: same host only.
	OriginPatterns []string

	// MaxMessageBytes limits an incoming WebSocket frame and an HTTP
	// publish body. Default 64 KiB.
	MaxMessageBytes int64

	// MaxSubscriptions limits the channels one WebSocket connection may
	// subscribe to at once. Default 100.
	MaxSubscriptions int

	// QueueBytes and QueueMessages bound each connection's queue of
	// frames waiting to be written. Defaults 1 MiB and 4096. A frame is
	// admitted while the queue is under its bounds, so the queue holds at
	// most one frame beyond them. What a resuming client missed is queued
	// on top of them (the broker's history bounds it), so that a long
	// resume is not taken for a slow client.
	//
	// A publication may be at most half of QueueBytes (512 KiB by
	// default): Publish refuses larger ones with ErrTooLarge and counts
	// them in Stats.TooLarge, so that one publication never fills a
	// client's queue and evicts every subscriber as slow.
	QueueBytes    int
	QueueMessages int

	// SlowPolicy says what happens to a connection that exceeds its queue
	// bounds. Default SlowDisconnect.
	SlowPolicy SlowPolicy

	// Heartbeat is how often idle SSE streams get a comment line and
	// WebSocket connections a ping, from one shared timer. Default 15s.
	Heartbeat time.Duration

	// WriteTimeout bounds every write to a client and the wait for a
	// WebSocket pong; a client that exceeds it is disconnected. Default 10s.
	WriteTimeout time.Duration

	// QueryKey, if set, names the React Query cache entry of a channel.
	// WebSocket data frames of the channel then carry it as "queryKey",
	// and the seed's LiveProvider writes each publication's data into that
	// entry. It is called once per channel while the channel has
	// subscribers; return nil for channels without one. Default: none.
	QueryKey func(channel string) []string

	// Lists names the channels that carry the seed's list operations,
	// {"type":"add"|"update"|"remove","item":…,"id":…} as Hub.Hook
	// publishes them, by returning their id field ("" for other channels).
	// When a client falls behind, its queued operations on a list channel
	// are coalesced per id (updates merge, a remove cancels what came
	// before) instead of applying SlowPolicy; publications there that are
	// not list operations leave SlowPolicy to decide. Default: none.
	Lists func(channel string) (idField string)

	// MaxConnsPerIP limits the open SSE and WebSocket connections from one
	// client address; more are refused with 429. Default 256; negative
	// means no limit. Behind a proxy, set ClientIP, or every client shares
	// the proxy's address.
	MaxConnsPerIP int

	// ClientIP returns the address a request comes from. Default: the host
	// of r.RemoteAddr. Trust a forwarding header only from your own proxy.
	ClientIP func(r *http.Request) string

	// PublishRate limits the publish frames one WebSocket connection may
	// send per second (bursts up to one second's worth); the excess gets a
	// "rate_limited" error frame. Default 100; negative means no limit.
	PublishRate int

	// Compression negotiates permessage-deflate (without context takeover,
	// to keep per-connection memory small) with WebSocket clients that
	// offer it. MaxMessageBytes then bounds the decompressed size, so a
	// small frame that inflates into a huge one is refused. Default off:
	// compression costs CPU per message and per-connection memory.
	Compression bool

	// Presence opts channels into presence ("who is here"): return
	// PresenceMembers for a channel whose subscribers see each other, or
	// PresenceCount for one whose subscribers see only how many are here.
	// Members are users as Identify names them: a user's tabs and devices
	// are one member with several connections; anonymous connections are
	// counted, not listed. Subscribers get a "presence" frame with the
	// members when they subscribe, then diffs at most every 100 ms; GET
	// on the channel's stream URL with ?presence, and Hub.Members, return
	// them too. Whoever Authorize lets subscribe to a channel sees its
	// presence, and nobody else. Hubs sharing a broker see the same
	// members. Default: no channel has presence.
	Presence func(channel string) PresenceMode

	// PresenceGrace is how long a user whose last connection to a
	// presence channel closed stays a member, so that a reload or a
	// reconnection (to this hub or another) is neither a leave nor a
	// join. Default 5s.
	PresenceGrace time.Duration

	// PresenceTimeout is how long the members of a hub that stopped
	// without a word (killed, or cut off from the broker) stay listed by
	// the other hubs. A hub with presence tells the others it is alive
	// every third of it, so a dead hub's members are gone everywhere
	// within 4/3 of it. A hub that closes says so: its members leave
	// after PresenceGrace. Default 15s.
	PresenceTimeout time.Duration

	// AllowQueryCredentials lets requests carry credentials in the query
	// string (access_token, token, auth, api_key, …). By default they are
	// refused with 400: URLs end up in logs, histories and Referer
	// headers. Prefer cookies, which EventSource and WebSocket send.
	AllowQueryCredentials bool

	// Logger receives connection and broker events. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.Authorize == nil {
		c.Authorize = defaultAuthorize
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 100
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 1 << 20
	}
	if c.QueueMessages <= 0 {
		c.QueueMessages = 4096
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = 256
	}
	if c.ClientIP == nil {
		c.ClientIP = remoteHost
	}
	if c.PublishRate == 0 {
		c.PublishRate = 100
	}
	if c.PresenceGrace <= 0 {
		c.PresenceGrace = 5 * time.Second
	}
	if c.PresenceTimeout <= 0 {
		c.PresenceTimeout = 15 * time.Second
	}
	return c
}

// Locks, in the order they may be taken (a goroutine holding one takes
// only those after it):
//
//	memChannel.mu (MemoryBroker, which delivers under it)
//	→ hubChannel.mu (fan-out, resume)
//	→ conn.mu (a connection's queue)
//	→ conn.wmu (its output buffer) or State.mu
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
// connection locked under it. conn.wlock orders writes to one socket and
// is held across a write; conn.mu and conn.wmu are never held across one.

// A Hub fans publications out to SSE and WebSocket clients. Mount it on
// any mux (see [Hub.ServeHTTP]), publish from server code with
// [Hub.Publish], and call [Hub.Close] on shutdown.
//
// A Hub is safe for concurrent use. WebSocket connections and HTTP/1.1
// SSE streams are taken over from net/http: a small pool of writer
// goroutines (one per CPU, at least two) writes to all of them, and each
// WebSocket has a reader goroutine while its client is sending; on Linux
// one goroutine per hub waits for the sockets of idle clients, elsewhere
// each keeps its reader. Other SSE streams (HTTP/2) are written from
// their handler's goroutine. The Hub also runs one goroutine per channel with
// local subscribers, one heartbeat timer, and two goroutines that follow
// and apply the control messages of [Hub.Disconnect] and [Hub.Reauthorize],
// all ended and waited for by Close.
//
// Taking over a connection means middleware that wraps the ResponseWriter
// sees the stream begin but not its bytes, and the hub writes the response
// head itself (status 200, the headers set so far, Connection: close).
type Hub struct {
	id        string // tells this hub's control messages from others'
	opts      Options
	broker    Broker
	history   History // nil when the broker keeps none
	ownBroker bool
	idem      *memoryIdempotency // HookOptions.Idempotency's default
	presence  *presence          // nil without Options.Presence
	closes    closeWatcher       // waits for idle clients' sockets without a goroutine each, where it can
	// ownAuthorize is set when Options.Authorize is the application's:
	// streams then keep their request for Hub.Reauthorize.
	ownAuthorize bool
	stats        counters

	ctx    context.Context // ends at Close; parent of channel subscriptions
	cancel context.CancelFunc
	done   <-chan struct{} // ctx.Done()
	group  errgroup.Group  // channel subscriptions, catch-ups, heartbeat, writers

	writers writers        // the pool that writes taken-over connections
	drains  atomic.Int64   // goroutines started to wait for a client (tests read it)
	readers sync.WaitGroup // their readers; Add only under mu while not closed

	mu       sync.Mutex // guards channels, states, conns, perIP, closed and idle
	channels map[string]*hubChannel
	states   map[string]*State
	conns    map[*conn]struct{}
	perIP    map[string]int
	closed   bool
	idle     chan struct{} // closed when closed is set and conns is empty
}

// NewHub returns a Hub configured by opts, which may be nil. It starts the
// Hub's heartbeat timer; Close stops it.
func NewHub(opts *Options) *Hub {
	o := opts.withDefaults()
	h := &Hub{
		id:       randomEpoch(),
		idem:     newMemoryIdempotency(),
		opts:     o,
		broker:   o.Broker,
		channels: make(map[string]*hubChannel),
		conns:    make(map[*conn]struct{}),
		perIP:    make(map[string]int),
		idle:     make(chan struct{}),
	}
	h.ownAuthorize = opts != nil && opts.Authorize != nil
	h.closes.h = h
	h.stats.resetsBy = newResetCounters()
	if h.broker == nil {
		h.broker = NewMemoryBroker(nil)
		h.ownBroker = true
	}
	h.history, _ = h.broker.(History)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.done = h.ctx.Done()
	h.group.Go(h.heartbeat)
	h.group.Go(h.runControl)
	if o.Presence != nil {
		h.presence = newPresence(h)
		h.group.Go(h.presence.run)
		h.group.Go(h.presence.follow)
	}
	h.writers.init()
	for range max(2, runtime.GOMAXPROCS(0)) {
		h.group.Go(h.runWriter)
	}
	return h
}

// Publish publishes v on channel and returns its position. v is encoded
// with encoding/json; pass a json.RawMessage to publish JSON you already
// have (it is validated and compacted). Server code publishes regardless
// of Options.Authorize. After Close, Publish returns ErrClosed.
func (h *Hub) Publish(ctx context.Context, channel string, v any) (Position, error) {
	if err := ValidChannel(channel); err != nil {
		return Position{}, err
	}
	if reserved(channel) {
		return Position{}, fmt.Errorf("live: publish %q: %w", channel, errReserved)
	}
	data, err := json.Marshal(v)
	if err == nil && !utf8.Valid(data) {
		err = errBadJSON
	}
	if err != nil {
		return Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return h.publish(ctx, channel, data)
}

// publish sends compact JSON data to the broker.
func (h *Hub) publish(ctx context.Context, channel string, data []byte) (Position, error) {
	select {
	case <-h.done:
		return Position{}, fmt.Errorf("live: publish %q: %w", channel, ErrClosed)
	default:
	}
	data = seal(ctx, data)
	if max := h.maxPublication(); len(data) > max {
		h.stats.tooLarge.Add(1)
		return Position{}, fmt.Errorf("live: publish %q: %d bytes, more than %d (half of Options.QueueBytes): %w", channel, len(data), max, ErrTooLarge)
	}
	pos, err := h.broker.Publish(ctx, channel, data)
	if err != nil {
		h.stats.brokerErrors.Add(1)
		return Position{}, err
	}
	h.stats.published.Add(1)
	return pos, nil
}

// maxPublication is the largest publication the hub accepts.
func (h *Hub) maxPublication() int { return h.opts.QueueBytes / 2 }

// Close ends every stream (WebSocket connections get status 1001, going
// away; SSE streams end, and EventSource reconnects elsewhere or later),
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
	if h.presence != nil {
		h.presence.goodbye(ctx)
	}
	h.cancel()
	// Connections served by the writers have no goroutine watching the
	// hub: end them here.
	// One deadline for all: clients that do not read delay Close by
	// closeWait in all, not each.
	until := time.Now().Add(closeWait)
	for _, c := range taken {
		c.mu.Lock()
		kind := c.kind
		c.mu.Unlock()
		if kind != 0 {
			c.closeWith(statusGoingAway, "server shutting down", until)
			c.kill(ErrClosed)
		}
	}

	select {
	case <-h.idle:
	case <-ctx.Done():
		return fmt.Errorf("live: close: waiting for connections: %w", ctx.Err())
	}
	h.writers.close()
	h.group.Wait()
	h.readers.Wait()
	if h.ownBroker {
		if c, ok := h.broker.(interface{ Close() error }); ok {
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

// errTooManyConns refuses a connection over Options.MaxConnsPerIP.
var errTooManyConns = errors.New("live: too many connections from this address")

// enter registers a connection. It fails once the hub is closed, or when
// the client's address has too many connections already.
func (h *Hub) enter(c *conn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
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

// connections returns the hub's connections as they are now, to walk
// without the hub-wide lock.
func (h *Hub) connections() []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	return conns
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

// counters are the Hub's running totals; Stats copies them.
type counters struct {
	connections, subscriptions                   atomic.Int64
	published, delivered, replayed, resets, slow atomic.Int64
	brokerErrors, hookDropped, writes, tooLarge  atomic.Int64
	resetsBy                                     map[string]*atomic.Int64 // fixed keys: read-only map
}

// resetReasons are the reasons a reset frame gives.
var resetReasons = []string{resetGone, resetEpoch, resetAhead, resetMalformed, resetSlow, resetBroker}

func newResetCounters() map[string]*atomic.Int64 {
	m := make(map[string]*atomic.Int64, len(resetReasons))
	for _, r := range resetReasons {
		m[r] = new(atomic.Int64)
	}
	return m
}

// reset counts a reset frame sent for reason.
func (c *counters) reset(reason string) {
	c.resets.Add(1)
	if n := c.resetsBy[reason]; n != nil {
		n.Add(1)
	}
}

// Stats is a snapshot of a Hub's activity since NewHub.
type Stats struct {
	Connections   int64            // open SSE and WebSocket connections
	Subscriptions int64            // channel subscriptions across connections
	Published     int64            // publications accepted through this Hub
	Delivered     int64            // frames written to clients
	Writes        int64            // socket writes by the hub's writers; under load one carries many frames
	Replayed      int64            // publications sent from history to resuming clients
	Resets        int64            // reset frames sent
	ResetsBy      map[string]int64 // reset frames by reason: gone, epoch, ahead, malformed, slow, broker
	SlowClients   int64            // times a client overflowed its queue
	BrokerErrors  int64            // failed broker publishes and broken subscriptions
	HookDropped   int64            // successful requests whose Hub.Hook event could not be published
	TooLarge      int64            // publications refused with ErrTooLarge
}

// Stats returns the Hub's counters.
func (h *Hub) Stats() Stats {
	s := &h.stats
	st := Stats{
		Connections:   s.connections.Load(),
		Subscriptions: s.subscriptions.Load(),
		Published:     s.published.Load(),
		Delivered:     s.delivered.Load(),
		Writes:        s.writes.Load(),
		Replayed:      s.replayed.Load(),
		Resets:        s.resets.Load(),
		SlowClients:   s.slow.Load(),
		BrokerErrors:  s.brokerErrors.Load(),
		HookDropped:   s.hookDropped.Load(),
		TooLarge:      s.tooLarge.Load(),
		ResetsBy:      make(map[string]int64, len(s.resetsBy)),
	}
	for r, n := range s.resetsBy {
		st.ResetsBy[r] = n.Load()
	}
	return st
}

// ServeHTTP serves the whole protocol under one prefix, for example
//
//	mux.Handle("/live/", hub)
//
// GET /live/{channel} streams the channel as SSE and GET
// /live/?channels=a,b several on one stream; a WebSocket upgrade at
// /live/ opens a multiplexed connection; POST /live/{channel} publishes
// the request body; OPTIONS answers CORS preflights. The channel is the
// {channel} path value when the pattern has one, otherwise the last path
// segment.
//
// A URL that names a channel serves that channel only: ?channels= and
// WebSocket upgrades there are refused with 400, and no query parameter
// picks another channel. A guard that protects a route by its path
// therefore protects what the hub serves on it; multiplexed streams and
// WebSockets, at URLs that name no channel, rely on Options.Authorize.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isWebSocket(r) {
		if ch := pathChannel(r); ch != "" {
			refuseChannelSocket(w, ch)
			return
		}
		h.serveWS(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.serveSSE(w, r)
	case http.MethodPost:
		h.servePublish(w, r)
	case http.MethodOptions:
		h.servePreflight(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not supported here")
	}
}

// SSEHandler returns a handler that streams Server-Sent Events: one
// channel at a route with a {channel} wildcard, for example
// "GET /api/live/{channel}", and several (?channels=a,b, the multiplexed
// stream live.js falls back to) at a route without one, for example
// "GET /api/live". A route with {channel} streams only that channel:
// ?channels= there is refused with 400. (On routers that set no
// Request.Pattern, the last path segment names the channel, and the
// multiplexed stream is served at a path ending in "/".)
func (h *Hub) SSEHandler() http.Handler { return http.HandlerFunc(h.serveSSE) }

// WebSocketHandler returns a handler that accepts multiplexed WebSocket
// connections, for example at "GET /ws". It refuses upgrades on a route
// with a {channel} wildcard: a WebSocket may ask for any channel, which
// would walk around a guard on the route's path.
func (h *Hub) WebSocketHandler() http.Handler { return http.HandlerFunc(h.serveWS) }

// PublishHandler returns a handler that publishes a POSTed JSON body on
// a channel, for example at "POST /api/live/{channel}". It also answers
// OPTIONS preflights for cross-origin publishers.
func (h *Hub) PublishHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			h.servePreflight(w, r)
			return
		}
		h.servePublish(w, r)
	})
}

// errUnavailable is reported when the broker cannot serve a subscription.
var errUnavailable = errors.New("live: broker unavailable")
