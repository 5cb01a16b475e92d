package live

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live/internal/follow"
)

// MemoryOptions configures [NewMemoryBroker]. The zero value, or nil,
// means the defaults documented on each field.
type MemoryOptions struct {
	// HistorySize is how many recent publications each channel keeps for
	// resuming clients. Default 1024; negative keeps none.
	HistorySize int

	// HistoryAge drops publications older than this from history.
	// Default 10 minutes; negative keeps them until HistorySize pushes
	// them out.
	HistoryAge time.Duration
}

// MemoryBroker is a [Broker] with [History] and [Conditional] for a
// single process. It is the Hub's default. Publish delivers synchronously
// to every subscriber of the channel, in order, so it costs one deliver
// call per subscribing Hub.
//
// A channel that has no subscriber and no retained history is forgotten:
// at once when its last subscriber leaves, otherwise by a sweep every
// 1024 publications, which looks at up to 256 channels without a
// subscriber (so that its cost does not grow with the channels followed). A channel forgotten after publications starts a new
// epoch when it is used again, so old cursors reset instead of resuming
// into the wrong numbering; one that never had a publication keeps its
// epoch, so a client that comes back to it resumes without a reset
// (unless another channel's numbering was forgotten meanwhile).
type MemoryBroker struct {
	size  int
	age   time.Duration
	epoch string // random per broker; a channel's epoch adds its generation

	sweepIn atomic.Int32 // publications until the next sweep

	mu       sync.RWMutex // guards channels, gen, closed, idle and the memChannels' listed; taken before a memChannel's
	channels map[string]*memChannel
	gen      uint64 // new channels' epoch suffix; it moves on when a numbering is forgotten
	closed   bool
	// idle are the channels that had no subscriber when last looked at,
	// in the order the sweep looks at them again; each is there once, with
	// listed set.
	idle  []idleChannel
	stale int // entries of idle whose channel was forgotten outside a sweep
}

var (
	_ Broker       = (*MemoryBroker)(nil)
	_ History      = (*MemoryBroker)(nil)
	_ PagedHistory = (*MemoryBroker)(nil)
	_ Snapshots    = (*MemoryBroker)(nil)
	_ Conditional  = (*MemoryBroker)(nil)
	_ Follower     = (*MemoryBroker)(nil)
)

type memChannel struct {
	listed bool // in the broker's idle list; guarded by the broker's mu

	mu    sync.Mutex // guards everything below
	dead  bool       // removed from the broker's map; callers look it up again
	epoch string
	seq   uint64
	ring  []memEntry // history, oldest at ring[start]
	start int
	n     int
	keys  map[string]uint64 // the idempotency keys of publications in ring, and their Seq
	subs  []*memSub
	snap  *Message // the latest snapshot, or nil
}

// idleChannel is a channel in the broker's idle list.
type idleChannel struct {
	name string
	c    *memChannel
}

type memEntry struct {
	msg Message
	key string // its idempotency key, "" for none
	at  time.Time
}

type memSub struct {
	deliver func(Message)
	ended   func(error)
}

// sweepEvery is how many publications pass between scans for forgotten
// channels, which keeps the scan's cost per publication small.
const sweepEvery = 1024

// NewMemoryBroker returns an in-memory broker.
func NewMemoryBroker(opts *MemoryOptions) *MemoryBroker {
	var o MemoryOptions
	if opts != nil {
		o = *opts
	}
	if o.HistorySize == 0 {
		o.HistorySize = 1024
	}
	if o.HistorySize < 0 {
		o.HistorySize = 0
	}
	if o.HistoryAge == 0 {
		o.HistoryAge = 10 * time.Minute
	}
	b := &MemoryBroker{
		size:     o.HistorySize,
		age:      o.HistoryAge,
		epoch:    randomEpoch(),
		channels: make(map[string]*memChannel),
	}
	b.sweepIn.Store(sweepEvery)
	return b
}

// randomEpoch returns 6 random characters of the epoch alphabet.
func randomEpoch() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [6]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// channel returns the live record for name, creating it when create is set.
// The record is returned locked.
func (b *MemoryBroker) channel(name string, create bool) (*memChannel, error) {
	for {
		b.mu.RLock()
		closed, c := b.closed, b.channels[name]
		b.mu.RUnlock()
		if closed {
			return nil, ErrClosed
		}
		if c == nil {
			if !create {
				return nil, nil
			}
			b.mu.Lock()
			if b.closed {
				b.mu.Unlock()
				return nil, ErrClosed
			}
			if c = b.channels[name]; c == nil {
				// The ring grows with the first publications: a channel
				// that is followed but quiet costs its record alone.
				c = &memChannel{epoch: b.epoch + strconv.FormatUint(b.gen, 36), listed: true}
				b.channels[name] = c
				b.idle = append(b.idle, idleChannel{name, c})
			}
			b.mu.Unlock()
		}
		c.mu.Lock()
		if !c.dead {
			return c, nil
		}
		c.mu.Unlock()
	}
}

// Publish implements [Broker].
func (b *MemoryBroker) Publish(ctx context.Context, channel string, data []byte) (Position, error) {
	return b.publish(ctx, channel, nil, data)
}

// PublishIf implements [Conditional]: the head is compared under the
// channel's lock, which every publication on it takes.
func (b *MemoryBroker) PublishIf(ctx context.Context, channel string, head Position, data []byte) (Position, error) {
	return b.publish(ctx, channel, &head, data)
}

// publish appends data to channel, if its head is *head when head is not
// nil.
func (b *MemoryBroker) publish(ctx context.Context, channel string, head *Position, data []byte) (Position, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	data, meta, err := CheckPublish(ctx, channel, data)
	if err != nil {
		return Position{}, err
	}
	c, err := b.channel(channel, true)
	if err != nil {
		return Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	key := PublishKey(ctx)
	if seq, ok := c.keys[key]; ok { // "" is never a key there
		c.mu.Unlock()
		return Position{c.epoch, seq}, nil // taken already
	}
	if head != nil && (Position{c.epoch, c.seq}) != *head {
		at := Position{c.epoch, c.seq}
		c.mu.Unlock()
		return Position{}, fmt.Errorf("live: publish %q: head at %v, not %v: %w", channel, at, *head, ErrConflict)
	}
	c.seq++
	m := Message{Channel: channel, Pos: Position{c.epoch, c.seq}, Data: data, Meta: meta}
	b.appendLocked(c, m, key)
	for _, s := range c.subs {
		s.deliver(m)
	}
	c.mu.Unlock()

	if b.sweepIn.Add(-1) <= 0 {
		b.sweepIn.Store(sweepEvery)
		b.sweep()
	}
	return m.Pos, nil
}

func (b *MemoryBroker) appendLocked(c *memChannel, m Message, key string) {
	if b.size == 0 {
		return
	}
	now := time.Now()
	b.expireLocked(c, now)
	e := memEntry{msg: m, key: key, at: now}
	if key != "" {
		if c.keys == nil {
			c.keys = make(map[string]uint64)
		}
		c.keys[key] = m.Pos.Seq
	}
	switch {
	case c.n < len(c.ring): // free slot after expiry
		c.ring[(c.start+c.n)%len(c.ring)] = e
		c.n++
	case len(c.ring) < b.size: // grow, keeping oldest first
		if c.start != 0 {
			grown := make([]memEntry, 0, min(2*len(c.ring), b.size))
			grown = append(grown, c.ring[c.start:]...)
			c.ring = append(grown, c.ring[:c.start]...)
			c.start = 0
		}
		c.ring = append(c.ring, e)
		c.n++
	default: // full: overwrite the oldest
		c.forgetLocked(c.ring[c.start])
		c.ring[c.start] = e
		c.start = (c.start + 1) % len(c.ring)
	}
}

// forgetLocked forgets the idempotency key of e, which leaves history.
func (c *memChannel) forgetLocked(e memEntry) {
	if e.key != "" {
		delete(c.keys, e.key)
	}
}

// expireLocked drops entries older than the broker's age limit.
func (b *MemoryBroker) expireLocked(c *memChannel, now time.Time) {
	if b.age < 0 {
		return
	}
	for c.n > 0 && now.Sub(c.ring[c.start].at) > b.age {
		c.forgetLocked(c.ring[c.start])
		c.ring[c.start] = memEntry{}
		c.start = (c.start + 1) % len(c.ring)
		c.n--
	}
}

// Subscribe implements [Broker].
func (b *MemoryBroker) Subscribe(ctx context.Context, channel string, ready func(Position), deliver func(Message)) error {
	start := func(ready func(Position), deliver func(Message), ended func(error)) (func(), error) {
		return b.Follow(channel, ready, deliver, ended)
	}
	if err := follow.Subscribe(ctx, start, ready, deliver); err != nil {
		if errors.Is(err, ErrClosed) && ctx.Err() == nil {
			return fmt.Errorf("live: subscribe %q: %w", channel, ErrClosed)
		}
		return err
	}
	return nil
}

// Follow implements [Follower]. It calls ready before it returns, and
// deliver from Publish.
func (b *MemoryBroker) Follow(channel string, ready func(Position), deliver func(Message), ended func(error)) (func(), error) {
	c, err := b.channel(channel, true)
	if err != nil {
		return nil, fmt.Errorf("live: follow %q: %w", channel, err)
	}
	s := &memSub{deliver: deliver, ended: ended}
	c.subs = append(c.subs, s)
	ready(Position{c.epoch, c.seq})
	c.mu.Unlock()
	return func() { b.unfollow(channel, c, s) }, nil
}

// unfollow removes s from c, the record of channel, and forgets the
// record if it is left idle.
func (b *MemoryBroker) unfollow(channel string, c *memChannel, s *memSub) {
	c.mu.Lock()
	found := false
	for i, x := range c.subs {
		if x == s {
			last := len(c.subs) - 1
			c.subs[i] = c.subs[last]
			c.subs[last] = nil
			c.subs = c.subs[:last]
			found = true
			break
		}
	}
	idle := found && len(c.subs) == 0
	c.mu.Unlock()
	if idle {
		b.mu.Lock()
		if b.channels[channel] == c && b.forgetLocked(channel, c, time.Now()) && !c.listed {
			c.listed = true
			b.idle = append(b.idle, idleChannel{channel, c})
		}
		b.mu.Unlock()
	}
}

// Since implements [History].
func (b *MemoryBroker) Since(ctx context.Context, channel string, after Position) ([]Message, error) {
	return b.since(ctx, channel, after, 0, 0)
}

// SincePage implements [PagedHistory].
func (b *MemoryBroker) SincePage(ctx context.Context, channel string, after Position, maxMessages, maxBytes int) ([]Message, error) {
	return b.since(ctx, channel, after, max(maxMessages, 1), maxBytes)
}

// since returns the publications after after: all of them when
// maxMessages is 0, otherwise a page bounded by maxMessages and maxBytes.
func (b *MemoryBroker) since(ctx context.Context, channel string, after Position, maxMessages, maxBytes int) ([]Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("live: history %q: %w", channel, err)
	}
	c, err := b.channel(channel, false)
	if err != nil {
		return nil, fmt.Errorf("live: history %q: %w", channel, err)
	}
	if c == nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, ErrGone)
	}
	defer c.mu.Unlock()
	if after.Epoch != c.epoch || after.Seq > c.seq {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, ErrGone)
	}
	if after.Seq == c.seq {
		return nil, nil
	}
	b.expireLocked(c, time.Now())
	oldest := c.seq - uint64(c.n) + 1 // Seq of ring[start] when n > 0
	if c.n == 0 || after.Seq+1 < oldest {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, ErrGone)
	}
	skip := int(after.Seq + 1 - oldest)
	n := c.n - skip
	if maxMessages > 0 {
		n = min(n, maxMessages)
	}
	out := make([]Message, 0, n)
	size := 0
	for i := skip; len(out) < n; i++ {
		m := c.ring[(c.start+i)%len(c.ring)].msg
		if size += len(m.Data); maxMessages > 0 && len(out) > 0 && size > maxBytes {
			break
		}
		out = append(out, m)
	}
	return out, nil
}

// SaveSnapshot implements [Snapshots]. A snapshot lives as long as the
// channel's record: a forgotten channel's next life has another epoch.
func (b *MemoryBroker) SaveSnapshot(ctx context.Context, channel string, pos Position, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	c, err := b.channel(channel, false)
	if err != nil {
		return fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	if c == nil {
		return nil // nothing of pos's numbering is left to come back to
	}
	defer c.mu.Unlock()
	if pos.Epoch == c.epoch && (c.snap == nil || c.snap.Pos.Epoch != pos.Epoch || c.snap.Pos.Seq < pos.Seq) {
		c.snap = &Message{Channel: channel, Pos: pos, Data: append([]byte(nil), data...)}
	}
	return nil
}

// Snapshot implements [Snapshots].
func (b *MemoryBroker) Snapshot(ctx context.Context, channel string) (Position, []byte, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	c, err := b.channel(channel, false)
	if err != nil {
		return Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	if c == nil {
		return Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, ErrGone)
	}
	defer c.mu.Unlock()
	if c.snap == nil || c.snap.Pos.Epoch != c.epoch {
		return Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, ErrGone)
	}
	return c.snap.Pos, c.snap.Data, nil
}

// sweep forgets channels that have neither subscribers nor history, of up
// to sweepBatch of those that had no subscriber when last looked at.
func (b *MemoryBroker) sweep() {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.idle), sweepBatch)
	var again []idleChannel
	for _, e := range b.idle[:n] {
		if !e.c.listed || b.channels[e.name] != e.c {
			b.stale = max(b.stale-1, 0)
			continue // forgotten since
		}
		e.c.listed = false
		if b.forgetLocked(e.name, e.c, now) {
			e.c.listed = true
			again = append(again, e)
		}
	}
	clear(b.idle[:n])
	b.idle = append(b.idle[n:], again...)
}

// compactLocked drops the entries of forgotten channels from the idle
// list. b.mu is held.
func (b *MemoryBroker) compactLocked() {
	kept := b.idle[:0]
	for _, e := range b.idle {
		if e.c.listed && b.channels[e.name] == e.c {
			kept = append(kept, e)
		}
	}
	clear(b.idle[len(kept):])
	b.idle, b.stale = kept, 0
}

// sweepBatch is how many channels a sweep looks at.
const sweepBatch = 256

// forgetLocked forgets c, the record of channel name, if it has neither
// subscribers nor history left at now, and reports whether it is kept
// without a subscriber, its history not yet expired. b.mu is held.
func (b *MemoryBroker) forgetLocked(name string, c *memChannel, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	b.expireLocked(c, now)
	if len(c.subs) > 0 {
		return false
	}
	if c.n > 0 {
		return true
	}
	c.dead = true
	delete(b.channels, name)
	if c.listed {
		c.listed = false
		if b.stale++; b.stale > 64 && 2*b.stale > len(b.idle) {
			b.compactLocked()
		}
	}
	if c.seq > 0 && c.epoch == b.epoch+strconv.FormatUint(b.gen, 36) {
		b.gen++ // a numbering is lost: the channel's next life needs another epoch
	}
	return false
}

// Close ends every subscription with ErrClosed and makes later calls fail
// with ErrClosed. It is safe to call more than once.
func (b *MemoryBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for _, c := range b.channels {
		c.mu.Lock()
		subs := c.subs
		c.subs = nil
		for _, s := range subs {
			s.ended(ErrClosed)
		}
		c.mu.Unlock()
	}
	return nil
}
