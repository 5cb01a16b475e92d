package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
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
	key    []byte // Options.QueryKey for this channel, as JSON, or nil
	listID string // Options.Lists for this channel: the id field of a list channel
	// presence is set when Options.Presence opts the channel in: its
	// subscribers join and leave the hub's presence.
	presence bool
	ctx      context.Context
	cancel   context.CancelFunc
	ready    chan struct{} // closed when the first broker subscription is active or has failed
	err      error         // why it failed; written before ready is closed

	refs int // guarded by h.mu: local subscribers plus those joining

	// kind is what the channel is (kind.go): plain or a list from its
	// creation, a State once one is made on it. Changed under mu.
	kind atomic.Pointer[kind]

	mu       sync.Mutex // guards the fields below
	subs     []*subscription
	last     Position // newest publication fanned out
	started  bool     // the broker called ready at least once
	readies  int      // broker subscriptions that became active
	catching bool     // a catch-up from history is running; deliveries wait in held
	target   Position // where the catch-up must reach, at least
	held     []*frame
	heldLost bool // held overflowed during the catch-up

	// recent are the newest frames fanned out, contiguous and ending at
	// last, oldest first: resuming clients whose cursor they cover replay
	// from here, sharing the frames, without asking the broker. That is
	// what makes a reconnection storm cheap.
	recent      []*frame
	recentBytes int
}

// Bounds of a channel's recent frames.
const (
	maxRecent      = 512
	maxRecentBytes = 256 << 10
)

// rememberLocked adds f, just fanned out, to the recent frames.
func (hc *hubChannel) rememberLocked(f *frame) {
	if f.pos.Epoch == "" || !hc.kindOf().replays() {
		return
	}
	if n := len(hc.recent); n > 0 {
		if p := hc.recent[n-1].pos; p.Epoch != f.pos.Epoch || p.Seq+1 != f.pos.Seq {
			hc.forgetLocked()
		}
	}
	hc.recent = append(hc.recent, f)
	hc.recentBytes += f.size()
	drop := 0
	for len(hc.recent)-drop > maxRecent || hc.recentBytes > maxRecentBytes {
		hc.recentBytes -= hc.recent[drop].size()
		hc.recent[drop] = nil
		drop++
	}
	if drop > 0 {
		hc.recent = hc.recent[drop:]
	}
}

func (hc *hubChannel) forgetLocked() {
	clear(hc.recent)
	hc.recent, hc.recentBytes = nil, 0
}

// recentAfterLocked returns the frames after p up to last, if the recent
// frames hold all of them.
func (hc *hubChannel) recentAfterLocked(p Position) ([]*frame, bool) {
	if len(hc.recent) == 0 || !hc.kindOf().replays() {
		return nil, false
	}
	first := hc.recent[0].pos
	newest := hc.recent[len(hc.recent)-1].pos
	if p.Epoch != first.Epoch || newest != hc.last || p.Seq+1 < first.Seq || p.Seq >= newest.Seq {
		return nil, false
	}
	return hc.recent[p.Seq+1-first.Seq:], true
}

// maxHeld bounds the publications a channel holds while it catches up.
const maxHeld = 1 << 14

// A subscription is one connection's interest in one channel.
type subscription struct {
	c   *conn
	hc  *hubChannel
	idx int // position in hc.subs, -1 once removed; guarded by hc.mu

	// ahead, when set, is a cursor the client resumed from that this
	// hub had not reached yet, though the broker had (another node
	// published it): publications up to it are not sent again. Guarded
	// by hc.mu.
	ahead uint64

	// While a resuming subscription replays history, live frames wait in
	// pending. broken records that some were lost (pending overflowed, or
	// the channel reset) so the replay must end in a reset. Guarded by hc.mu.
	resuming bool
	broken   bool
	pending  []*frame
}

// acquire returns the channel, joining it and waiting until its broker
// subscription is active. Every successful acquire needs a release.
func (h *Hub) acquire(ctx context.Context, name string) (*hubChannel, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	hc := h.channels[name]
	if hc == nil {
		hc = &hubChannel{h: h, name: name, quoted: quote(name), key: h.queryKey(name), ready: make(chan struct{})}
		if h.opts.Lists != nil {
			hc.listID = h.opts.Lists(name)
		}
		hc.setKind(hc.base())
		if h.presence != nil {
			mode := h.opts.Presence(name)
			hc.presence = mode == PresenceMembers || mode == PresenceCount
		}
		hc.ctx, hc.cancel = context.WithCancel(h.ctx)
		if st := h.states[name]; st != nil {
			hc.setKind(st)
		}
		h.channels[name] = hc
		h.group.Go(func() error {
			hc.run()
			return nil
		})
	}
	hc.refs++
	h.mu.Unlock()

	select {
	case <-hc.ready:
		if hc.err != nil {
			h.release(hc)
			return nil, hc.err
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

// release leaves the channel; the last one out ends its broker subscription.
func (h *Hub) release(hc *hubChannel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hc.refs--
	if hc.refs > 0 {
		return
	}
	if h.channels[hc.name] == hc {
		delete(h.channels, hc.name)
	}
	hc.cancel()
}

// run keeps the broker subscription alive until the channel is released or
// the hub closes, subscribing again with capped backoff when it breaks.
func (hc *hubChannel) run() {
	h := hc.h
	const minDelay, maxDelay = 50 * time.Millisecond, 5 * time.Second
	delay := minDelay
	for {
		hc.mu.Lock()
		readies := hc.readies
		hc.mu.Unlock()

		err := h.broker.Subscribe(hc.ctx, hc.name, hc.onReady, hc.onDeliver)
		if hc.ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("subscription ended early")
		}
		h.stats.brokerErrors.Add(1)

		hc.mu.Lock()
		started, again := hc.started, hc.readies > readies
		hc.mu.Unlock()
		if !started {
			// Nobody has been admitted yet: fail the waiting subscribers and
			// let the next one try afresh.
			hc.err = fmt.Errorf("%w: %w", errUnavailable, err)
			close(hc.ready)
			h.mu.Lock()
			if h.channels[hc.name] == hc {
				delete(h.channels, hc.name)
			}
			h.mu.Unlock()
			return
		}
		h.opts.Logger.Warn("live: broker subscription broke; resubscribing", "channel", hc.name, "err", err)
		if again {
			delay = minDelay
		}
		t := time.NewTimer(delay)
		select {
		case <-hc.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, maxDelay)
	}
}

// onReady is the broker's ready callback.
func (hc *hubChannel) onReady(head Position) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.readies++
	if !hc.started {
		hc.started = true
		hc.last = head
		close(hc.ready)
		return
	}
	// A resubscription: publications may have been missed while it was down.
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

// plain returns the channel's encoding as a plain channel.
func (hc *hubChannel) plain() plainKind {
	return plainKind{name: hc.name, quoted: hc.quoted, key: hc.key}
}

// base returns the channel's kind but for a State: a list or plain.
func (hc *hubChannel) base() kind {
	if hc.listID != "" {
		return listKind{plainKind: hc.plain(), id: hc.listID}
	}
	return hc.plain()
}

func (hc *hubChannel) setKind(k kind) { hc.kind.Store(&k) }

// kindOf returns what the channel is now.
func (hc *hubChannel) kindOf() kind { return *hc.kind.Load() }

// frame encodes a publication on this channel.
func (hc *hubChannel) frame(m Message) *frame {
	var ex *except
	m.Data, ex = unseal(m.Data)
	f := hc.kindOf().frame(m)
	f.except = ex
	return f
}

// onDeliver is the broker's deliver callback.
func (hc *hubChannel) onDeliver(m Message) {
	f := hc.frame(m)
	hc.mu.Lock()
	hc.acceptLocked(f)
	hc.mu.Unlock()
}

// acceptLocked fans out f if it is the next publication, drops it if it is
// old, and starts a catch-up if it leaves a hole.
func (hc *hubChannel) acceptLocked(f *frame) {
	switch {
	case hc.catching:
		if len(hc.held) < maxHeld {
			hc.held = append(hc.held, f)
		} else {
			hc.heldLost = true
		}
	case f.pos.Epoch != hc.last.Epoch:
		hc.last = Position{f.pos.Epoch, f.pos.Seq - 1}
		hc.resetAllLocked(resetEpoch, hc.last)
		hc.fanoutLocked(f)
	case f.pos.Seq <= hc.last.Seq:
		// Already fanned out.
	case f.pos.Seq > hc.last.Seq+1:
		hc.startCatchUpLocked(Position{f.pos.Epoch, f.pos.Seq - 1}, f)
	default:
		hc.fanoutLocked(f)
	}
}

func (hc *hubChannel) fanoutLocked(f *frame) {
	hc.last = f.pos
	hc.rememberLocked(f)
	hc.kindOf().fanned(f)
	max := hc.h.opts.QueueMessages
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
		if !s.resuming {
			s.c.push(f)
			continue
		}
		if len(s.pending) < max {
			s.pending = append(s.pending, f)
		} else {
			s.broken = true
			s.pending = nil
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
			s.broken = true
			s.pending = nil
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
	hc.target = target
	if first != nil {
		hc.held = append(hc.held, first)
	}
	from := hc.last
	hc.h.group.Go(func() error {
		hc.catchUp(from)
		return nil
	})
}

func (hc *hubChannel) catchUp(from Position) {
	var msgs []Message
	err := ErrGone
	if hc.h.history != nil {
		msgs, err = hc.h.history.Since(hc.ctx, hc.name, from)
	}

	hc.mu.Lock()
	defer hc.mu.Unlock()
	held, lost := hc.held, hc.heldLost
	hc.held, hc.heldLost, hc.catching = nil, false, false
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
				hc.fanoutLocked(hc.frame(m))
				hc.h.stats.replayed.Add(1)
			}
		}
	}
	if err != nil || lost {
		if hc.ctx.Err() != nil {
			return
		}
		hc.h.opts.Logger.Warn("live: publications lost by the broker; resetting subscribers", "channel", hc.name, "from", from.String(), "err", err)
		// Continue from the first held publication, or from the head the
		// broker reported.
		cursor := hc.target
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
		hc.acceptLocked(f)
	}
}

// resumeFrom is where a client asks to resume.
type resumeFrom struct {
	given    bool
	pos      Position
	anyEpoch bool  // a bare version number: resume in the channel's current epoch
	err      error // the cursor did not parse
}

var (
	errTooManySubscriptions = errors.New("live: too many subscriptions on this connection")
)

// subscribe adds channel name to c, replaying history after from when it
// is given. The subscriber is registered before subscribe returns, so a
// publication made after that reaches the client. The caller has
// validated and authorized the channel.
func (h *Hub) subscribe(ctx context.Context, c *conn, name string, from resumeFrom, ref json.RawMessage) error {
	c.mu.Lock()
	if s := c.subs[name]; s != nil {
		c.mu.Unlock()
		s.hc.mu.Lock()
		c.push(control{Type: "subscribed", Channel: name, Cursor: s.hc.last.String(), Ref: ref, Conn: c.key}.encode(c.ws))
		s.hc.mu.Unlock()
		return nil
	}
	if len(c.subs) >= h.opts.MaxSubscriptions {
		c.mu.Unlock()
		return errTooManySubscriptions
	}
	c.mu.Unlock()

	hc, err := h.acquire(ctx, name)
	if err != nil {
		return err
	}
	s := &subscription{c: c, hc: hc}

	var cur Position
	reset := ""
	// A cursor beyond this hub's head may come from another node that
	// has seen more of the channel: the broker, which refuses positions
	// beyond its own head, tells.
	asked, known := false, false
	for {
		hc.mu.Lock()
		cur = hc.last
		reset = ""
		if from.given {
			if from.anyEpoch {
				from.pos.Epoch = cur.Epoch
			}
			switch {
			case from.err != nil:
				reset = resetMalformed
			case from.pos.Epoch != cur.Epoch:
				reset = resetEpoch
			case from.pos.Seq > cur.Seq:
				reset = resetAhead
			}
		}
		if reset != resetAhead || h.history == nil {
			break
		}
		if asked {
			if known {
				// Start the client where it is; this hub catches up.
				reset, s.ahead, cur = "", from.pos.Seq, from.pos
			}
			break
		}
		hc.mu.Unlock()
		_, err := h.history.Since(ctx, name, from.pos)
		asked, known = true, err == nil
	}
	resume := from.given && reset == "" && from.pos.Seq < cur.Seq
	if resume {
		if replay, ok := hc.recentAfterLocked(from.pos); ok {
			hc.addLocked(s)
			c.push(control{Type: "subscribed", Channel: name, Cursor: from.pos.String(), Ref: ref, Conn: c.key}.encode(c.ws))
			c.pushReplay(replay, nil)
			h.stats.replayed.Add(int64(len(replay)))
			hc.mu.Unlock()
			h.adopt(c, s)
			return nil
		}
	}
	s.resuming = resume
	hc.addLocked(s)
	if !resume {
		c.push(control{Type: "subscribed", Channel: name, Cursor: cur.String(), Ref: ref, Conn: c.key}.encode(c.ws))
		if reset != "" {
			c.push(hc.kindOf().resetFrame(cur, reset, c.ws))
			h.stats.reset(reset)
		}
		hc.mu.Unlock()
		h.adopt(c, s)
		return nil
	}
	hc.mu.Unlock()

	// Replay (from, cur] from history; live publications after cur wait in
	// s.pending meanwhile. Both are checked for contiguity at the seam.
	var msgs []Message
	err = ErrGone
	if h.history != nil {
		msgs, err = h.history.Since(ctx, name, from.pos)
	}
	hc.mu.Lock()
	if err != nil && !errors.Is(err, ErrGone) {
		hc.removeLocked(s)
		hc.mu.Unlock()
		h.release(hc)
		return fmt.Errorf("%w: %w", errUnavailable, err)
	}
	c.push(control{Type: "subscribed", Channel: name, Cursor: from.pos.String(), Ref: ref, Conn: c.key}.encode(c.ws))
	ok := err == nil && !s.broken
	last := from.pos
	var replay []*frame
	for _, m := range msgs {
		if !ok || m.Pos.Seq > cur.Seq {
			break
		}
		if m.Pos.Epoch != last.Epoch || m.Pos.Seq != last.Seq+1 {
			ok = false
			break
		}
		replay = append(replay, hc.frame(m))
		last = m.Pos
	}
	ok = ok && last == cur
	if ok {
		c.pushReplay(replay, s.pending)
		h.stats.replayed.Add(int64(len(replay)))
	} else {
		c.push(hc.kindOf().resetFrame(hc.last, resetGone, c.ws))
		h.stats.reset(resetGone)
	}
	s.resuming, s.broken, s.pending = false, false, nil
	hc.mu.Unlock()
	h.adopt(c, s)
	return nil
}

// adopt records s among c's subscriptions.
func (h *Hub) adopt(c *conn, s *subscription) {
	c.mu.Lock()
	if c.subs == nil {
		c.subs = make(map[string]*subscription)
	}
	c.subs[s.hc.name] = s
	c.mu.Unlock()
	h.stats.subscriptions.Add(1)
	if s.hc.presence {
		h.presence.join(c, s.hc.name)
	}
}

// unsubscribe removes channel name from c; it reports whether c had it.
func (h *Hub) unsubscribe(c *conn, name string) bool {
	c.mu.Lock()
	s := c.subs[name]
	delete(c.subs, name)
	c.mu.Unlock()
	if s == nil {
		return false
	}
	s.cancel()
	return true
}

// cancel detaches s from its channel.
func (s *subscription) cancel() {
	hc := s.hc
	hc.mu.Lock()
	removed := s.idx >= 0
	hc.removeLocked(s)
	hc.mu.Unlock()
	if removed {
		hc.h.stats.subscriptions.Add(-1)
		if hc.presence {
			hc.h.presence.leave(s.c, hc.name)
		}
		hc.h.release(hc)
	}
}

func (hc *hubChannel) addLocked(s *subscription) {
	s.idx = len(hc.subs)
	hc.subs = append(hc.subs, s)
}

func (hc *hubChannel) removeLocked(s *subscription) {
	i := s.idx
	if i < 0 {
		return
	}
	last := len(hc.subs) - 1
	hc.subs[i] = hc.subs[last]
	hc.subs[i].idx = i
	hc.subs[last] = nil
	hc.subs = hc.subs[:last]
	s.idx = -1
}
