package live

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The outbox keeps the publications that were promised but that the
// broker did not take: a Hub.Hook event whose request was answered 2xx
// while the broker was unreachable. It retries them in order per channel
// once the broker answers again, and a later publication on such a channel
// (Hub.Publish too) waits behind them, so subscribers see them in the
// order they were made. It is bounded by Options.PendingBytes and
// Options.PendingAge; what passes a bound is dropped, counted
// (Stats.PendingDropped) and logged as an error, never quietly. Each goes
// under an idempotency key (PublishKey), the same on every attempt, so
// that sending it again after an attempt whose outcome is unknown (a
// timeout after the broker took it) does not deliver it twice.

// errPendingFull refuses a publication when the outbox is full.
var errPendingFull = errors.New("live: publications waiting for the broker exceed Options.PendingBytes")

// errPendingExpired ends a publication that waited for the broker longer
// than Options.PendingAge.
var errPendingExpired = errors.New("live: publication waited for the broker longer than Options.PendingAge")

// A pending publication waits in the outbox.
type pending struct {
	channel   string
	ticket    uint64 // its place among the channel's promised publications
	key       string // its idempotency key, the same on every attempt (PublishKey)
	data      []byte
	meta      []byte // the hub's meta (see withMeta), sent beside data
	at        time.Time
	sending   bool // the retrier has it on its way; guarded by outbox.mu
	abandoned bool // its waiter left while it was on its way; guarded by outbox.mu

	// turn, when not nil, is closed when p, in its channel's line, may
	// make its first attempt, or was queued instead (lineErr says whether
	// the queue took it); lineErr is guarded by outbox.mu.
	turn    chan struct{}
	lineErr error

	// done is closed when the publication is taken (pos) or given up
	// (err); nil when nobody waits.
	done chan struct{}
	pos  Position
	err  error
}

type outbox struct {
	h *Hub

	mu    sync.Mutex // guards chans, bytes, keys and what they hold
	chans map[string]*outChan
	bytes int
	keys  uint64 // publications keyed so far

	keyPrefix string // random: keys of this hub's are no other's

	wake chan struct{} // tells the retrier that something changed
}

// An outChan is the outbox of one channel. Promised publications take
// tickets in the order they are made, and reach the broker in that order:
// while nothing waits in q, they make their first attempts one at a time,
// in line (the first is on its way, the others wait for their turn), so
// that a later one cannot be taken before an earlier one that fails. Those
// the broker did not take wait in q in ticket order, with whatever was in
// line behind them, and the first is sent again once the line is empty.
type outChan struct {
	q      []*pending
	ticket uint64     // the next ticket
	line   []*pending // first attempts: line[0] under way, the others waiting for their turn
}

func (o *outbox) init(h *Hub) {
	o.h = h
	o.chans = make(map[string]*outChan)
	o.keyPrefix = newConnKey()
	o.wake = make(chan struct{}, 1)
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// chanLocked returns channel's outbox, making it if need be.
func (o *outbox) chanLocked(channel string) *outChan {
	oc := o.chans[channel]
	if oc == nil {
		oc = &outChan{}
		o.chans[channel] = oc
	}
	return oc
}

// tidyLocked forgets channel's outbox once nothing is in it.
func (o *outbox) tidyLocked(channel string, oc *outChan) {
	if len(oc.q) == 0 && len(oc.line) == 0 {
		delete(o.chans, channel)
	}
}

// waiting reports whether publications on channel wait in the outbox.
// Every publication asks, so an empty outbox answers without its lock
// (Stats.Pending counts what the queues hold, under that lock).
func (o *outbox) waiting(channel string) bool {
	if o.h.stats.pending.Load() == 0 {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	oc := o.chans[channel]
	return oc != nil && len(oc.q) > 0
}

// newPendingLocked makes a publication of channel's, with the next ticket,
// under key or, if key is "", one of its own, so that sending it again
// after an attempt whose outcome is unknown never publishes it twice.
func (o *outbox) newPendingLocked(oc *outChan, channel, key string, data, meta []byte) *pending {
	if key == "" {
		o.keys++
		key = o.keyPrefix + "." + strconv.FormatUint(o.keys, 36)
	}
	p := &pending{channel: channel, key: key, data: data, meta: meta, at: time.Now(), ticket: oc.ticket}
	oc.ticket++
	return p
}

// keep queues data for channel, under key ("" for one of the outbox's),
// for a caller that waits until it is done, or refuses it when the outbox
// is full.
func (o *outbox) keep(channel, key string, data, meta []byte) (*pending, error) {
	o.mu.Lock()
	oc := o.chanLocked(channel)
	p := o.newPendingLocked(oc, channel, key, data, meta)
	p.done = make(chan struct{})
	err := o.queueLocked(oc, p)
	o.tidyLocked(channel, oc)
	o.mu.Unlock()
	if err != nil {
		return nil, err
	}
	o.signal()
	return p, nil
}

// queueLocked puts p in its channel's queue, in ticket order, or refuses
// it when the outbox is full.
func (o *outbox) queueLocked(oc *outChan, p *pending) error {
	if o.bytes+p.size() > o.h.opts.PendingBytes {
		return errPendingFull
	}
	i := len(oc.q)
	for i > 0 && oc.q[i-1].ticket > p.ticket && !oc.q[i-1].sending {
		i--
	}
	oc.q = append(oc.q, nil)
	copy(oc.q[i+1:], oc.q[i:])
	oc.q[i] = p
	o.bytes += p.size()
	o.h.stats.pending.Add(1)
	return nil
}

// fly puts a promised publication on channel in line for its first
// attempt, unless publications wait there already, in which case it is
// queued behind them (queued is then true, or err says why it could not
// be). If p.turn is not nil, p must await its turn.
func (o *outbox) fly(channel, key string, data, meta []byte) (p *pending, queued bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	oc := o.chanLocked(channel)
	p = o.newPendingLocked(oc, channel, key, data, meta)
	if len(oc.q) > 0 {
		err = o.queueLocked(oc, p)
		o.tidyLocked(channel, oc)
		return p, err == nil, err
	}
	if len(oc.line) > 0 {
		p.turn = make(chan struct{})
	}
	oc.line = append(oc.line, p)
	return p, false, nil
}

// await waits until p, in line, may make its first attempt (ok), or until
// ctx ends or the hub closes, which queue it. If p was queued, await
// returns an error only if the queue refused it.
func (o *outbox) await(ctx context.Context, p *pending) (ok bool, err error) {
	select {
	case <-p.turn:
	case <-ctx.Done():
	case <-o.h.done:
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	oc := o.chans[p.channel]
	if oc == nil {
		return false, p.lineErr
	}
	switch i := slices.Index(oc.line, p); {
	case i == 0:
		return true, nil
	case i > 0:
		oc.line = slices.Delete(oc.line, i, i+1)
		err := o.queueLocked(oc, p)
		o.tidyLocked(p.channel, oc)
		o.signal()
		return false, err
	}
	return false, p.lineErr
}

// landed ends p's first attempt: taken (err nil), or queued to be sent
// again, or refused by a full outbox. The next in line gets its turn, or,
// if p failed, is queued behind it.
func (o *outbox) landed(p *pending, err error) error {
	o.mu.Lock()
	oc := o.chans[p.channel]
	if i := slices.Index(oc.line, p); i >= 0 {
		oc.line = slices.Delete(oc.line, i, i+1)
	}
	if err != nil {
		err = o.queueLocked(oc, p)
		for _, w := range oc.line {
			w.lineErr = o.queueLocked(oc, w)
			close(w.turn)
		}
		oc.line = nil
	} else if len(oc.line) > 0 {
		close(oc.line[0].turn)
	}
	o.tidyLocked(p.channel, oc)
	o.mu.Unlock()
	o.signal() // the queue may move now
	return err
}

// withdraw takes p out of the outbox if it is not on its way, and
// reports whether it did; one on its way is finished by its attempt,
// whatever the outcome.
func (o *outbox) withdraw(p *pending) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	oc := o.chans[p.channel]
	if oc == nil {
		return false // finished already
	}
	for i, x := range oc.q {
		if x == p {
			if x.sending {
				x.abandoned = true
				return false
			}
			o.removeLocked(p.channel, oc, i)
			return true
		}
	}
	return false // finished already
}

// removeLocked removes the i-th publication of channel's queue.
func (o *outbox) removeLocked(channel string, oc *outChan, i int) {
	p := oc.q[i]
	oc.q = append(oc.q[:i], oc.q[i+1:]...)
	o.bytes -= p.size()
	o.h.stats.pending.Add(-1)
	o.tidyLocked(channel, oc)
}

// next returns the first publication of channel's queue, marked as on its
// way, or nil; those that waited longer than PendingAge are given up.
func (o *outbox) next(channel string, now time.Time) (p *pending, expired []*pending) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		oc := o.chans[channel]
		if oc == nil || len(oc.q) == 0 {
			return nil, expired
		}
		first := oc.q[0]
		if now.Sub(first.at) > o.h.opts.PendingAge {
			if !first.sending {
				expired = append(expired, first)
				o.removeLocked(channel, oc, 0)
				continue
			}
		}
		if first.sending {
			return nil, expired // another flush has it on its way
		}
		if len(oc.line) > 0 {
			return nil, expired // earlier ones are on their first attempts: they go first
		}
		first.sending = true
		return first, expired
	}
}

// settle records the outcome of p's attempt: taken at pos, or left for
// the next attempt.
func (o *outbox) settle(p *pending, pos Position, err error) {
	o.mu.Lock()
	p.sending = false
	done := err == nil || p.abandoned
	if done {
		oc := o.chans[p.channel]
		o.removeLocked(p.channel, oc, slices.Index(oc.q, p))
	}
	o.mu.Unlock()
	if done {
		p.finish(pos, err)
	}
}

// size is what p counts against Options.PendingBytes.
func (p *pending) size() int { return len(p.data) + len(p.meta) }

func (p *pending) finish(pos Position, err error) {
	p.pos, p.err = pos, err
	if p.done != nil {
		close(p.done)
	}
}

// channels returns the channels with publications waiting.
func (o *outbox) channels() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	names := make([]string, 0, len(o.chans))
	for name := range o.chans {
		names = append(names, name)
	}
	return names
}

// run retries the outbox for the hub's lifetime: when something is queued,
// when any subscription of the hub's finds the broker back, and with
// backoff while attempts fail.
func (o *outbox) run() error {
	h := o.h
	const minDelay, maxDelay = 100 * time.Millisecond, 2 * time.Second
	delay := minDelay
	for {
		select {
		case <-h.done:
			return nil
		case <-o.wake:
		}
		for !o.flush(h.ctx) {
			if !h.backoff(h.ctx, delay) {
				return nil
			}
			delay = min(2*delay, maxDelay)
		}
		delay = minDelay
	}
}

// flush sends what waits, in order per channel, and reports whether the
// outbox is empty.
func (o *outbox) flush(ctx context.Context) bool {
	h := o.h
	empty := true
	for _, channel := range o.channels() {
		for {
			p, expired := o.next(channel, time.Now())
			o.expire(expired)
			if p == nil {
				break
			}
			actx, cancel := context.WithTimeout(ctx, h.opts.WriteTimeout)
			pos, err := h.broker.Publish(WithPublishKey(withHubMeta(actx, p.meta), p.key), channel, p.data)
			cancel()
			err = takenBefore(err)
			o.settle(p, pos, err)
			if err != nil {
				h.stats.brokerErrors.Add(1)
				empty = false
				break // this channel's next waits for this one
			}
			h.stats.published.Add(1)
		}
	}
	return empty
}

// takenBefore reads a broker's answer to a keyed publication: ErrGone
// says the broker took the key before, at a position it no longer knows
// (the publication left its history), which is done, not failed.
func takenBefore(err error) error {
	if errors.Is(err, ErrGone) {
		return nil
	}
	return err
}

// expire gives up publications that waited too long, loudly.
func (o *outbox) expire(ps []*pending) {
	for _, p := range ps {
		o.h.stats.pendingDropped.Add(1)
		o.h.opts.Logger.Error("live: publication dropped: the broker did not take it within Options.PendingAge; subscribers missed a change",
			"channel", p.channel, "waited", time.Since(p.at).Round(time.Millisecond))
		p.finish(Position{}, errPendingExpired)
	}
}

// promise publishes data on channel for a caller that cannot wait to hear
// whether the broker took it (a Hook whose response is sent): if the
// broker does not take it now, or publications on channel wait already,
// it waits in the outbox. It returns an error only when the publication is
// given up: it is too large, the outbox is full or the hub closed.
func (h *Hub) promise(ctx context.Context, channel string, data []byte) (err error) {
	ctx, meta, err := h.prepare(ctx, channel, data)
	if err != nil {
		return err
	}
	if h.obs.Inject != nil {
		defer func() { h.traced(ctx, err) }() // nil once taken or queued
	}
	p, queued, err := h.outbox.fly(channel, PublishKey(ctx), data, meta)
	if queued {
		return nil
	}
	if err == nil && p.turn != nil {
		var ok bool
		if ok, err = h.outbox.await(ctx, p); !ok && err == nil {
			return nil // queued while it waited for its turn
		}
	}
	if err == nil {
		var start int64
		if h.obs.Published != nil {
			start = nanotime()
		}
		_, err = h.broker.Publish(WithPublishKey(ctx, p.key), channel, data)
		if h.obs.Published != nil {
			h.observePublish(channel, start, err)
		}
		err = takenBefore(err)
		if err == nil {
			h.stats.published.Add(1)
		} else {
			h.stats.brokerErrors.Add(1)
			h.opts.Logger.Warn("live: broker did not take a publication; it waits to be sent again", "channel", channel, "err", err)
		}
		err = h.outbox.landed(p, err)
	}
	if err != nil {
		h.stats.pendingDropped.Add(1)
	}
	return err
}

// publishBehind publishes data on channel after the publications that wait
// in the outbox for it, waiting until the broker takes it or ctx ends. A
// publication still queued when ctx ends is withdrawn.
func (h *Hub) publishBehind(ctx context.Context, channel string, data, meta []byte) (Position, error) {
	p, err := h.outbox.keep(channel, PublishKey(ctx), data, meta)
	if err != nil {
		h.stats.pendingDropped.Add(1)
		return Position{}, err
	}
	select {
	case <-p.done:
		return p.pos, p.err
	case <-ctx.Done():
	case <-h.done:
	}
	if h.outbox.withdraw(p) {
		if err := ctx.Err(); err != nil {
			return Position{}, fmt.Errorf("waiting behind publications the broker has not taken yet: %w", err)
		}
		return Position{}, ErrClosed
	}
	// On its way, or just finished: the attempt is bounded by
	// WriteTimeout.
	<-p.done
	return p.pos, p.err
}

// close tries once more to send what waits before the hub closes, within
// ctx, and logs what it could not send.
func (o *outbox) close(ctx context.Context) {
	if len(o.channels()) == 0 {
		return
	}
	o.flush(ctx)
	o.mu.Lock()
	n := 0
	for _, oc := range o.chans {
		n += len(oc.q)
	}
	o.mu.Unlock()
	if n > 0 {
		o.h.stats.pendingDropped.Add(int64(n))
		o.h.opts.Logger.Error("live: hub closed with publications the broker never took; subscribers missed them", "publications", n)
	}
}
