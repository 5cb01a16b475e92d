package live

import (
	"crypto/rand"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-live/live/observe"
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
	// subscription it allowed goes on until the client leaves, or until
	// Hub.Reauthorize or Hub.Disconnect ends it. A subscription whose
	// Authorize was running when a Reauthorize that concerns it was
	// applied is authorized again before it receives anything, so an
	// Authorize that read rights just revoked never lets a publication
	// made after the Reauthorize through.
	//
	// r's context lives as long as the connection: it ends when the
	// connection ends or the Hub closes, not when the handler that opened
	// it returns, so pass it to the database or Redis lookups Authorize
	// makes, also for a WebSocket's later frames and for Hub.Reauthorize.
	// It keeps the request's values (IdentityOf, your middleware's).
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
	// the result with IdentityOf, and for each request [Hub.Hook] wraps
	// that carries a retry key, whose response only the same user gets
	// again (see [HookOptions].RetryWindow). A non-nil error refuses the request
	// with 401 (the client sees a generic message, or that of [Deny]).
	// A connection whose Identify was running when a Disconnect of its
	// user was applied is refused with 401 too ("disconnected"), or, if it
	// got further, ended as Disconnect ends the others. Identify runs
	// while the request is served; run again for an open connection, it
	// gets the request the connection keeps for Authorize, whose context
	// lives as long as the connection: when a hub may have lost a control
	// message (see [Hub.Disconnect]) it runs Identify again for every
	// connection, and ends those it refuses or names another user for.
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
	// most one frame beyond them. What a resuming client missed is read
	// from history a page of the same bounds at a time and queued as the
	// queue makes room, so a long resume is neither taken for a slow
	// client nor held in memory whole; publications made meanwhile wait
	// within the same bounds, past which SlowPolicy applies.
	//
	// A publication may be at most half of QueueBytes (512 KiB by
	// default), whichever way it is made (Publish, HTTP or WebSocket
	// publish, Hub.Hook, a State write): larger ones are refused with
	// ErrTooLarge (413, a "too_large" frame) and counted in
	// Stats.TooLarge, so that one publication never fills a client's
	// queue and evicts every subscriber as slow. QueueBytes so sets that
	// limit, and HookOptions.MaxBody's default (1 KiB less) with it. A
	// WebSocket client that pings without reading the pongs is
	// disconnected once they pass twice QueueBytes.
	QueueBytes    int
	QueueMessages int

	// PendingBytes and PendingAge bound the publications that were
	// promised but that the broker has not taken: a Hub.Hook event whose
	// request was answered 2xx while the broker was unreachable waits in
	// the hub and is sent again, in order per channel, once the broker
	// answers (later publications on its channel wait behind it, Publish
	// too). Past PendingBytes a new one is refused, and one waiting longer
	// than PendingAge is dropped: either way it is logged as an error and
	// counted in Stats.PendingDropped. Stats.Pending counts those waiting.
	// Defaults 16 MiB and 10 minutes. They live in this process only: a
	// crash loses them (a transactional outbox in the application's
	// database covers that).
	PendingBytes int
	PendingAge   time.Duration

	// SlowPolicy says what happens to a connection that exceeds its queue
	// bounds. Default SlowDisconnect.
	SlowPolicy SlowPolicy

	// Heartbeat is how often idle SSE streams get a comment line and
	// WebSocket connections a ping, from one shared timer. Default 15s.
	Heartbeat time.Duration

	// WriteTimeout bounds every write to a client; a client that exceeds
	// it is disconnected, as is a WebSocket client that answers no ping
	// within Heartbeat plus WriteTimeout. Default 10s.
	//
	// It also bounds what the Hub does for a Hub.Hook request after the
	// response is sent: the request's publications together get
	// WriteTimeout for the broker to take them (one it does not take
	// waits in the Hub, see PendingBytes, and each later attempt to send
	// it gets WriteTimeout again), and recording the outcome in
	// HookOptions.Idempotency's store gets as long.
	WriteTimeout time.Duration

	// QueryKey, if set, names the React Query cache entry of a channel.
	// WebSocket data frames of the channel then carry it as "queryKey",
	// and a React LiveProvider writes each publication's data into that
	// entry. It is called once per channel while the channel has
	// subscribers; return nil for channels without one. Default: none.
	QueryKey func(channel string) []string

	// ListIDField returns the id field of the items on channel when it
	// carries useLiveList's list operations,
	// {"type":"add"|"update"|"remove","item":…,"id":…} as Hub.Hook
	// publishes them, and "" for a channel that is not a list. When a
	// client falls behind, its queued operations on a list channel
	// are coalesced per id (updates merge, a remove cancels what came
	// before) instead of applying SlowPolicy; publications there that are
	// not list operations leave SlowPolicy to decide. Default: none.
	ListIDField func(channel string) string

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

	// ResetText, if set, returns text that a channel's one-channel SSE
	// streams get right after each named "reset" event, for pages that
	// cannot listen for that event or would rather be told in their own
	// terms: a Turbo Stream refresh for <turbo-stream-source>, a Datastar
	// patch, an event name an htmx page triggers on. It is called once per
	// channel while the channel has subscribers; return the zero Text for
	// channels without one. Its Event follows [Text]'s rules (a name that
	// breaks them is logged and nothing is sent). Plain channels only: a
	// State's and a list channel's resets are unchanged. Package livehtml
	// has helpers that make one. Default: none.
	ResetText func(channel string) Text

	// PresenceText, if set, renders the presence of a channel
	// ([Options].Presence) as text that the channel's one-channel SSE
	// streams get right after each "presence" event: "3 watching", or a
	// member list, for a server-rendered page to swap in. members is nil
	// on a PresenceCount channel; count is the number of members. It is
	// called when the members subscribers see change (at most every 100
	// ms per channel, once for all of a hub's subscribers) and for the
	// first subscriber after a change, while the hub holds the channel's
	// presence: keep it quick, and call no Hub method from it. Return the
	// zero Text for channels without one; an Event that breaks [Text]'s
	// rules is logged and nothing is sent. Package livehtml renders one
	// through a template. Default: none.
	PresenceText func(channel string, members []Member, count int) Text

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

	// TicketKey signs the stream tickets Hub.Ticket mints, which stand
	// for an identity in a URL's "ticket" parameter, the one query
	// credential admitted without AllowQueryCredentials. Hubs that accept
	// each other's tickets share it (32 random bytes, kept secret).
	// Default: a random key of this Hub, whose tickets no other accepts.
	TicketKey []byte

	// TicketStore makes tickets single use: a ticket's nonce is claimed
	// in it, and one claimed already is refused. Give the Hubs of several
	// nodes one shared store (the redis, nats and postgres modules'
	// IdempotencyStores). Default: this Hub's memory, so that a ticket is
	// single use on this Hub only.
	TicketStore IdempotencyStore

	// Logger receives connection and broker events. Default slog.Default().
	Logger *slog.Logger

	// Observe, if set, is called as the Hub works, for metrics and
	// traces: see package [observe], and the Prometheus collector of
	// module github.com/go-live/live/prometheus. NewHub copies it.
	// Default: none.
	Observe *observe.Hooks
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.Authorize == nil {
		c.Authorize = defaultAuthorize
	}
	if len(c.TicketKey) == 0 {
		c.TicketKey = []byte(rand.Text())
	}
	if c.TicketStore == nil {
		c.TicketStore = new(usedTickets)
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
	if c.PendingBytes <= 0 {
		c.PendingBytes = 16 << 20
	}
	if c.PendingAge <= 0 {
		c.PendingAge = 10 * time.Minute
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
