package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live/internal/follow"
)

// A hubChannel is the Hub's side of one channel: a single broker
// subscription shared by every local subscriber, and the position it has
// fanned out up to. Publications arrive from the broker in order; the
// channel checks that their positions are contiguous, fills holes from
// history, and resets its subscribers when a hole cannot be filled, so a
// client never skips a publication without being told.
type hubChannel struct {
	h      *Hub
	name   string
	quoted []byte // name as a JSON string
	// conf is what the application's Options say of this channel, nil
	// when they say nothing.
	conf *channelConf
	refs int          // guarded by h.mu: local subscribers plus those joining
	pubs atomic.Int64 // publications fanned out, for the inspector

	// kind is what the channel is (kind.go): plain or a list from its
	// creation, a State once one is made on it. Changed under mu.
	kind atomic.Pointer[kind]

	mu sync.Mutex // guards the fields below
	// ready is closed, and forgotten, when the first follow is active or
	// has failed (err says why); made only for those who wait for it.
	ready   chan struct{}
	err     error
	subs    []*subscription
	last    Position // newest publication fanned out
	readies int      // broker subscriptions that became active
	// The follow of the broker's: attempt counts the follows started, stop
	// ends the current one (nil when none is running), and released is set
	// when the last subscriber left.
	attempt  int
	stop     func()
	started  bool // the broker called ready at least once
	down     bool // the broker subscription broke and is not active again yet
	catching bool // a catch-up from history is running; deliveries wait in held
	released bool
	// presence is set when Options.Presence opts the channel in: its
	// subscribers join and leave the hub's presence. Set at creation.
	presence bool
	// mend is what the channel keeps while it mends a break (a catch-up,
	// a follow to try again): made the first time, so that a channel that
	// never broke does not carry it.
	mend *mending

	// recent are the newest frames fanned out, contiguous and ending at
	// last, oldest first: resuming clients whose cursor they cover replay
	// from here, sharing the frames, without asking the broker. That is
	// what makes a reconnection storm cheap.
	// Made with the first publication.
	recent *recentFrames

	// The pages of history read for the replays running on the channel
	// (replay.go), nil when none runs.
	pmu sync.Mutex // guards pc
	pc  *pageCache
}

// recentFrames are a channel's recent frames and their size.
type recentFrames struct {
	frames []*frame
	bytes  int
}

// channelConf is what the application's Options say of a channel.
type channelConf struct {
	key    []byte // Options.QueryKey for this channel, as JSON, or nil
	listID string // Options.ListIDField for this channel: the id field of a list channel
	reset  []byte // Options.ResetText for this channel, as an SSE event, or nil
}

// mending is the part of a hubChannel used while it mends a break,
// guarded by the channel's mu.
type mending struct {
	target   Position // where the catch-up must reach, at least
	held     []*frame // deliveries waiting for the catch-up, in order
	heldLost bool     // held overflowed during the catch-up
	retry    *time.Timer
	delay    time.Duration
}

// mendingLocked returns hc.mend, making it if needed. hc.mu is held.
func (hc *hubChannel) mendingLocked() *mending {
	if hc.mend == nil {
		hc.mend = new(mending)
	}
	return hc.mend
}

// Bounds of a channel's recent frames, and of those of a channel with
// few subscribers (a channel per user, per document): there a resuming
// client is one of a few, and reading history for it costs less than
// keeping many frames for every such channel.
const (
	maxRecent         = 512
	maxRecentBytes    = 256 << 10
	maxRecentFew      = 16
	maxRecentFewBytes = 16 << 10
)

// rememberLocked adds f, just fanned out, to the recent frames.
func (hc *hubChannel) rememberLocked(f *frame) {
	if f.pos.Epoch == "" || !hc.kindOf().replays() {
		return
	}
	r := hc.recent
	if r == nil {
		r = new(recentFrames)
		hc.recent = r
	}
	if n := len(r.frames); n > 0 {
		if p := r.frames[n-1].pos; p.Epoch != f.pos.Epoch || p.Seq+1 != f.pos.Seq {
			clear(r.frames)
			r.frames, r.bytes = nil, 0
		}
	}
	r.frames = append(r.frames, f)
	r.bytes += f.size()
	keep, keepBytes := maxRecent, maxRecentBytes
	if len(hc.subs) <= maxTurns {
		keep, keepBytes = maxRecentFew, maxRecentFewBytes
	}
	drop := 0
	for len(r.frames)-drop > keep || r.bytes > keepBytes {
		r.bytes -= r.frames[drop].size()
		r.frames[drop] = nil
		drop++
	}
	if drop > 0 {
		r.frames = r.frames[drop:]
	}
}

func (hc *hubChannel) forgetLocked() {
	if r := hc.recent; r != nil {
		clear(r.frames)
		hc.recent = nil
	}
}

// recentAfterLocked returns the frames after p up to last, if the recent
// frames hold all of them.
func (hc *hubChannel) recentAfterLocked(p Position) ([]*frame, bool) {
	r := hc.recent
	if r == nil || len(r.frames) == 0 || !hc.kindOf().replays() {
		return nil, false
	}
	first := r.frames[0].pos
	newest := r.frames[len(r.frames)-1].pos
	if p.Epoch != first.Epoch || newest != hc.last || p.Seq+1 < first.Seq || p.Seq >= newest.Seq {
		return nil, false
	}
	return r.frames[p.Seq+1-first.Seq:], true
}

// maxHeld bounds the publications a channel holds while it catches up.
const maxHeld = 1 << 14

// acquire returns the channel, joining it and waiting until its broker
// subscription is active. Every successful acquire needs a release.
func (h *Hub) acquire(ctx context.Context, name string) (*hubChannel, error) {
	hc, err := h.join(name)
	if err != nil {
		return nil, err
	}
	hc.mu.Lock()
	var ready chan struct{}
	if !hc.started && hc.err == nil {
		if hc.ready == nil {
			hc.ready = make(chan struct{})
		}
		ready = hc.ready
	}
	err = hc.err
	hc.mu.Unlock()
	if ready == nil {
		if err != nil {
			h.release(hc)
			return nil, err
		}
		return hc, nil
	}
	select {
	case <-ready:
		hc.mu.Lock()
		err := hc.err
		hc.mu.Unlock()
		if err != nil {
			h.release(hc)
			return nil, err
		}
		return hc, nil
	case <-ctx.Done():
		h.release(hc)
		return nil, ctx.Err()
	case <-h.done:
		h.release(hc)
		return nil, ErrClosed
	}
}

// joinAll joins the channels named without waiting, so that the broker
// is asked to follow those the hub does not follow yet all at once (it may
// batch them), not one after another as the subscriptions that follow
// wait for them; leave lets go of them.
func (h *Hub) joinAll(names []string) (leave func()) {
	if len(names) < 2 {
		return func() {}
	}
	joined := make([]*hubChannel, 0, len(names))
	for _, name := range names {
		if hc, err := h.join(name); err == nil {
			joined = append(joined, hc)
		}
	}
	return func() {
		for _, hc := range joined {
			h.release(hc)
		}
	}
}

// join joins the channel, following it on the broker if the hub does not
// yet, without waiting for the broker. Every successful join needs a
// release.
func (h *Hub) join(name string) (*hubChannel, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	hc := h.channels[name]
	if hc == nil {
		hc = &hubChannel{h: h, name: name, quoted: quote(name)}
		var conf channelConf
		conf.key = h.queryKey(name)
		if h.opts.ListIDField != nil {
			conf.listID = h.opts.ListIDField(name)
		}
		if conf.listID == "" {
			conf.reset = h.resetText(name)
		}
		if conf.key != nil || conf.listID != "" || conf.reset != nil {
			hc.conf = &conf
		}
		hc.setKind(hc.base())
		if h.presence != nil {
			mode := h.opts.Presence(name)
			hc.presence = mode == PresenceMembers || mode == PresenceCount
		}
		if st := h.states[name]; st != nil {
			hc.setKind(st)
		}
		h.channels[name] = hc
		hc.refs++
		h.mu.Unlock()
		hc.follow()
	} else {
		hc.refs++
		h.mu.Unlock()
	}
	return hc, nil
}

// release leaves the channel; the last one out ends its broker subscription.
func (h *Hub) release(hc *hubChannel) {
	h.mu.Lock()
	hc.refs--
	if hc.refs > 0 {
		h.mu.Unlock()
		return
	}
	if h.channels[hc.name] == hc {
		delete(h.channels, hc.name)
	}
	h.mu.Unlock()
	hc.mu.Lock()
	hc.released = true
	stop := hc.stop
	hc.stop = nil
	hc.stopRetryLocked()
	hc.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// subscriber is the Follower of a broker that is not one: a goroutine
// per channel calls Subscribe.
type subscriber struct{ h *Hub }

func (s subscriber) Follow(channel string, ready func(Position), deliver func(Message), ended func(error)) (func(), error) {
	ctx, cancel := context.WithCancel(s.h.ctx)
	g := follow.New(ready, deliver, ended)
	s.h.group.Go(func() error {
		err := s.h.broker.Subscribe(ctx, channel, g.Ready, g.Deliver)
		if err == nil {
			err = errors.New("subscription ended early")
		}
		if ctx.Err() == nil {
			g.End(err)
		}
		return nil
	})
	return func() {
		cancel()
		g.Shut()
	}, nil
}

// Bounds of the backoff between follows of a channel's that broke.
const (
	minFollowDelay = 50 * time.Millisecond
	maxFollowDelay = 5 * time.Second
)

// follow starts following the channel on the broker. The broker calls
// onReady and onDeliver, and ended when the follow breaks, which follows
// again after a backoff (fill the hole from history: onReady) until the
// channel is released or the hub closes. No goroutine waits meanwhile.
func (hc *hubChannel) follow() {
	h := hc.h
	hc.mu.Lock()
	if hc.released || h.ctx.Err() != nil {
		hc.mu.Unlock()
		return
	}
	hc.attempt++
	attempt, readies := hc.attempt, hc.readies
	hc.mu.Unlock()

	stop, err := h.follower.Follow(hc.name, hc.onReady, hc.onDeliver, func(err error) { hc.ended(attempt, readies, err) })
	if err != nil {
		hc.ended(attempt, readies, err)
		return
	}
	hc.mu.Lock()
	if hc.attempt == attempt && !hc.released {
		hc.stop = stop
		stop = nil
	}
	hc.mu.Unlock()
	if stop != nil {
		// Released, or ended, meanwhile.
		stop()
	}
}

// ended is called when the follow started as attempt, when the channel
// had seen readies broker subscriptions become active, ends with err.
func (hc *hubChannel) ended(attempt, readies int, err error) {
	h := hc.h
	hc.mu.Lock()
	if hc.attempt != attempt || hc.released || h.ctx.Err() != nil {
		hc.mu.Unlock()
		return
	}
	hc.attempt++ // the attempt is over: its stop does nothing now
	hc.stop = nil
	started, again := hc.started, hc.readies > readies
	hc.down = started
	hc.mu.Unlock()

	closed := h.brokerClosed(err)
	if !closed {
		h.stats.brokerErrors.Add(1)
		h.note("broker", "subscription broke: "+err.Error(), hc.name, "")
	}
	if !started {
		// Nobody has been admitted yet: fail the waiting subscribers and
		// let the next one try afresh.
		h.mu.Lock()
		if h.channels[hc.name] == hc {
			delete(h.channels, hc.name)
		}
		h.mu.Unlock()
		hc.mu.Lock()
		hc.err = fmt.Errorf("%w: %w", errUnavailable, err)
		hc.settleLocked()
		hc.mu.Unlock()
		return
	}
	if closed {
		// Not a fault, and for good: see Hub.follow.
		h.opts.Logger.Debug("live: the broker is closed; the channel's subscription ends", "channel", hc.name, "err", err)
		return
	}
	h.opts.Logger.Warn("live: broker subscription broke; resubscribing", "channel", hc.name, "err", err)
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.released || hc.attempt != attempt+1 {
		return
	}
	m := hc.mendingLocked()
	if again || m.delay == 0 {
		m.delay = minFollowDelay
	}
	h.waitToFollow(hc, m.delay)
	m.delay = min(2*m.delay, maxFollowDelay)
}

// stopRetryLocked stops the timer of the next follow, if it is waiting.
func (hc *hubChannel) stopRetryLocked() {
	if m := hc.mend; m != nil && m.retry != nil {
		hc.h.unwait(hc)
		m.retry.Stop()
		m.retry = nil
	}
}

// backoff waits delay before a subscription to the broker is tried again,
// or less if another subscription of the hub's starts again meanwhile (the
// broker answers again). It reports false if ctx ended first.
func (h *Hub) backoff(ctx context.Context, delay time.Duration) bool {
	h.backMu.Lock()
	back := h.back
	h.backMu.Unlock()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-back:
	}
	return true
}

// waitToFollow follows hc again after delay, or sooner if another
// subscription of the hub's starts again meanwhile. A timer waits, not a
// goroutine. hc.mu is held.
func (h *Hub) waitToFollow(hc *hubChannel, delay time.Duration) {
	t := time.AfterFunc(delay, func() {
		if h.unwait(hc) {
			hc.follow()
		}
	})
	hc.mendingLocked().retry = t
	h.backMu.Lock()
	if h.waiting == nil {
		h.waiting = make(map[*hubChannel]*time.Timer)
	}
	h.waiting[hc] = t
	h.backMu.Unlock()
}

// unwait takes hc off the channels waiting to follow again, and reports
// whether it was there.
func (h *Hub) unwait(hc *hubChannel) bool {
	h.backMu.Lock()
	defer h.backMu.Unlock()
	_, ok := h.waiting[hc]
	delete(h.waiting, hc)
	return ok
}

// unwaitAll stops every channel's wait to follow again: the hub closes.
func (h *Hub) unwaitAll() {
	h.backMu.Lock()
	defer h.backMu.Unlock()
	for _, t := range h.waiting {
		t.Stop()
	}
	clear(h.waiting)
}

// answered tells the subscriptions waiting in backoff that the broker
// answers again.
func (h *Hub) answered() {
	h.backMu.Lock()
	close(h.back)
	h.back = make(chan struct{})
	for _, t := range h.waiting {
		t.Reset(0)
	}
	h.backMu.Unlock()
}

// settleLocked wakes those waiting for the first follow to be active or
// to fail.
func (hc *hubChannel) settleLocked() {
	if hc.ready != nil {
		close(hc.ready)
		hc.ready = nil
	}
}

// onReady is the broker's ready callback.
func (hc *hubChannel) onReady(head Position) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.readies++
	hc.down = false
	if !hc.started {
		hc.started = true
		hc.last = head
		hc.settleLocked()
		return
	}
	// A resubscription: publications may have been missed while it was down.
	hc.h.answered()
	switch {
	case hc.catching:
		// The running catch-up reads history up to the broker's head anyway.
	case head.Epoch != hc.last.Epoch || head.Seq < hc.last.Seq:
		hc.resetAllLocked(resetEpoch, head)
		hc.last = head
	case head.Seq > hc.last.Seq:
		hc.startCatchUpLocked(head, nil)
	}
}

// frame encodes a publication on this channel. A Text's is text on a
// plain channel; on another (its kind changed, or another hub did not know
// it) it is the JSON string it is stored as.
func (hc *hubChannel) frame(m Message) *frame {
	mt, _ := readMeta(m)
	return hc.frameMeta(m, mt)
}

// frameMeta is frame, given m's meta, read once.
func (hc *hubChannel) frameMeta(m Message, mt meta) *frame {
	k := hc.kindOf()
	var f *frame
	if pk, ok := k.(plainKind); ok && mt.Text != nil {
		f = newTextFrame(pk.quoted(), pk.key(), m, mt.Text.Event)
	}
	if f == nil {
		f = k.frame(m)
	}
	f.except = mt.Except
	if hc.h.obs.Wrote != nil {
		f.at = nanotime()
	}
	return f
}

// onDeliver is the broker's deliver callback.
func (hc *hubChannel) onDeliver(m Message) {
	mt, _ := readMeta(m)
	done := hc.h.fanOut(hc.name, mt)
	f := hc.frameMeta(m, mt)
	var turns turns
	hc.mu.Lock()
	hc.acceptLocked(f, &turns)
	hc.mu.Unlock()
	turns.take()
	if done != nil {
		done()
	}
}

// maxTurns is how many subscribers a channel may have for the goroutine
// that delivers a publication to take their writers' turns itself, writing
// to their sockets without a hand-off to the writers (a channel per user,
// per document); a channel with more hands them to the pool, which writes
// them in parallel.
const maxTurns = 4

// turns are the connections whose writer's turn the delivering goroutine
// takes once it has left the channel's lock.
type turns struct {
	n     int
	conns [maxTurns]*conn
}

// add queues f for c, keeping the writer's turn it needs for take.
func (t *turns) add(c *conn, f *frame) {
	if t == nil || t.n == maxTurns {
		c.push(f)
		return
	}
	if c.pushTurn(f) {
		t.conns[t.n] = c
		t.n++
	}
}

// take takes the turns, writing to each connection.
func (t *turns) take() {
	for i := range t.n {
		t.conns[i].flushTurn()
		t.conns[i] = nil
	}
	t.n = 0
}

// acceptLocked fans out f if it is the next publication, drops it if it is
// old, and starts a catch-up if it leaves a hole.
func (hc *hubChannel) acceptLocked(f *frame, t *turns) {
	switch {
	case hc.catching:
		if m := hc.mendingLocked(); len(m.held) < maxHeld {
			m.held = append(m.held, f)
		} else {
			m.heldLost = true
		}
	case f.pos.Epoch != hc.last.Epoch:
		hc.last = Position{f.pos.Epoch, f.pos.Seq - 1}
		hc.resetAllLocked(resetEpoch, hc.last)
		hc.fanoutLocked(f, nil)
	case f.pos.Seq <= hc.last.Seq:
		// Already fanned out.
	case f.pos.Seq > hc.last.Seq+1:
		hc.startCatchUpLocked(Position{f.pos.Epoch, f.pos.Seq - 1}, f)
	default:
		hc.fanoutLocked(f, t)
	}
}

// fanoutLocked fans f out to the subscribers. With t, and few enough of
// them, the writers' turns they need are kept in t for the caller.
func (hc *hubChannel) fanoutLocked(f *frame, t *turns) {
	if len(hc.subs) > maxTurns {
		t = nil // the pool writes a wide channel's connections in parallel
	}
	hc.last = f.pos
	hc.pubs.Add(1)
	hc.rememberLocked(f)
	hc.kindOf().fanned(f)
	for _, s := range hc.subs {
		if s.ahead != 0 {
			if f.pos.Seq <= s.ahead {
				continue // the client has it from another node
			}
			s.ahead = 0
		}
		if f.except != nil && f.except.skips(s.c) {
			continue
		}
		if s.resuming {
			s.holdLocked(f)
			continue
		}
		t.add(s.c, f)
	}
}

// pushAllLocked queues f for every subscriber that is not replaying
// history (those get what fans out after their replay).
func (hc *hubChannel) pushAllLocked(f *frame) {
	for _, s := range hc.subs {
		if !s.resuming {
			s.c.push(f)
		}
	}
}

// resetAllLocked tells every subscriber that the channel continues after
// cursor and that what came before must be refetched.
func (hc *hubChannel) resetAllLocked(reason string, cursor Position) {
	hc.forgetLocked()
	k := hc.kindOf()
	k.lost(cursor)
	var ws, sse *frame
	for _, s := range hc.subs {
		s.ahead = 0
		if s.resuming {
			s.breakLocked(resetGone)
			continue
		}
		if s.c.ws {
			if ws == nil {
				ws = k.resetFrame(cursor, reason, true)
			}
			s.c.push(ws)
		} else {
			if sse == nil {
				sse = k.resetFrame(cursor, reason, false)
			}
			s.c.push(sse)
		}
		hc.h.stats.reset(reason)
	}
}

// startCatchUpLocked reads the publications after hc.last, up to target at
// least, from history in another goroutine, holding live deliveries
// (starting with first, if any) until it has fanned them out.
func (hc *hubChannel) startCatchUpLocked(target Position, first *frame) {
	hc.catching = true
	m := hc.mendingLocked()
	m.target = target
	if first != nil {
		m.held = append(m.held, first)
	}
	from := hc.last
	hc.h.group.Go(func() error {
		hc.catchUp(from)
		return nil
	})
}

func (hc *hubChannel) catchUp(from Position) {
	msgs, err := hc.h.history.Since(hc.h.ctx, hc.name, from)

	hc.mu.Lock()
	defer hc.mu.Unlock()
	m := hc.mendingLocked()
	held, lost, target := m.held, m.heldLost, m.target
	m.held, m.heldLost, hc.catching = nil, false, false
	if hc.last != from {
		// A reset moved the channel on while history was read.
		err = ErrGone
	}
	if err == nil && !lost {
		for _, m := range msgs {
			if m.Pos.Epoch != hc.last.Epoch || m.Pos.Seq > hc.last.Seq+1 {
				err = ErrGone
				break
			}
			if m.Pos.Seq == hc.last.Seq+1 {
				hc.fanoutLocked(hc.frame(m), nil)
				hc.h.stats.replayed.Add(1)
			}
		}
	}
	if err != nil || lost {
		if hc.released || hc.h.ctx.Err() != nil {
			return
		}
		hc.h.opts.Logger.Warn("live: publications lost by the broker; resetting subscribers", "channel", hc.name, "from", from.String(), "err", err)
		// Continue from the first held publication, or from the head the
		// broker reported.
		cursor := target
		if len(held) > 0 {
			cursor = Position{held[0].pos.Epoch, held[0].pos.Seq - 1}
		}
		if cursor.Epoch == hc.last.Epoch && cursor.Seq < hc.last.Seq {
			cursor = hc.last
		}
		hc.last = cursor
		hc.resetAllLocked(resetBroker, cursor)
	}
	for _, f := range held {
		hc.acceptLocked(f, nil)
	}
}
