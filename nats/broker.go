// Package natsbroker is a [live.Broker] with [live.History] on NATS
// JetStream, so that several processes, each with its own [live.Hub], serve
// the same channels and every client can resume on any of them.
//
// Use [Open] with a NATS URL, or [New] with a *nats.Conn you configured,
// and give the broker to the Hub:
//
//	b, err := natsbroker.Open("nats://localhost:4222", nil)
//	if err != nil { … }
//	defer b.Close()
//	hub := live.NewHub(&live.Options{Broker: b})
//	defer hub.Close(context.Background())
//
// # What JetStream holds
//
// One stream, named [Options].Prefix, keeps the recent publications of
// every channel, one subject per channel: "live.c.<channel>", with "." and
// "=" in the channel name written as "=2E" and "=3D". Each message carries
// its position in headers (Live-Epoch, Live-Seq) and the stream sequence of
// the channel's previous message (Live-Prev); a publication with meta
// ([live.Message].Meta) carries it in Live-Meta, and is stored alone. The
// stream republishes every
// message it stores to "live.r.<channel>", where subscriptions receive it.
//
// Publish appends with the header Nats-Expected-Last-Subject-Sequence set
// to the stream sequence of the channel's latest message, and Live-Seq one
// more than that message's: JetStream stores it only if no other
// publication came in between, so numbering and history never diverge and
// every process agrees on positions. A publisher that lost the race reads
// the new latest message and tries again. A channel with no messages (new,
// idle for the stream's MaxAge, or lost with the server's data) starts a
// new random epoch, so older cursors reset instead of resuming into the
// wrong numbering.
//
// # Publication keys
//
// A publication under an idempotency key ([live.PublishKey]) is stored
// in a message of its own with the header Nats-Msg-Id set to its channel
// and key ("<channel> <key>"). Within the stream's duplicate window
// ([Options].KeyWindow, by default HistoryAge) JetStream stores one
// message per ID, whichever broker sharing the stream sends it, and
// answers a repeat with the stream sequence of the message it stored,
// whose position Publish returns. JetStream compares the ID before the
// expected last sequence, so a repeat of a conditional publication
// ([Broker.PublishIf]) also returns the key's position, whatever the
// channel's head. After the window a key is forgotten.
//
// # Failures
//
// A follow ([Broker.Follow], or Subscribe) checks that every message it
// receives is the one after the last, and ends with an error on a gap, another epoch, a slow-consumer
// drop, a lost or re-established connection, or a connection that stays
// silent for [Options].StallTimeout although pinged. The Hub then
// follows again and fills the hole from history. Publish returns an
// error when JetStream does not acknowledge a publication.
//
// Requires nats-server 2.9 or later with JetStream enabled.
package natsbroker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configures a Broker. The zero value, or nil, means the defaults
// documented on each field. Brokers sharing a NATS system must agree on
// Prefix, and should on HistorySize, HistoryAge and KeyWindow.
type Options struct {
	// HistorySize is how many recent publications each channel keeps for
	// resuming clients (the stream's MaxMsgsPerSubject). Default 1024;
	// negative keeps none but the latest, which holds the channel's
	// position.
	HistorySize int

	// HistoryAge is how old a publication may be and still be replayed
	// (by JetStream's timestamps against this process's clock). Default 10
	// minutes; negative means no limit. With a limit, the stream's MaxAge
	// is HistoryAge or 24 hours, whichever is longer: a channel on which
	// nothing is published for that long is forgotten, and its next
	// publication starts a new epoch.
	HistoryAge time.Duration

	// KeyWindow is how long the broker remembers a publication's
	// idempotency key ([live.PublishKey]): the stream's duplicate window
	// (Duplicates), in which JetStream takes one message per key and
	// channel. Default HistoryAge, or 10 minutes (a Hub's default
	// PendingAge, how long it sends a publication again) when HistoryAge
	// has no limit; at least 100 milliseconds, at most the stream's MaxAge.
	// The server keeps every key of the window in memory.
	KeyWindow time.Duration

	// Prefix names the stream and starts every subject the broker uses,
	// so that several applications can share a NATS system. It must be 1
	// to 64 characters of [A-Za-z0-9_-]. Default "live".
	Prefix string

	// StallTimeout is how long the connection may leave a ping
	// unanswered before the broker takes the server for stalled and ends
	// every Subscribe call with an error. It pings every quarter of that
	// while there are subscriptions, and looks for lost connections as
	// often. Default 5 seconds.
	StallTimeout time.Duration

	// Logger receives the broker's warnings: stalls and lost
	// connections. Default slog.Default().
	Logger *slog.Logger
}

// Broker is a [live.Broker] and [live.History] on NATS JetStream. It is
// safe for concurrent use. It runs two goroutines from New or Open until
// Close, one watching the connection and one delivering what followed
// channels receive, and a few more while follows start or holes in their
// messages are read from the stream; none per followed channel.
type Broker struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	own    bool // Close closes nc
	size   int  // MaxMsgsPerSubject, >= 1
	age    time.Duration
	keyWin time.Duration // the stream's Duplicates
	prefix string
	stall  time.Duration
	log    *slog.Logger

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	done    chan struct{}  // closed when the watcher has returned
	senders sync.WaitGroup // the goroutines sending publications that queued

	conflicts  atomic.Int64
	fills      atomic.Int64
	stalls     atomic.Int64
	connLosses atomic.Int64

	// streamTurn holds a token while a call looks the stream up or
	// creates it; waiting for it honours the caller's context. The
	// holder guards stream.
	streamTurn chan struct{}
	stream     jetstream.Stream
	snaps      jetstream.Stream // snapshots (see snapshot.go)

	// drop, set by tests before use, makes subscriptions ignore the
	// messages for which it returns true, as if they were lost.
	drop func(live.Position) bool

	status chan nats.Status // the connection's status changes

	mu         sync.Mutex // guards closed, pubs and the conn fields
	connCtx    context.Context
	connCancel context.CancelCauseFunc
	connGen    uint64 // the connection's reconnection count when connCtx began
	closed     bool
	pubs       map[string]*pubChan // by channel

	// The followers (see subscribe.go).
	inbox        chan *nats.Msg // what their subscriptions receive
	dispatched   chan struct{}  // closed when the dispatcher has returned
	fmu          sync.Mutex     // guards follows, starting, flushing and followClosed
	follows      map[*nats.Subscription]*follower
	starting     []*follower // subscribed, waiting for the ping that makes them active
	flushing     bool        // a worker is pinging for starting
	followClosed bool

	// The workers (see subscribe.go).
	jmu         sync.Mutex // guards jobs, workers, busyWorkers and jobsClosed
	jobs        []job
	workers     int
	busyWorkers int
	jobsClosed  bool
	wg          sync.WaitGroup // the workers
	// freshHeads says that most channels of the last batch of follows
	// had no message (see startMany).
	freshHeads atomic.Bool
}

var (
	_ live.Broker       = (*Broker)(nil)
	_ live.History      = (*Broker)(nil)
	_ live.PagedHistory = (*Broker)(nil)
	_ live.Snapshots    = (*Broker)(nil)
	_ live.Conditional  = (*Broker)(nil)
	_ live.Follower     = (*Broker)(nil)
)

const (
	defaultHistorySize = 1024
	defaultHistoryAge  = 10 * time.Minute
	defaultPrefix      = "live"
	defaultStall       = 5 * time.Second
	minChannelAge      = 24 * time.Hour
	minKeyWindow       = 100 * time.Millisecond // JetStream's least duplicate window
)

// Stats are a Broker's counters since New.
type Stats struct {
	// Conflicts counts publications tried again because another publisher
	// took the position first.
	Conflicts int64
	// Fills counts the holes in a subscription's messages filled from
	// the stream: messages republished out of order, or dropped.
	Fills int64
	// Stalls counts the times the connection left a ping unanswered for
	// StallTimeout, which ended every subscription.
	Stalls int64
	// ConnectionLosses counts the times the connection was found down or
	// re-established, which ended every subscription.
	ConnectionLosses int64
	// Subscriptions is the number of channels followed: Subscribe calls
	// running, and Follow calls not ended or stopped.
	Subscriptions int64
}

// checkOptions reports options New cannot work with; Open returns it as
// an error, New panics with it.
func checkOptions(o *Options) error {
	if o.Prefix != "" && !validPrefix(o.Prefix) {
		return fmt.Errorf("natsbroker: Options.Prefix %q must be 1 to 64 characters of [A-Za-z0-9_-]", o.Prefix)
	}
	return nil
}

// New returns a broker that uses nc. The broker never closes nc; close it
// after the broker.
//
// Configure nc with nats.ReconnectBufSize(-1), so that a publication made
// while the connection is down fails at once instead of waiting in a
// buffer; Open does.
func New(nc *nats.Conn, opts *Options) *Broker {
	if nc == nil {
		panic("natsbroker: New with a nil *nats.Conn")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.HistorySize == 0 {
		o.HistorySize = defaultHistorySize
	}
	if o.HistoryAge == 0 {
		o.HistoryAge = defaultHistoryAge
	}
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if err := checkOptions(&o); err != nil {
		panic(err.Error())
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = defaultStall
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		panic("natsbroker: " + err.Error()) // only for a nil connection
	}
	b := &Broker{
		nc:         nc,
		js:         js,
		size:       max(o.HistorySize, 1),
		prefix:     o.Prefix,
		stall:      o.StallTimeout,
		log:        o.Logger,
		done:       make(chan struct{}),
		inbox:      make(chan *nats.Msg, inboxSize),
		dispatched: make(chan struct{}),
		follows:    make(map[*nats.Subscription]*follower),
		streamTurn: make(chan struct{}, 1),
		pubs:       make(map[string]*pubChan),
	}
	if o.HistoryAge > 0 {
		b.age = o.HistoryAge
	}
	b.keyWin = o.KeyWindow
	if b.keyWin <= 0 {
		b.keyWin = b.age
		if b.keyWin == 0 {
			b.keyWin = defaultHistoryAge
		}
	}
	b.keyWin = max(b.keyWin, minKeyWindow)
	if b.age > 0 {
		b.keyWin = min(b.keyWin, max(b.age, minChannelAge)) // MaxAge
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.connCtx, b.connCancel = context.WithCancelCause(b.ctx)
	b.connGen = nc.Stats().Reconnects
	if nc.Status() != nats.CONNECTED {
		b.connCancel(errConnLost)
	}
	b.status = nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go b.watch()
	go b.dispatcher()
	return b
}

// Open connects to the NATS server at url (nats://[user:password@]host[:port],
// or several separated by commas) and returns a broker on that
// connection, which Close closes. The connection reconnects forever, and
// publications fail at once while it is down.
func Open(url string, opts *Options) (*Broker, error) {
	if opts != nil {
		if err := checkOptions(opts); err != nil {
			return nil, err
		}
	}
	nc, err := nats.Connect(url,
		nats.Name("live"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(-1),
	)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: %w", err)
	}
	b := New(nc, opts)
	b.own = true
	return b, nil
}

// Close ends every subscription with an error matching [live.ErrClosed],
// makes later calls fail with it, waits for the broker's goroutines and
// closes the connection if Open made it. Calling it again does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.fmu.Lock()
	b.followClosed = true
	b.fmu.Unlock()
	b.failFollowers(live.ErrClosed, func(*follower) bool { return true })

	b.cancel()
	b.jmu.Lock()
	b.jobsClosed = true
	b.jmu.Unlock()
	b.wg.Wait()
	b.senders.Wait()
	<-b.done
	<-b.dispatched
	b.nc.RemoveStatusListener(b.status)
	if b.own {
		b.nc.Close()
	}
	return nil
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Conflicts:        b.conflicts.Load(),
		Fills:            b.fills.Load(),
		Stalls:           b.stalls.Load(),
		ConnectionLosses: b.connLosses.Load(),
		Subscriptions:    int64(b.followerCount()),
	}
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func validPrefix(p string) bool {
	if len(p) == 0 || len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
