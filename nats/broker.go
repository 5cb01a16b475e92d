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
// the channel's previous message (Live-Prev). The stream republishes every
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
	"errors"
	"fmt"
	"log/slog"
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
// Prefix, and should on HistorySize and HistoryAge.
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
	prefix string
	stall  time.Duration
	log    *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the watcher has returned

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
	_ live.Broker  = (*Broker)(nil)
	_ live.History = (*Broker)(nil)
)

const (
	defaultHistorySize = 1024
	defaultHistoryAge  = 10 * time.Minute
	defaultPrefix      = "live"
	defaultStall       = 5 * time.Second
	minChannelAge      = 24 * time.Hour

	// maxAttempts bounds how often Publish tries after losing the race for
	// a position to other processes; its context bounds it too. A process
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
	hdrSeq   = "Live-Seq"
	hdrPrev  = "Live-Prev"
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
	}
	if b.age > 0 {
		cfg.MaxAge = max(b.age, minChannelAge)
	}
	return cfg
}

// getStream returns the broker's stream, creating it if it does not exist.
// A stream that exists is used as it is, if it has the subjects and the
// republishing the broker needs, so operators may create it themselves
// (with replicas, say).
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

// A tail is the latest stored message of a channel.
type tail struct {
	pos  live.Position
	sseq uint64 // its stream sequence; 0 if the channel has no message
	prev uint64 // the stream sequence of the message before it; 0 for none
	data []byte
	at   time.Time
}

// newEpoch returns a random epoch: 12 characters of [a-z2-7], 60 bits.
func newEpoch() string {
	return strings.ToLower(rand.Text()[:12])
}

// parseStored reads the headers the broker writes on every message.
func parseStored(subject string, h nats.Header) (epoch string, seq, prev uint64, err error) {
	epoch = h.Get(hdrEpoch)
	seq, err1 := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	prev, err2 := strconv.ParseUint(h.Get(hdrPrev), 10, 64)
	if epoch == "" || err1 != nil || err2 != nil {
		return "", 0, 0, fmt.Errorf("message on %s without valid %s, %s and %s headers", subject, hdrEpoch, hdrSeq, hdrPrev)
	}
	return epoch, seq, prev, nil
}

func fromRaw(raw *jetstream.RawStreamMsg) (tail, error) {
	epoch, seq, prev, err := parseStored(raw.Subject, raw.Header)
	if err != nil {
		return tail{}, err
	}
	return tail{pos: live.Position{Epoch: epoch, Seq: seq}, sseq: raw.Sequence, prev: prev, data: raw.Data, at: raw.Time}, nil
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

// A pubChan is a channel's publishing state in this process: publications
// take turns, and each starts from the tail the previous one left, so a
// process publishing alone needs one round trip per publication.
type pubChan struct {
	turn  chan struct{} // holds a token while a publication runs
	users int           // guarded by Broker.mu

	// Guarded by holding the turn.
	known bool
	tail  tail
}

func (b *Broker) acquirePub(channel string) *pubChan {
	b.mu.Lock()
	defer b.mu.Unlock()
	pc := b.pubs[channel]
	if pc == nil {
		if len(b.pubs) >= maxIdlePubs {
			for name, idle := range b.pubs {
				if idle.users == 0 {
					delete(b.pubs, name)
				}
			}
		}
		pc = &pubChan{turn: make(chan struct{}, 1)}
		b.pubs[channel] = pc
	}
	pc.users++
	return pc
}

func (b *Broker) releasePub(pc *pubChan) {
	b.mu.Lock()
	pc.users--
	b.mu.Unlock()
}

// Publish implements [live.Broker]. It returns an error, never a false
// success, when JetStream does not acknowledge the publication.
func (b *Broker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	if err := ctx.Err(); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	if b.isClosed() {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, live.ErrClosed)
	}
	if err := live.ValidChannel(channel); err != nil {
		return live.Position{}, fmt.Errorf("live: publish: %w", err)
	}
	pc := b.acquirePub(channel)
	defer b.releasePub(pc)
	select {
	case pc.turn <- struct{}{}:
	case <-ctx.Done():
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, ctx.Err())
	}
	defer func() { <-pc.turn }()

	pos, err := b.append(ctx, pc, channel, data, 1)
	if err != nil && b.isClosed() {
		err = fmt.Errorf("%w: %w", live.ErrClosed, err) // closed while waiting
	}
	if err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return pos, nil
}

// append stores data as the channel's next message, step Seqs after the
// tail (1 for a publication, 0 for the marker that fixes a new channel's
// epoch), and returns its position. The caller holds pc's turn.
func (b *Broker) append(ctx context.Context, pc *pubChan, channel string, data []byte, step uint64) (live.Position, error) {
	recreated := false
	for attempt := 1; ; attempt++ {
		if !pc.known {
			t, ok, err := b.last(ctx, channel)
			if err != nil {
				return live.Position{}, err
			}
			if !ok {
				// A new channel, or one whose messages are gone: a new
				// numbering.
				t = tail{pos: live.Position{Epoch: newEpoch()}}
			}
			if step == 0 && ok {
				return t.pos, nil // the channel has a position already
			}
			pc.tail, pc.known = t, true
		}
		pos := live.Position{Epoch: pc.tail.pos.Epoch, Seq: pc.tail.pos.Seq + step}
		m := &nats.Msg{
			Subject: b.subject(channel),
			Header: nats.Header{
				hdrEpoch: {pos.Epoch},
				hdrSeq:   {strconv.FormatUint(pos.Seq, 10)},
				hdrPrev:  {strconv.FormatUint(pc.tail.sseq, 10)},
			},
			Data: data,
		}
		ack, err := b.publish(ctx, m, pc.tail.sseq)
		if err == nil {
			pc.tail = tail{pos: pos, sseq: ack.Sequence, prev: pc.tail.sseq}
			return pos, nil
		}
		pc.known = false
		var apiErr *jetstream.APIError
		switch {
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
	pc := b.acquirePub(channel)
	defer b.releasePub(pc)
	select {
	case pc.turn <- struct{}{}:
	case <-ctx.Done():
		return live.Position{}, ctx.Err()
	}
	defer func() { <-pc.turn }()
	pc.known = false
	return b.append(ctx, pc, channel, nil, 0)
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

func (b *Broker) since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	t, ok, err := b.last(ctx, channel)
	if err != nil {
		return nil, err
	}
	if !ok || t.pos.Epoch != after.Epoch || after.Seq > t.pos.Seq {
		return nil, live.ErrGone
	}
	n := t.pos.Seq - after.Seq
	if n == 0 {
		return nil, nil
	}
	if n > uint64(b.size) {
		return nil, live.ErrGone // more than a channel keeps
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

// walk returns the n publications up to t, reading them back from t along
// Live-Prev, and the time of the first.
func (b *Broker) walk(ctx context.Context, channel string, t tail, n int) ([]live.Message, time.Time, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	msgs := make([]live.Message, n)
	subject := b.subject(channel)
	for i := n - 1; ; i-- {
		msgs[i] = live.Message{Channel: channel, Pos: t.pos, Data: t.data}
		if i == 0 {
			return msgs, t.at, nil
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
		if raw.Subject != subject || p.pos.Epoch != t.pos.Epoch || p.pos.Seq+1 != t.pos.Seq {
			return nil, time.Time{}, live.ErrGone
		}
		t = p
	}
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
			epoch, seq, _, err := parseStored(m.Subject(), m.Headers())
			if err != nil {
				return nil, time.Time{}, err
			}
			if seq < next {
				continue // before from, or the marker
			}
			if seq != next || epoch != t.pos.Epoch {
				return nil, time.Time{}, live.ErrGone
			}
			if seq == from {
				first = md.Timestamp
			}
			msgs = append(msgs, live.Message{Channel: channel, Pos: live.Position{Epoch: epoch, Seq: seq}, Data: m.Data()})
			next++
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
