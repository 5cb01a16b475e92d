package live

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// SlowPolicy says what the Hub does with a client whose outgoing queue
// exceeds [Options].QueueBytes or [Options].QueueMessages.
type SlowPolicy int

const (
	// SlowDisconnect drops the queue and closes the connection (WebSocket
	// status 1013, try again later; a multiplexed SSE stream's close
	// frame says the same; a one-channel stream simply ends). The close
	// frame goes behind what the socket still holds, within 100 ms: a
	// client that reads nothing meanwhile sees the connection end
	// without it. Clients
	// reconnect with their cursor and resume from history, so nothing is
	// lost inside the history window, and a React LiveProvider client, which refetches
	// after reconnecting, stays correct too. This is the default.
	SlowDisconnect SlowPolicy = iota

	// SlowReset drops the queued publications and sends the client a reset
	// frame for each channel that lost some, carrying the cursor of the
	// newest one dropped; publications after it keep flowing. The client
	// must refetch those channels.
	SlowReset
)

// errSlow ends a connection under SlowDisconnect.
var errSlow = errors.New("live: client too slow")

// A queue is the half of a conn that fan-out writes to: the frames
// waiting for the client, bounded by Options.QueueBytes and
// QueueMessages, what the slow-client policy left of them, and the
// queue's place with whoever drains it. Fan-out appends without
// blocking; the hub's writers (socket.go) take the whole queue at a
// time for a taken-over connection, a long-poll's handler for its own.
type queue struct {
	// wake has room for one token: pushes leave one there when the
	// queue's own goroutine (a long-poll's) may be asleep.
	wake chan struct{}

	// mu guards the fields below, and conn's req, ctx and cancel. It is
	// never held across a write to the client.
	mu    sync.Mutex
	q     []*frame
	bytes int                      // the cost of q
	spare []*frame                 // a drained q to reuse
	beat  bool                     // a heartbeat is due
	slow  bool                     // disconnect requested under SlowDisconnect
	subs  map[string]*subscription // the connection's subscriptions, by channel
	skip  map[string]Position      // per state channel: publications up to here were conflated
	room  chan struct{}            // closed when the queue is taken; nil when nobody waits for room
	// oldest is when the oldest publication push queued since a writer
	// last took the queue reached the hub (frame.at), 0 for none: the
	// latency Options.Observe.Wrote reports.
	oldest int64
	// joined is when the connection joined the writers' line, for
	// Options.Observe.Waited; guarded by the writers' mu.
	joined int64

	// wire is how frames are encoded, wireNone until takeOver hands the
	// queue to the hub's writers; written once, under mu. The
	// connection's writer, which takeOver scheduled, reads it without mu.
	wire   wire
	sched  bool  // queued for a writer or being written
	ended  bool  // killed; a writer finishes it
	endErr error // why
}

// fullLocked reports whether c's queue is at its bounds: a frame pushed
// now would overflow it.
func (c *conn) fullLocked() bool {
	return c.bytes >= c.hub.opts.QueueBytes+c.acks*ackRoom || len(c.q) >= c.hub.opts.QueueMessages+c.acks
}

// ackRoom is the room in bytes a stream's queue has beyond QueueBytes for
// the acknowledgement of each channel it opened with.
const ackRoom = 256

// push queues f. It never blocks; when the queue is at its bounds it
// applies the hub's SlowPolicy.
func (c *conn) push(f *frame) {
	if c.pushTurn(f) {
		c.hub.writers.add(c)
	}
}

// pushTurn queues f as push does, and reports whether c now needs a
// writer's turn, which the caller then gives it: writers.add, or
// flushTurn on its own goroutine.
func (c *conn) pushTurn(f *frame) bool {
	if f == nil {
		return false
	}
	n := f.cost()
	c.mu.Lock()
	if c.slow || c.ended || (c.skip != nil && c.skipLocked(f)) {
		c.mu.Unlock()
		return false
	}
	// The bounds apply to what is queued before f, so the queue holds at
	// most one frame beyond them: one publication larger than QueueBytes
	// reaches a client that keeps up instead of evicting it.
	if c.fullLocked() {
		c.overflowLocked(f)
	} else {
		c.q = append(c.q, f)
		c.bytes += n
		if f.at != 0 && c.oldest == 0 {
			c.oldest = f.at
		}
	}
	slow := c.slow
	add, served := c.scheduleLocked(), c.wire != wireNone
	c.mu.Unlock()
	if !add && !served {
		c.signal()
	}
	if slow {
		c.kill(errSlow) // interrupts a write waiting for the client
	}
	return add
}

// pushSome queues the first frames of fs as push would while the queue is
// under its bounds, and returns how many it took; those it leaves wait for
// room (pushPaced). ok is false once c is slow or ended: nothing more
// reaches it.
func (c *conn) pushSome(fs []*frame) (n int, ok bool) {
	c.mu.Lock()
	if c.slow || c.ended {
		c.mu.Unlock()
		return 0, false
	}
	for n < len(fs) && !c.fullLocked() {
		f := fs[n]
		n++
		if c.skip != nil && c.skipLocked(f) {
			continue
		}
		c.q = append(c.q, f)
		c.bytes += f.cost()
	}
	c.unlockAndWake()
	return n, true
}

// pushPaced queues fs as the client reads them: what the queue does not
// admit at once (pushSome) waits for a writer to take the queue. It is
// how a resuming client gets what it missed, so that a long replay is
// neither taken for a slow client nor held beyond the queue's bounds. It
// reports false if ctx ended, or c did, before all were queued.
func (c *conn) pushPaced(ctx context.Context, fs []*frame) bool {
	for {
		n, ok := c.pushSome(fs)
		if !ok {
			return false
		}
		if fs = fs[n:]; len(fs) == 0 {
			return true
		}
		if !c.waitRoom(ctx) {
			return false
		}
	}
}

// waitRoom waits until c's queue is under its bounds. It reports false if
// ctx ended, or c did, first.
func (c *conn) waitRoom(ctx context.Context) bool {
	for {
		c.mu.Lock()
		if c.slow || c.ended {
			c.mu.Unlock()
			return false
		}
		if !c.fullLocked() {
			c.mu.Unlock()
			return true
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return false
		}
	}
}

// roomLocked wakes those waiting for room in the queue: it was taken, or
// its connection ended.
func (q *queue) roomLocked() {
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
}

// tooSlow applies SlowDisconnect to c, whose client cannot keep up: its
// queue is dropped and it ends.
func (c *conn) tooSlow() {
	c.hub.stats.slow.Add(1)
	c.mu.Lock()
	c.hub.stats.dropped.Add(int64(len(c.q)))
	c.dropLocked()
	c.unlockAndWake()
	c.kill(errSlow)
}

// dropLocked empties the queue of a connection that is to end as slow.
func (q *queue) dropLocked() {
	clear(q.q)
	q.q, q.bytes, q.slow, q.oldest = q.q[:0], 0, true, 0
}

// overflowLocked applies the slow-client policy when f does not fit.
//
// The queued publications of channels whose kind folds them (lists and
// States) give way to fewer frames that bring the client to the same
// place; those of a State to one frame holding the latest value, after
// which publications it already contains are skipped. When every channel
// folds, nothing is lost; otherwise the hub's SlowPolicy decides, and
// under SlowReset the channels that do not fold are reset.
func (c *conn) overflowLocked(f *frame) {
	c.hub.stats.slow.Add(1)
	had := len(c.q) + 1               // what is dropped, less what is kept
	lost := make(map[string][]*frame) // each channel's droppable frames, in order
	var order []string
	kept := make([]*frame, 0, 8)
	for _, g := range append(c.q, f) {
		if !g.data && !g.reset {
			kept = append(kept, g)
			continue
		}
		if lost[g.channel] == nil {
			order = append(order, g.channel)
		}
		lost[g.channel] = append(lost[g.channel], g)
	}
	clear(c.q)
	c.q = c.q[:0]
	conflatable := true
	folded := make([][]*frame, len(order))
	for i, ch := range order {
		s, fs := c.subs[ch], lost[ch]
		if s == nil {
			continue // unsubscribed meanwhile: nothing to send
		}
		if !slices.ContainsFunc(fs, func(g *frame) bool { return g.data }) {
			folded[i] = fs[len(fs)-1:] // resets only: the last says it all
			continue
		}
		out, skip, ok := s.hc.kindOf().fold(fs)
		if !ok {
			conflatable = false
			continue
		}
		folded[i] = out
		if skip.Epoch != "" {
			if c.skip == nil {
				c.skip = make(map[string]Position)
			}
			c.skip[ch] = skip
		}
	}
	if conflatable || c.hub.opts.SlowPolicy == SlowReset {
		for i, ch := range order {
			if folded[i] != nil || c.subs[ch] == nil {
				kept = append(kept, folded[i]...)
				continue
			}
			fs := lost[ch]
			var f *frame
			if pk, ok := c.subs[ch].hc.kindOf().(plainKind); ok {
				f = pk.resetFrame(fs[len(fs)-1].pos, resetSlow, c.ws) // with Options.ResetText
			} else {
				f = resetFrame(ch, fs[len(fs)-1].pos, resetSlow, c.ws)
			}
			kept = append(kept, f)
			c.hub.stats.reset(resetSlow)
		}
		bytes := 0
		for _, g := range kept {
			bytes += g.cost()
		}
		if bytes <= c.hub.opts.QueueBytes && len(kept) <= c.hub.opts.QueueMessages {
			c.q, c.bytes = append(c.q, kept...), bytes
			c.hub.stats.dropped.Add(int64(max(0, had-len(kept))))
			return
		}
		// What is left still overflows: nothing sensible can be sent.
	}
	c.hub.stats.dropped.Add(int64(had))
	c.dropLocked()
}

// skipLocked reports whether f is a publication already contained in a
// conflated frame sent before it.
func (q *queue) skipLocked(f *frame) bool {
	p, ok := q.skip[f.channel]
	if !ok || !f.data {
		return false
	}
	if f.pos.Epoch != p.Epoch || f.pos.Seq > p.Seq {
		delete(q.skip, f.channel)
		return false
	}
	return f.pos.Seq <= p.Seq
}

// heartbeatDue marks a heartbeat for the writer.
func (c *conn) heartbeatDue(now time.Time) {
	c.mu.Lock()
	w := c.wire
	c.mu.Unlock()
	if w == wireWS {
		// The pings are unsolicited: a client that answered none since
		// the previous heartbeat, within the write timeout, is gone.
		quiet := now.Sub(time.Unix(0, c.seen.Load()))
		if quiet > c.hub.opts.Heartbeat+c.hub.opts.WriteTimeout {
			c.kill(errNoPong)
			return
		}
	}
	c.mu.Lock()
	c.beat = true
	c.unlockAndWake()
}

// errNoPong ends a WebSocket connection whose client stopped answering.
var errNoPong = errors.New("live: WebSocket client stopped answering pings")

// scheduleLocked marks a taken-over connection scheduled, and reports
// whether the caller queues it for a writer: not when it is queued or
// being written already.
func (q *queue) scheduleLocked() bool {
	if q.sched || q.wire == wireNone || q.ended {
		return false
	}
	q.sched = true
	return true
}

// schedule queues a taken-over connection for a writer unless it is
// queued or being written already.
func (c *conn) schedule() {
	c.mu.Lock()
	c.unlockAndWake()
}

// unlockAndWake releases c.mu and wakes whoever drains c's queue: the
// hub's writers for a taken-over connection, otherwise its own goroutine.
func (c *conn) unlockAndWake() {
	add, served := c.scheduleLocked(), c.wire != wireNone
	c.mu.Unlock()
	switch {
	case add:
		c.hub.writers.add(c)
	case !served:
		c.signal()
	}
}

// signal wakes the queue's own goroutine, if it sleeps.
func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
