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
// A subscription checks that every message it receives is the one after
// the last, and returns an error on a gap, another epoch, a slow-consumer
// drop, a lost or re-established connection, or a connection that stays
// silent for [Options].StallTimeout although pinged. The Hub then
// subscribes again and fills the hole from history. Publish returns an
// error when JetStream does not acknowledge a publication.
//
// Requires nats-server 2.9 or later with JetStream enabled.
package natsbroker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
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
// safe for concurrent use. It runs one goroutine, which watches the
// connection, from New or Open until Close.
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

	conflicts   atomic.Int64
	fills       atomic.Int64
	stalls      atomic.Int64
	connLosses  atomic.Int64
	subscribers atomic.Int64

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

	mu         sync.Mutex // guards closed, subs, pubs and the conn fields
	connCtx    context.Context
	connCancel context.CancelCauseFunc
	connGen    uint64 // the connection's reconnection count when connCtx began
	closed     bool
	subs       map[*sub]struct{}
	pubs       map[string]*pubChan // by channel
}

var (
	_ live.Broker       = (*Broker)(nil)
	_ live.History      = (*Broker)(nil)
	_ live.PagedHistory = (*Broker)(nil)
	_ live.Snapshots    = (*Broker)(nil)
	_ live.Conditional  = (*Broker)(nil)
)

const (
	defaultHistorySize = 1024
	defaultHistoryAge  = 10 * time.Minute
	defaultPrefix      = "live"
	defaultStall       = 5 * time.Second
	minChannelAge      = 24 * time.Hour
	minKeyWindow       = 100 * time.Millisecond // JetStream's least duplicate window

	// maxAttempts bounds how often a message is tried after losing the
	// race for a position to other processes; Close bounds it too. A process
	// publishing without pause on a channel can win many races in a row,
	// because it starts each publication from the tail its last one left,
	// while the loser must read the tail first.
	maxAttempts = 1000

	// walkMax is the most publications Since reads one by one, following
	// Live-Prev back from the head; beyond it, a consumer reads the
	// channel's retained messages in batches.
	walkMax = 64

	// maxIdlePubs bounds the per-channel publishing state kept between
	// publications.
	maxIdlePubs = 4096
)

// The headers of a stored message.
const (
	hdrEpoch = "Live-Epoch"
	hdrSeq   = "Live-Seq"   // of the message's last publication
	hdrPrev  = "Live-Prev"  // the stream sequence of the channel's message before
	hdrCount = "Live-Count" // publications in the message, if more than one
	hdrMeta  = "Live-Meta"  // the meta of the message's one publication, if any
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
	// Subscriptions is the number of Subscribe calls running.
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
		subs:       make(map[*sub]struct{}),
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
// makes later calls fail with it, waits for the broker's goroutine and
// closes the connection if Open made it. Calling it again does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for s := range b.subs {
		s.fail(live.ErrClosed)
	}
	b.mu.Unlock()

	b.cancel()
	b.senders.Wait()
	<-b.done
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
		Subscriptions:    b.subscribers.Load(),
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

// subjectToken writes channel as one subject token: "." separates tokens,
// so it becomes "=2E", and "=" becomes "=3D" to keep the mapping one to
// one. The other characters of a valid channel are plain in subjects.
func subjectToken(channel string) string {
	if !strings.ContainsAny(channel, ".=") {
		return channel
	}
	var sb strings.Builder
	for i := 0; i < len(channel); i++ {
		switch c := channel[i]; c {
		case '.':
			sb.WriteString("=2E")
		case '=':
			sb.WriteString("=3D")
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// subject returns the subject that stores channel's publications.
func (b *Broker) subject(channel string) string { return b.prefix + ".c." + subjectToken(channel) }

// announcements returns the subject that the stream republishes channel's
// publications to.
func (b *Broker) announcements(channel string) string {
	return b.prefix + ".r." + subjectToken(channel)
}

// streamConfig is the stream New's options ask for.
func (b *Broker) streamConfig() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              b.prefix,
		Description:       "live: recent publications, one subject per channel",
		Subjects:          []string{b.prefix + ".c.>"},
		MaxMsgsPerSubject: int64(b.size),
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		RePublish:         &jetstream.RePublish{Source: b.prefix + ".c.>", Destination: b.prefix + ".r.>"},
		Duplicates:        b.keyWin,
	}
	if b.age > 0 {
		cfg.MaxAge = max(b.age, minChannelAge)
	}
	return cfg
}

// getStream returns the broker's stream, creating it if it does not exist.
// A stream that exists is used as it is, if it has the subjects and the
// republishing the broker needs, so operators may create it themselves
// (with replicas, say); only a duplicate window shorter than KeyWindow is
// lengthened (see widenKeyWindow).
func (b *Broker) getStream(ctx context.Context) (jetstream.Stream, error) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.streamTurn }()
	if b.stream != nil {
		return b.stream, nil
	}
	cfg := b.streamConfig()
	s, err := b.js.CreateStream(ctx, cfg)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		// It exists with another configuration, or another broker is
		// creating it (the server may then report overlapping subjects).
		if existing, err2 := b.js.Stream(ctx, cfg.Name); err2 == nil {
			s, err = existing, checkStream(existing.CachedInfo().Config, cfg)
			if err == nil {
				s = b.widenKeyWindow(ctx, s)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	b.stream = s
	return s, nil
}

// checkStream reports an existing stream that lacks what the broker needs.
func checkStream(have, want jetstream.StreamConfig) error {
	rp := have.RePublish
	if len(have.Subjects) != 1 || have.Subjects[0] != want.Subjects[0] || rp == nil ||
		rp.Source != want.RePublish.Source || rp.Destination != want.RePublish.Destination || rp.HeadersOnly {
		return fmt.Errorf("the existing stream has subjects %q and republish %+v; want %q and %+v",
			have.Subjects, rp, want.Subjects, *want.RePublish)
	}
	return nil
}

// widenKeyWindow lengthens the duplicate window of s, an existing stream,
// to KeyWindow if it is shorter (a stream made before keys were honoured
// has JetStream's default of 2 minutes), within its MaxAge, and returns
// the stream to use. A longer window is left alone, so brokers with
// different KeyWindows do not undo each other. If the update fails, the
// broker logs it and uses s: keys are then remembered for its window.
func (b *Broker) widenKeyWindow(ctx context.Context, s jetstream.Stream) jetstream.Stream {
	cfg := s.CachedInfo().Config
	want := b.keyWin
	if cfg.MaxAge > 0 {
		want = min(want, cfg.MaxAge)
	}
	if cfg.Duplicates >= want {
		return s
	}
	was := cfg.Duplicates
	cfg.Duplicates = want
	updated, err := b.js.UpdateStream(ctx, cfg)
	if err != nil {
		b.log.Warn("natsbroker: cannot lengthen the stream's duplicate window to KeyWindow; publication keys are remembered for the shorter window",
			"stream", cfg.Name, "duplicates", was, "keyWindow", want, "err", err)
		return s
	}
	b.log.Info("natsbroker: lengthened the stream's duplicate window to KeyWindow", "stream", cfg.Name, "from", was, "to", want)
	return updated
}

// forgetStream drops s (nil: any) if it is the cached stream, so that the next use
// looks it up or creates it again: the server lost it.
func (b *Broker) forgetStream(ctx context.Context, s jetstream.Stream) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return // the caller fails on its context anyway
	}
	if s == nil || b.stream == s {
		b.stream = nil
	}
	<-b.streamTurn
}

// streamGone reports an error that means the stream does not exist.
func streamGone(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders)
}

// A tail is a stored message of a channel, usually its latest.
type tail struct {
	pos   live.Position // of its last publication
	count int           // its publications: 1, more, or 0 for a channel without messages
	sseq  uint64        // its stream sequence; 0 if the channel has no message
	prev  uint64        // the stream sequence of the message before it; 0 for none
	data  []byte        // as stored: packed if count > 1
	meta  []byte        // of its one publication; nil for none
	at    time.Time
}

// first returns the Seq of t's first publication.
func (t tail) first() uint64 { return t.pos.Seq + 1 - uint64(max(t.count, 1)) }

// messages returns t's publications after Seq after.
func (t tail) messages(channel string, after uint64) ([]live.Message, error) {
	datas := [][]byte{t.data}
	if t.count > 1 {
		var err error
		if datas, err = unpack(t.data, t.count); err != nil {
			return nil, fmt.Errorf("message at %v: %w", t.pos, err)
		}
	}
	first := t.first()
	var msgs []live.Message
	for i, d := range datas {
		if seq := first + uint64(i); seq > after {
			msgs = append(msgs, live.Message{Channel: channel, Pos: live.Position{Epoch: t.pos.Epoch, Seq: seq}, Data: d, Meta: t.meta})
		}
	}
	return msgs, nil
}

// pack frames several publications' data as one message's: each as its
// length (a uvarint) and its bytes.
func pack(datas [][]byte) []byte {
	n := 0
	for _, d := range datas {
		n += binary.MaxVarintLen32 + len(d)
	}
	buf := make([]byte, 0, n)
	for _, d := range datas {
		buf = binary.AppendUvarint(buf, uint64(len(d)))
		buf = append(buf, d...)
	}
	return buf
}

// unpack returns the count publications' data pack framed in buf.
func unpack(buf []byte, count int) ([][]byte, error) {
	datas := make([][]byte, 0, count)
	for len(buf) > 0 && len(datas) < count {
		n, w := binary.Uvarint(buf)
		if w <= 0 || n > uint64(len(buf)-w) {
			break
		}
		datas = append(datas, buf[w:w+int(n):w+int(n)])
		buf = buf[w+int(n):]
	}
	if len(datas) != count || len(buf) != 0 {
		return nil, fmt.Errorf("malformed %s of %d", hdrCount, count)
	}
	return datas, nil
}

// newEpoch returns a random epoch: 12 characters of [a-z2-7], 60 bits.
func newEpoch() string {
	return strings.ToLower(rand.Text()[:12])
}

// parseStored reads the headers the broker writes on every message into
// t's pos, count and prev.
func parseStored(subject string, h nats.Header, data []byte) (t tail, err error) {
	epoch := h.Get(hdrEpoch)
	seq, err1 := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	prev, err2 := strconv.ParseUint(h.Get(hdrPrev), 10, 64)
	count := 1
	var err3 error
	if c := h.Get(hdrCount); c != "" {
		count, err3 = strconv.Atoi(c)
		if err3 == nil && (count < 1 || uint64(count) > seq) {
			err3 = errors.New("out of range")
		}
	}
	var meta []byte
	if m := h.Get(hdrMeta); m != "" {
		meta = []byte(m)
		if count != 1 {
			err3 = errors.New("meta on several publications")
		}
	}
	if epoch == "" || err1 != nil || err2 != nil || err3 != nil {
		return tail{}, fmt.Errorf("message on %s without valid %s, %s, %s, %s and %s headers", subject, hdrEpoch, hdrSeq, hdrPrev, hdrCount, hdrMeta)
	}
	return tail{pos: live.Position{Epoch: epoch, Seq: seq}, count: count, prev: prev, data: data, meta: meta}, nil
}

func fromRaw(raw *jetstream.RawStreamMsg) (tail, error) {
	t, err := parseStored(raw.Subject, raw.Header, raw.Data)
	t.sseq, t.at = raw.Sequence, raw.Time
	return t, err
}

// last returns the channel's latest stored message, with ok false if it
// has none. It creates the stream if the server has none.
func (b *Broker) last(ctx context.Context, channel string) (t tail, ok bool, err error) {
	for attempt := 0; ; attempt++ {
		s, err := b.getStream(ctx)
		if err != nil {
			return tail{}, false, err
		}
		raw, err := s.GetLastMsgForSubject(ctx, b.subject(channel))
		switch {
		case err == nil:
			t, err := fromRaw(raw)
			return t, err == nil, err
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return tail{}, false, nil
		case streamGone(err) && attempt == 0:
			b.forgetStream(ctx, s)
			continue
		}
		return tail{}, false, err
	}
}

// A pubChan is a channel's publishing state in this process. Its
// publications queue, and one sender at a time stores everything waiting
// as one message (see append), so that publishers on one channel share
// round trips instead of taking turns one round trip each. Each message
// starts from the tail the previous one left, so a process publishing
// alone needs one round trip per message.
//
// A publication that finds no sender sends itself, on its caller's
// goroutine and bounded by the caller's context if it goes alone; what
// queues meanwhile is left to a goroutine of the broker's, so that the
// caller returns when its own publication is done. Uncontended, publishing
// therefore starts no goroutine.
type pubChan struct {
	channel string
	users   int // guarded by Broker.mu: items not yet completed, and callers about to queue one

	mu      sync.Mutex // guards waiting and sending
	waiting []*pubItem
	sending bool // some goroutine is pc's sender; when false, waiting is empty

	// Owned by pc's sender.
	known bool
	tail  tail
}

// A pubItem is one publication on its way, or the marker that fixes a new
// channel's epoch.
type pubItem struct {
	data   []byte
	meta   []byte         // nil for none; an item with meta is stored alone
	head   *live.Position // the position the channel must be at; nil for none
	key    string         // its idempotency key (live.PublishKey), "" for none; a keyed item is stored alone
	marker bool
	pos    live.Position
	err    error
	done   chan struct{}
}

// acquirePub returns channel's publishing state, counting the caller as a
// user until its item completes, so that it is not pruned meanwhile.
func (b *Broker) acquirePub(channel string) (*pubChan, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, live.ErrClosed
	}
	pc := b.pubs[channel]
	if pc == nil {
		if len(b.pubs) >= maxIdlePubs {
			for name, idle := range b.pubs {
				if idle.users == 0 {
					delete(b.pubs, name)
				}
			}
		}
		pc = &pubChan{channel: channel}
		b.pubs[channel] = pc
	}
	pc.users++
	return pc, nil
}

func (b *Broker) releasePub(pc *pubChan, n int) {
	b.mu.Lock()
	pc.users -= n
	b.mu.Unlock()
}

// queue publishes it on channel, as pc's sender if there is none, and
// waits for it, or for ctx.
func (b *Broker) queue(ctx context.Context, channel string, it *pubItem) (live.Position, error) {
	pc, err := b.acquirePub(channel)
	if err != nil {
		return live.Position{}, err
	}
	it.done = make(chan struct{})
	pc.mu.Lock()
	pc.waiting = append(pc.waiting, it)
	lead := !pc.sending
	pc.sending = true
	pc.mu.Unlock()
	if lead {
		b.lead(ctx, pc)
	}
	select {
	case <-it.done:
		return it.pos, it.err
	case <-ctx.Done():
		return live.Position{}, ctx.Err()
	}
}

// take takes up to maxBatch of the items waiting on pc, first come first;
// when none waits, it ends pc's sending and returns nil.
func (pc *pubChan) take() []*pubItem {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	n := min(len(pc.waiting), maxBatch)
	if n == 0 {
		pc.sending = false
		return nil
	}
	items := slices.Clone(pc.waiting[:n])
	rest := copy(pc.waiting, pc.waiting[n:])
	clear(pc.waiting[rest:])
	pc.waiting = pc.waiting[:rest]
	return items
}

// idle ends pc's sending and reports true if nothing waits.
func (pc *pubChan) idle() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.waiting) > 0 {
		return false
	}
	pc.sending = false
	return true
}

// lead is pc's sender on the goroutine of a caller that became it: it
// sends the first batch, which holds the caller's item, bounded by ctx if
// that item goes alone, and leaves what waits after it to a goroutine of
// the broker's (drain), so that the caller returns with its own.
func (b *Broker) lead(ctx context.Context, pc *pubChan) {
	items := pc.take()
	if len(items) > 1 {
		ctx = b.ctx
	}
	b.send(ctx, pc, items)
	if pc.idle() {
		return // uncontended: no goroutine
	}
	b.mu.Lock()
	closed := b.closed
	if !closed {
		b.senders.Add(1)
	}
	b.mu.Unlock()
	if closed {
		b.failWaiting(pc)
		return
	}
	go func() {
		defer b.senders.Done()
		b.drain(pc)
	}()
}

// drain is pc's sender until nothing waits.
func (b *Broker) drain(pc *pubChan) {
	for items := pc.take(); items != nil; items = pc.take() {
		b.send(b.ctx, pc, items)
	}
}

// failWaiting fails what waits on pc with live.ErrClosed, and ends its
// sending.
func (b *Broker) failWaiting(pc *pubChan) {
	pc.mu.Lock()
	items := pc.waiting
	pc.waiting, pc.sending = nil, false
	pc.mu.Unlock()
	for _, it := range items {
		it.err = live.ErrClosed
		close(it.done)
	}
	b.releasePub(pc, len(items))
}

// Publish implements [live.Broker]. It returns an error, never a false
// success, when JetStream does not acknowledge the publication. If ctx
// ends first, it returns ctx's error, and the publication may still be
// stored: publish it again under the same key ([live.WithPublishKey]) to
// be sure it is stored once.
//
// Under a key taken on the channel within [Options].KeyWindow it stores
// nothing and returns the position of the publication that took it. If
// the stream dropped that publication and the one after it meanwhile
// (HistorySize), the position is no longer known, and Publish returns an
// error matching [live.ErrGone], still storing nothing.
func (b *Broker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	return b.publishItem(ctx, channel, &pubItem{data: data})
}

// PublishIf implements [live.Conditional]. The publication goes in a
// message of its own, stored with Nats-Expected-Last-Subject-Sequence set
// to the stream sequence of the message that holds head, as every
// publication is: JetStream takes it only if no message of any process
// came after that one on the channel's subject.
func (b *Broker) PublishIf(ctx context.Context, channel string, head live.Position, data []byte) (live.Position, error) {
	return b.publishItem(ctx, channel, &pubItem{data: data, head: &head})
}

// publishItem queues it, a publication, on channel and waits for it.
func (b *Broker) publishItem(ctx context.Context, channel string, it *pubItem) (live.Position, error) {
	if err := ctx.Err(); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	if b.isClosed() {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, live.ErrClosed)
	}
	data, meta, err := live.CheckPublish(ctx, channel, it.data)
	if err != nil {
		return live.Position{}, err
	}
	it.data, it.meta, it.key = data, meta, live.PublishKey(ctx)
	pos, err := b.queue(ctx, channel, it)
	if err != nil && b.isClosed() && !errors.Is(err, live.ErrClosed) {
		err = fmt.Errorf("%w: %w", live.ErrClosed, err) // closed while waiting
	}
	if err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return pos, nil
}

// maxBatch bounds the publications stored as one message; maxBatchBytes
// bounds their data, well under the server's default payload limit of
// 1 MiB. A larger publication goes alone.
const (
	maxBatch      = 64
	maxBatchBytes = 256 << 10
)

// send stores items, in order, as few messages as it can (a marker, an
// item with meta, a conditional publication or a keyed one goes alone),
// and completes them. The caller is pc's sender.
func (b *Broker) send(ctx context.Context, pc *pubChan, items []*pubItem) {
	defer b.releasePub(pc, len(items))
	alone := func(it *pubItem) bool { return it.marker || it.meta != nil || it.head != nil || it.key != "" }
	for len(items) > 0 {
		n, size := 1, len(items[0].data)
		if !alone(items[0]) {
			for n < len(items) && !alone(items[n]) && size+len(items[n].data) <= maxBatchBytes {
				size += len(items[n].data)
				n++
			}
		}
		run := items[:n]
		items = items[n:]
		var pos live.Position
		var err error
		if run[0].marker {
			// Another node may have published since this one last did.
			pc.known = false
			pos, err = b.append(ctx, pc, nil, nil, nil, "")
		} else {
			datas := make([][]byte, len(run))
			for i, it := range run {
				datas[i] = it.data
			}
			pos, err = b.append(ctx, pc, datas, run[0].meta, run[0].head, run[0].key)
		}
		if err != nil && b.isClosed() {
			err = fmt.Errorf("%w: %w", live.ErrClosed, err)
		}
		first := pos.Seq + 1 - uint64(len(run))
		for i, it := range run {
			if err != nil {
				it.err = err
			} else if it.marker {
				it.pos = pos
			} else {
				it.pos = live.Position{Epoch: pos.Epoch, Seq: first + uint64(i)}
			}
			close(it.done)
		}
	}
}

// append stores datas, with meta if there is one only, as the channel's
// next message and returns the position of its last publication. No datas
// stores the marker that fixes a new channel's epoch (at Seq 0), unless
// the channel has a position already, which it then returns. With a head,
// it stores them only if the channel is at head, and otherwise returns an
// error matching live.ErrConflict. The caller is pc's sender.
//
// Several publications in one message carry the header Live-Count and
// their data framed as in pack.
//
// With a key, datas is one publication, stored with the header
// Nats-Msg-Id (see msgID): if the stream holds a message under that ID
// from within its duplicate window, JetStream stores nothing and answers
// with that message's stream sequence, and append returns the position of
// the publication there (see keyTaken). JetStream looks at the ID before
// the expected last sequence, so the key is honoured whatever the tail;
// with a head the channel is no longer at, append asks JetStream with an
// expected last sequence no message has, which stores nothing, so that a
// key taken answers with its position and a key not taken with a conflict.
func (b *Broker) append(ctx context.Context, pc *pubChan, datas [][]byte, meta []byte, head *live.Position, key string) (live.Position, error) {
	channel := pc.channel
	recreated := false
	for attempt := 1; ; attempt++ {
		probe := false // asking whether key is taken, storing nothing
		read := !pc.known
		if read {
			t, ok, err := b.last(ctx, channel)
			if err != nil {
				return live.Position{}, err
			}
			if !ok {
				// A new channel, or one whose messages are gone: a new
				// numbering.
				t = tail{pos: live.Position{Epoch: newEpoch()}}
			}
			if len(datas) == 0 && ok {
				return t.pos, nil // the channel has a position already
			}
			pc.tail, pc.known = t, true
		}
		if head != nil && pc.tail.pos != *head {
			if !read {
				// Another process may have published since this one
				// last did: read the tail.
				pc.known = false
				continue
			}
			if key == "" {
				return live.Position{}, fmt.Errorf("the channel is at %v, not %v: %w", pc.tail.pos, *head, live.ErrConflict)
			}
			probe = true
		}
		pos := live.Position{Epoch: pc.tail.pos.Epoch, Seq: pc.tail.pos.Seq + uint64(len(datas))}
		m := &nats.Msg{
			Subject: b.subject(channel),
			Header: nats.Header{
				hdrEpoch: {pos.Epoch},
				hdrSeq:   {strconv.FormatUint(pos.Seq, 10)},
				hdrPrev:  {strconv.FormatUint(pc.tail.sseq, 10)},
			},
		}
		switch len(datas) {
		case 0:
		case 1:
			m.Data = datas[0]
			if meta != nil {
				m.Header[hdrMeta] = []string{string(meta)}
			}
		default:
			m.Header[hdrCount] = []string{strconv.Itoa(len(datas))}
			m.Data = pack(datas)
		}
		expect := pc.tail.sseq
		if key != "" {
			m.Header[jetstream.MsgIDHeader] = []string{msgID(channel, key)}
			if probe {
				expect = noSequence
			}
		}
		ack, err := b.publish(ctx, m, expect)
		switch {
		case err == nil && ack.Duplicate && key != "":
			// Taken before, by this process or another: the tail is
			// unchanged.
			return b.keyTaken(ctx, channel, key, ack.Sequence)
		case err == nil && !probe:
			pc.tail = tail{pos: pos, sseq: ack.Sequence, prev: pc.tail.sseq, count: max(len(datas), 1)}
			return pos, nil
		case err == nil:
			pc.known = false // cannot be: nothing is at noSequence
			return live.Position{}, fmt.Errorf("stream sequence %d took a message expected after %d", ack.Sequence, expect)
		}
		pc.known = false
		var apiErr *jetstream.APIError
		switch {
		case probe && errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
			// The key is not taken, and the channel is not at head.
			return live.Position{}, fmt.Errorf("the channel is at %v, not %v: %w", pc.tail.pos, *head, live.ErrConflict)
		case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
			// Another publisher took the position: read the tail again.
			b.conflicts.Add(1)
			if attempt < maxAttempts {
				continue
			}
			return live.Position{}, fmt.Errorf("lost the race for a position %d times: %w", attempt, err)
		case streamGone(err) && !recreated:
			// The server lost the stream (a restart without its store,
			// or a deletion): make it again, in a new epoch.
			recreated = true
			b.forgetStream(ctx, nil)
			continue
		}
		return live.Position{}, err
	}
}

// noSequence is a stream sequence no message has: a publication expected
// after it is never stored.
const noSequence = math.MaxInt64

// msgID returns the Nats-Msg-Id of the publication under key on channel.
// JetStream deduplicates per stream, so it names the channel too; neither
// a channel nor a key holds a space.
func msgID(channel, key string) string { return channel + " " + key }

// keyTaken returns the position of the publication that took key on
// channel, held by the message at stream sequence seq, whose ID JetStream
// remembered. A keyed publication is stored alone, so it is the message's
// Live-Seq. If the stream no longer holds that message (dropped from
// history while its key was remembered), its position is read from the
// channel's next message, whose Live-Prev is seq; if that is gone too, the
// position is unknown, and keyTaken returns an error matching
// live.ErrGone, saying that the publication was taken.
func (b *Broker) keyTaken(ctx context.Context, channel, key string, seq uint64) (live.Position, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return live.Position{}, err
	}
	subject := b.subject(channel)
	raw, err := s.GetMsg(ctx, seq)
	if err == nil {
		if raw.Subject != subject || raw.Header.Get(jetstream.MsgIDHeader) != msgID(channel, key) {
			return live.Position{}, fmt.Errorf("key %q is taken by stream sequence %d, which holds another message", key, seq)
		}
		t, err := fromRaw(raw)
		if err != nil {
			return live.Position{}, err
		}
		return t.pos, nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return live.Position{}, err
	}
	raw, err = s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return live.Position{}, err
	}
	if err == nil {
		next, err := fromRaw(raw)
		if err != nil {
			return live.Position{}, err
		}
		if next.prev == seq {
			return live.Position{Epoch: next.pos.Epoch, Seq: next.first() - 1}, nil
		}
	}
	return live.Position{}, fmt.Errorf("taken under key %q at stream sequence %d, which the stream no longer holds, nor the message after it: position unknown: %w", key, seq, live.ErrGone)
}

// publish stores m if the subject's last message is at stream sequence
// expect. It fails as soon as the connection is found down, because the
// acknowledgement cannot arrive then.
func (b *Broker) publish(ctx context.Context, m *nats.Msg, expect uint64) (*jetstream.PubAck, error) {
	conn := b.connContext()
	if conn.Err() != nil {
		return nil, context.Cause(conn) // not sent
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(conn, func() { cancel(context.Cause(conn)) })
	defer stop()
	ack, err := b.js.PublishMsg(pctx, m,
		jetstream.WithExpectLastSequencePerSubject(expect),
		jetstream.WithRetryAttempts(0))
	if err != nil && ctx.Err() == nil && pctx.Err() != nil {
		return nil, fmt.Errorf("%w; the publication may have been stored", context.Cause(pctx))
	}
	return ack, err
}

// head returns the channel's latest position. A channel without messages
// gets a marker message at Seq 0 in a new epoch, so that its first
// publication is in the epoch returned.
func (b *Broker) head(ctx context.Context, channel string) (live.Position, error) {
	t, ok, err := b.last(ctx, channel)
	if err != nil || ok {
		return t.pos, err
	}
	return b.queue(ctx, channel, &pubItem{marker: true})
}

// Since implements [live.History]. It reads the channel's latest message
// and, for up to 64 publications, follows each message's Live-Prev back
// to the one before; for more, a short-lived consumer reads the channel's
// retained messages in batches. Either way it looks publications up by
// subject or sequence, never by scanning other channels.
func (b *Broker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("live: history %q: %w", channel, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("live: history %q: %w", channel, live.ErrClosed)
	}
	if err := live.ValidChannel(channel); err != nil {
		return nil, fmt.Errorf("live: history: %w", err)
	}
	msgs, err := b.since(ctx, channel, after)
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return msgs, nil
}

// tailAfter returns the channel's latest message and how many
// publications follow after; ErrGone when after is not a position of the
// channel's current numbering, or more than the channel keeps follow it.
func (b *Broker) tailAfter(ctx context.Context, channel string, after live.Position) (tail, uint64, error) {
	t, ok, err := b.last(ctx, channel)
	if err != nil {
		return tail{}, 0, err
	}
	if !ok || t.pos.Epoch != after.Epoch || after.Seq > t.pos.Seq {
		return tail{}, 0, live.ErrGone
	}
	n := t.pos.Seq - after.Seq
	if n > uint64(b.size) {
		return tail{}, 0, live.ErrGone // more than a channel keeps
	}
	return t, n, nil
}

func (b *Broker) since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	t, n, err := b.tailAfter(ctx, channel, after)
	if err != nil || n == 0 {
		return nil, err
	}
	var msgs []live.Message
	var first time.Time
	if n <= walkMax {
		msgs, first, err = b.walk(ctx, channel, t, int(n))
	} else {
		msgs, first, err = b.scan(ctx, channel, t, after.Seq+1)
	}
	if err != nil {
		return nil, err
	}
	if b.age > 0 && first.Before(time.Now().Add(-b.age)) {
		return nil, live.ErrGone // older than HistoryAge
	}
	return msgs, nil
}

// SincePage implements [live.PagedHistory]. Up to 64 publications from
// the head it reads as Since does. Further back it finds the stored
// message holding the page's first publication by a binary search over
// the stream's sequence numbers, each step one lookup of the channel's
// next message from a sequence number, then reads the channel's messages
// one at a time from there until the page is full: a page costs a few
// dozen lookups and its own publications, whatever lies before it.
func (b *Broker) SincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("live: history %q: %w", channel, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("live: history %q: %w", channel, live.ErrClosed)
	}
	if err := live.ValidChannel(channel); err != nil {
		return nil, fmt.Errorf("live: history: %w", err)
	}
	msgs, err := b.sincePage(ctx, channel, after, max(maxMessages, 1), maxBytes)
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return msgs, nil
}

func (b *Broker) sincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	t, n, err := b.tailAfter(ctx, channel, after)
	if err != nil || n == 0 {
		return nil, err
	}
	var page []live.Message
	size := 0
	// add appends msgs to the page while it has room, and reports
	// whether it is full.
	add := func(msgs []live.Message) bool {
		for _, m := range msgs {
			if len(page) > 0 && size+len(m.Data) > maxBytes {
				return true
			}
			page = append(page, m)
			size += len(m.Data)
			if len(page) >= maxMessages {
				return true
			}
		}
		return false
	}
	if n <= walkMax {
		msgs, first, err := b.walk(ctx, channel, t, int(n))
		if err != nil {
			return nil, err
		}
		if b.age > 0 && first.Before(time.Now().Add(-b.age)) {
			return nil, live.ErrGone
		}
		add(msgs)
		return page, nil
	}

	s, err := b.getStream(ctx)
	if err != nil {
		return nil, err
	}
	subject := b.subject(channel)
	// next returns the channel's first message at or after stream
	// sequence seq.
	next := func(seq uint64) (tail, error) {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return tail{}, live.ErrGone
		}
		if err != nil {
			return tail{}, err
		}
		return fromRaw(raw)
	}
	// Search for the first message holding publications after after:
	// next(hi) is always m, which does.
	lo, hi, m := uint64(1), t.sseq, t
	for lo < hi {
		mid := lo + (hi-lo)/2
		x, err := next(mid)
		if err != nil {
			return nil, err
		}
		if x.pos.Seq > after.Seq {
			hi, m = mid, x
		} else {
			lo = x.sseq + 1
		}
	}
	if m.pos.Epoch != t.pos.Epoch || m.first() > after.Seq+1 {
		return nil, live.ErrGone // dropped from the stream
	}
	if b.age > 0 && m.at.Before(time.Now().Add(-b.age)) {
		return nil, live.ErrGone // older than HistoryAge
	}
	for {
		msgs, err := m.messages(channel, after.Seq)
		if err != nil {
			return nil, err
		}
		if add(msgs) || m.pos.Seq >= t.pos.Seq {
			return page, nil
		}
		after = m.pos
		if m, err = next(m.sseq + 1); err != nil {
			if errors.Is(err, live.ErrGone) && len(page) > 0 {
				return page, nil // dropped meanwhile: the next page says so
			}
			return nil, err
		}
		if m.pos.Epoch != t.pos.Epoch || m.first() != after.Seq+1 {
			if len(page) > 0 {
				return page, nil
			}
			return nil, live.ErrGone
		}
	}
}

// walk returns the n publications up to t, reading messages back from t
// along Live-Prev, and the time of the message holding the first.
func (b *Broker) walk(ctx context.Context, channel string, t tail, n int) ([]live.Message, time.Time, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	after := t.pos.Seq - uint64(n)
	subject := b.subject(channel)
	var parts [][]live.Message // newest first
	for {
		msgs, err := t.messages(channel, after)
		if err != nil {
			return nil, time.Time{}, err
		}
		parts = append(parts, msgs)
		if t.first() <= after+1 {
			break
		}
		if t.prev == 0 {
			return nil, time.Time{}, live.ErrGone
		}
		raw, err := s.GetMsg(ctx, t.prev)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, time.Time{}, live.ErrGone // dropped from the stream
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		p, err := fromRaw(raw)
		if err != nil {
			return nil, time.Time{}, err
		}
		if raw.Subject != subject || p.pos.Epoch != t.pos.Epoch || p.pos.Seq+1 != t.first() {
			return nil, time.Time{}, live.ErrGone
		}
		t = p
	}
	all := make([]live.Message, 0, n)
	for i := len(parts) - 1; i >= 0; i-- {
		all = append(all, parts[i]...)
	}
	return all, t.at, nil
}

// scan returns the publications from Seq from up to t with a consumer
// that reads the channel's retained messages, and the time of the first.
func (b *Broker) scan(ctx context.Context, channel string, t tail, from uint64) ([]live.Message, time.Time, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     b.subject(channel),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute, // in case the deletion below fails
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.stall)
		s.DeleteConsumer(dctx, c.CachedInfo().Name)
		cancel()
	}()

	msgs := make([]live.Message, 0, t.pos.Seq-from+1)
	var first time.Time
	next := from
	for next <= t.pos.Seq {
		batch, err := c.FetchNoWait(256)
		if err != nil {
			return nil, time.Time{}, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, time.Time{}, err
			}
			if md.Sequence.Stream > t.sseq {
				continue // published after the head was read
			}
			p, err := parseStored(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				return nil, time.Time{}, err
			}
			if p.pos.Seq < next {
				continue // before from, or the marker
			}
			if p.first() > next || p.pos.Epoch != t.pos.Epoch {
				return nil, time.Time{}, live.ErrGone
			}
			if next == from {
				first = md.Timestamp
			}
			ms, err := p.messages(channel, next-1)
			if err != nil {
				return nil, time.Time{}, err
			}
			msgs = append(msgs, ms...)
			next = p.pos.Seq + 1
		}
		if err := batch.Error(); err != nil {
			return nil, time.Time{}, err
		}
		if got == 0 && next <= t.pos.Seq {
			return nil, time.Time{}, live.ErrGone // dropped while being read
		}
	}
	return msgs, first, nil
}
