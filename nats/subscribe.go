package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/follow"
	"github.com/nats-io/nats.go"
)

var (
	errStalled  = errors.New("nats connection stalled")
	errConnLost = errors.New("nats connection lost")
	errGap      = errors.New("publications missing from the subscription")
	errDropped  = errors.New("the nats client dropped messages for the subscription (slow consumer)")
)

// How a channel is followed. Every Follow has a NATS subscription of its
// own to the channel's announcements, a channel subscription whose
// messages nats.go puts into one Go channel of the broker's (b.inbox): it
// starts no goroutine, and one goroutine of the broker's, the
// dispatcher, reads them all and delivers each to its follower, in the
// order the connection received them.
//
// The work that needs the server goes to a few goroutines of the
// broker's, the workers (at most maxWorkers, started when there is work
// and ended when there is none), never to the dispatcher: making sure
// the server has new subscriptions (one ping for all those made
// meanwhile), reading a new follower's head (one request each, up to
// maxWorkers of them in flight), and filling a hole in a follower's
// messages from the stream. While a follower's head or a hole is being
// read, the dispatcher queues the follower's later messages behind it,
// and the worker that read it delivers them once it is done, so every
// channel's publications are delivered in order.
//
// nats.go never waits for room in b.inbox: when it is full, it drops the
// message and counts it against its subscription. The dispatcher notices
// when the inbox was full (see dispatch) and ends every follower whose
// subscription dropped something with errDropped, so that no loss is
// silent; the Hub then follows again and reads what it missed from
// history.

// inboxSize is the room in the broker's inbox: how many messages may
// wait for the dispatcher before nats.go drops them. Tests make it small.
var inboxSize = 1 << 15

// maxWorkers bounds the goroutines that do a follower's I/O, and so the
// heads read and holes filled at once.
const maxWorkers = 64

// A follower is one Follow call.
type follower struct {
	b          *Broker
	channel    string
	ns         *nats.Subscription
	reconnects uint64 // the connection's reconnection count when it started

	mu      sync.Mutex // guards what follows; held while a callback runs
	done    bool       // ended or stopped: no callback from now on
	active  bool       // ready has been called
	busy    bool       // a worker holds the follower's messages: its head or a hole is being read
	last    live.Position
	pending []*nats.Msg // arrived while busy, oldest first
	ready   func(live.Position)
	deliver func(live.Message)
	ended   func(error)
}

// Subscribe implements [live.Broker] with Follow: see there.
func (b *Broker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if ctx.Err() != nil {
		if b.isClosed() {
			return fmt.Errorf("live: subscribe %q: %w", channel, live.ErrClosed)
		}
		return nil
	}
	start := func(ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
		return b.Follow(channel, ready, deliver, ended)
	}
	return follow.Subscribe(ctx, start, ready, deliver)
}

// Follow implements [live.Follower]. It subscribes to the channel's
// republished messages and returns; once the server has the subscription
// (one ping for all the follows started meanwhile), a goroutine of the
// broker's reads the channel's latest message and calls ready with its
// position, so every publication after the head reaches the subscription.
// A channel without messages gets a marker that fixes the epoch of its
// first publication. The broker's dispatcher then delivers, skipping
// messages up to the head. A message out of turn (a gap that cannot be
// filled, another epoch), messages the NATS client dropped, and any
// failure of the connection end the follow with an error.
func (b *Broker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	if err := live.ValidChannel(channel); err != nil {
		return nil, fmt.Errorf("live: follow: %w", err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("live: follow %q: %w", channel, live.ErrClosed)
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		return nil, fmt.Errorf("live: follow %q: %w (%v)", channel, errConnLost, st)
	}
	f := &follower{
		b:          b,
		channel:    channel,
		reconnects: b.nc.Stats().Reconnects,
		busy:       true, // until the head is read
		ready:      ready,
		deliver:    deliver,
		ended:      ended,
	}
	// A message that reaches the inbox before f is registered is dropped
	// by the dispatcher; it was stored before the head is read (after the
	// ping below), so the head covers it.
	ns, err := b.nc.ChanSubscribe(b.announcements(channel), b.inbox)
	if err != nil {
		return nil, fmt.Errorf("live: follow %q: %w", channel, err)
	}
	f.ns = ns
	b.fmu.Lock()
	if b.followClosed {
		b.fmu.Unlock()
		ns.Unsubscribe()
		return nil, fmt.Errorf("live: follow %q: %w", channel, live.ErrClosed)
	}
	b.follows[ns] = f
	b.starting = append(b.starting, f)
	flush := !b.flushing
	b.flushing = true
	b.fmu.Unlock()
	if flush {
		b.submit(b.flushStarting)
	}
	return f.stop, nil
}

// stop is the stop function Follow returns.
func (f *follower) stop() {
	f.mu.Lock()
	was := !f.done
	f.done = true
	f.pending = nil
	f.mu.Unlock()
	if was {
		f.b.forget(f)
	}
}

// fail ends f with err, unless it has ended or was stopped.
func (f *follower) fail(err error) {
	f.mu.Lock()
	ended := f.endLocked(err)
	f.mu.Unlock()
	if ended {
		f.b.forget(f)
	}
}

// endLocked ends f with err and reports whether it did, or false if it
// had ended or was stopped. The caller must call forget after unlocking.
func (f *follower) endLocked(err error) bool {
	if f.done {
		return false
	}
	f.done = true
	f.pending = nil
	f.ended(fmt.Errorf("live: follow %q: %w", f.channel, err))
	return true
}

// forget unsubscribes f and removes it from the broker's followers.
func (b *Broker) forget(f *follower) {
	f.ns.Unsubscribe()
	b.fmu.Lock()
	if b.follows[f.ns] == f {
		delete(b.follows, f.ns)
	}
	b.fmu.Unlock()
}

// followers returns the followers that match.
func (b *Broker) followers(match func(*follower) bool) []*follower {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	var fs []*follower
	for _, f := range b.follows {
		if match(f) {
			fs = append(fs, f)
		}
	}
	return fs
}

// failFollowers ends the followers that match with err, and returns how
// many there were.
func (b *Broker) failFollowers(err error, match func(*follower) bool) int {
	fs := b.followers(match)
	for _, f := range fs {
		f.fail(err)
	}
	return len(fs)
}

// flushStarting is a worker's job: it pings the server once the
// subscriptions of the followers started meanwhile are sent, so that
// whatever it stores from then on reaches them, and leaves reading each
// one's head to the workers. Follows that start during the ping wait for
// the next one.
func (b *Broker) flushStarting() {
	for {
		b.fmu.Lock()
		fs := b.starting
		b.starting = nil
		if len(fs) == 0 {
			b.flushing = false
		}
		b.fmu.Unlock()
		if len(fs) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(b.connContext(), b.stall)
		err := b.nc.FlushWithContext(ctx)
		if err != nil && context.Cause(ctx) != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		cancel()
		if err != nil {
			for _, f := range fs {
				f.fail(fmt.Errorf("subscribing: %w", err))
			}
			continue
		}
		for len(fs) > 0 {
			batch := fs[:min(len(fs), headBatch)]
			fs = fs[len(batch):]
			b.submit(func() { b.startMany(batch) })
		}
	}
}

// start is a worker's job: it reads f's head, calls ready and delivers
// what arrived meanwhile.
func (f *follower) start() {
	b := f.b
	f.mu.Lock()
	done := f.done
	f.mu.Unlock()
	if done {
		return
	}
	ctx, cancel := context.WithTimeout(b.connContext(), b.stall)
	head, err := b.head(ctx, f.channel)
	if err != nil && context.Cause(ctx) != nil && !errors.Is(err, context.Cause(ctx)) {
		err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
	}
	cancel()
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	if err != nil {
		f.endLocked(fmt.Errorf("reading the head: %w", err))
		f.mu.Unlock()
		b.forget(f)
		return
	}
	f.active, f.last = true, head
	f.ready(head)
	f.mu.Unlock()
	f.drain()
}

// A gap is a hole in a follower's messages before t, n publications
// long, which a worker fills from the stream.
type gap struct {
	t tail
	n int
}

// dispatch hands m, which arrived on the subscription of one of the
// broker's followers, to it: delivers it, or queues it behind the
// follower's work, or gives a hole before it to a worker.
func (b *Broker) dispatch(m *nats.Msg) {
	b.fmu.Lock()
	f := b.follows[m.Sub]
	b.fmu.Unlock()
	if f == nil {
		return // stopped, or not registered yet (see Follow)
	}
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	if f.busy {
		f.pending = append(f.pending, m)
		f.mu.Unlock()
		return
	}
	g, ended := f.handleLocked(m)
	if g != nil {
		f.busy = true
	}
	f.mu.Unlock()
	switch {
	case ended:
		b.forget(f)
	case g != nil:
		b.submit(func() { f.fill(*g) })
	}
}

// handleLocked delivers m if it is the follower's next message, skips it
// if it is at or before the last, and otherwise returns the hole before
// it, or ends the follower and reports ended. The caller holds f.mu and
// f is not done.
func (f *follower) handleLocked(m *nats.Msg) (g *gap, ended bool) {
	b := f.b
	t, err := parseStored(m.Subject, m.Header, m.Data)
	if b.drop != nil && err == nil && b.drop(t.pos) {
		return nil, false
	}
	last := f.last
	switch {
	case err != nil:
		err = fmt.Errorf("malformed message: %w", err)
	case t.pos.Epoch != last.Epoch:
		err = fmt.Errorf("message at %v: the channel's epoch changed (did the server lose its data?)", t.pos)
	case t.pos.Seq <= last.Seq:
		return nil, false // at or before the head, the marker, or filled in already
	}
	if err == nil && t.first() <= last.Seq+1 {
		var msgs []live.Message
		if msgs, err = t.messages(f.channel, last.Seq); err == nil {
			for _, m := range msgs {
				f.deliver(m)
			}
			f.last = t.pos
			return nil, false
		}
	} else if err == nil {
		// The stream republishes concurrent publications in the order
		// their ingest finishes, which is not always the order of their
		// positions; and a message may have been dropped. What t follows
		// is stored (t's position was granted only after it), so read it
		// from the stream; its own delivery comes later and is skipped.
		if t.pos.Seq-last.Seq <= fillMax {
			return &gap{t: t, n: int(t.pos.Seq - last.Seq)}, false
		}
		err = fmt.Errorf("%w: message at %v", errGap, t.pos)
	}
	return nil, f.endLocked(fmt.Errorf("after %v: %w", last, err))
}

// fill is a worker's job: it reads the publications of g from the
// stream, delivers them, then what arrived meanwhile.
func (f *follower) fill(g gap) {
	b := f.b
	ctx, cancel := context.WithTimeout(b.connContext(), b.stall)
	msgs, _, err := b.walk(ctx, f.channel, g.t, g.n)
	cancel()
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	if err != nil {
		f.endLocked(fmt.Errorf("after %v: %w: message at %v; reading those before it: %w", f.last, errGap, g.t.pos, err))
		f.mu.Unlock()
		b.forget(f)
		return
	}
	b.fills.Add(1)
	for _, m := range msgs {
		f.deliver(m)
	}
	f.last = g.t.pos
	f.mu.Unlock()
	f.drain()
}

// drain delivers the messages that queued while f was busy, until none
// is left (and f is no longer busy) or one needs a hole filled, which it
// then fills on the worker's goroutine it runs on.
func (f *follower) drain() {
	for {
		f.mu.Lock()
		if f.done {
			f.mu.Unlock()
			return
		}
		if len(f.pending) == 0 {
			f.busy, f.pending = false, nil
			f.mu.Unlock()
			return
		}
		m := f.pending[0]
		f.pending[0] = nil
		f.pending = f.pending[1:]
		g, ended := f.handleLocked(m)
		f.mu.Unlock()
		switch {
		case ended:
			f.b.forget(f)
			return
		case g != nil:
			f.fill(*g) // still busy
			return
		}
	}
}

// fillMax is the largest hole in a subscription's messages that it fills
// from the stream; a larger one ends it, and the Hub reads history.
const fillMax = walkMax

// dispatcher is the broker's goroutine that delivers what the followers'
// subscriptions receive.
func (b *Broker) dispatcher() {
	defer close(b.dispatched)
	full := false // the inbox was full since the last check for drops
	for {
		select {
		case <-b.ctx.Done():
			return
		case m := <-b.inbox:
			// nats.go drops a message only when the inbox is full, and
			// nothing but this loop empties it: after a drop, the inbox
			// is still full when this loop next takes a message.
			if len(b.inbox) >= cap(b.inbox)-1 {
				full = true
			}
			b.dispatch(m)
			if full && len(b.inbox) == 0 {
				full = false
				b.endDropped()
			}
		}
	}
}

// endDropped ends the followers whose subscriptions dropped messages.
func (b *Broker) endDropped() {
	n := b.failFollowers(errDropped, func(f *follower) bool {
		d, err := f.ns.Dropped()
		return err == nil && d > 0
	})
	if n > 0 {
		b.log.Warn("natsbroker: the nats client dropped messages; ending the subscriptions that lost some", "subscriptions", n)
	}
}

// A job is work for the broker's workers.
type job func()

// submit gives j to a worker, starting one if fewer than maxWorkers run
// and those that do are busy. After Close it drops j.
func (b *Broker) submit(j job) {
	b.jmu.Lock()
	if b.jobsClosed {
		b.jmu.Unlock()
		return // Close has ended every follower
	}
	b.jobs = append(b.jobs, j)
	start := b.workers < maxWorkers && b.workers < len(b.jobs)+b.busyWorkers
	if start {
		b.workers++
		b.wg.Add(1)
	}
	b.jmu.Unlock()
	if start {
		go b.work()
	}
}

// work runs jobs until none waits.
func (b *Broker) work() {
	defer b.wg.Done()
	for {
		b.jmu.Lock()
		if len(b.jobs) == 0 {
			b.workers--
			b.jmu.Unlock()
			return
		}
		j := b.jobs[0]
		b.jobs[0] = nil
		b.jobs = b.jobs[1:]
		if len(b.jobs) == 0 {
			b.jobs = nil
		}
		b.busyWorkers++
		b.jmu.Unlock()
		j()
		b.jmu.Lock()
		b.busyWorkers--
		b.jmu.Unlock()
	}
}

// watch is the broker's goroutine. Whenever the connection's status
// changes, and every StallTimeout/4, it checks the connection: if it is
// down or was re-established, publications waiting for an acknowledgement
// fail, and so do the followers that may have lost messages. While there
// are followers, each check also pings the server, and ends every
// follower if the pong does not come within StallTimeout.
func (b *Broker) watch() {
	defer close(b.done)
	t := time.NewTicker(b.stall / 4)
	defer t.Stop()
	status := b.status
	for {
		ping := false
		select {
		case <-b.ctx.Done():
			return
		case _, ok := <-status:
			if !ok {
				status = nil // not expected: the broker removes it after watch returns
			}
		case <-t.C:
			ping = true
		}
		status, reconnects := b.check()
		if !ping || status != nats.CONNECTED || b.followerCount() == 0 {
			continue
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(b.ctx, b.stall)
		err := b.nc.FlushWithContext(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && b.nc.Status() == nats.CONNECTED && b.nc.Stats().Reconnects == reconnects {
			err := fmt.Errorf("%w: no reply to a ping for %v", errStalled, time.Since(start).Round(time.Millisecond))
			b.stalls.Add(1) // before the followers hear of it
			n := b.failFollowers(err, func(*follower) bool { return true })
			b.log.Warn("natsbroker: server stalled; ending subscriptions", "err", err, "subscriptions", n)
		}
	}
}

func (b *Broker) followerCount() int {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	return len(b.follows)
}

// check ends what the connection's loss or re-establishment may have
// broken: the current connection context, and the followers started
// before. It returns the connection's status and reconnection count.
func (b *Broker) check() (nats.Status, uint64) {
	status, reconnects := b.nc.Status(), b.nc.Stats().Reconnects
	down := status != nats.CONNECTED
	var err error
	if down {
		err = fmt.Errorf("%w (%v)", errConnLost, status)
	} else {
		err = fmt.Errorf("%w: the connection was re-established, and messages may have been lost meanwhile", errConnLost)
	}
	b.mu.Lock()
	lost := b.connCtx.Err() == nil && (down || b.connGen < reconnects)
	if lost {
		b.connCancel(err)
	}
	b.mu.Unlock()
	if lost {
		b.connLosses.Add(1) // before the followers hear of it
	}
	n := b.failFollowers(err, func(f *follower) bool { return down || f.reconnects < reconnects })
	if lost {
		b.log.Warn("natsbroker: "+err.Error(), "status", status.String(), "subscriptions ended", n)
	}
	return status, reconnects
}

// connContext returns a context that lasts as long as the current
// connection: it ends when the connection is found down or
// re-established. While the connection is down, it has ended already.
func (b *Broker) connContext() context.Context {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.connCtx.Err() != nil && b.nc.Status() == nats.CONNECTED {
		b.connGen = b.nc.Stats().Reconnects
		b.connCtx, b.connCancel = context.WithCancelCause(b.ctx)
	}
	return b.connCtx
}
