package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go"
)

var (
	errStalled  = errors.New("nats connection stalled")
	errConnLost = errors.New("nats connection lost")
	errGap      = errors.New("publications missing from the subscription")
)

// A sub is one Subscribe call, registered with the broker so that the
// watcher can end it when the connection fails.
type sub struct {
	ctx        context.Context // ends when the caller's context ends or the sub fails
	cancel     context.CancelCauseFunc
	reconnects uint64 // the connection's reconnection count when the sub started
}

// fail ends the Subscribe call with err, unless it has ended already.
func (s *sub) fail(err error) { s.cancel(err) }

// register adds a Subscribe call with the context ctx.
func (b *Broker) register(ctx context.Context) (*sub, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	s := &sub{ctx: sctx, cancel: cancel, reconnects: b.nc.Stats().Reconnects}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		cancel(live.ErrClosed)
		return nil, live.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.subscribers.Add(1)
	return s, nil
}

func (b *Broker) unregister(s *sub) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
	b.subscribers.Add(-1)
	s.cancel(nil)
}

// failSubs ends the Subscribe calls that match with err.
func (b *Broker) failSubs(err error, match func(*sub) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for s := range b.subs {
		if match(s) {
			s.fail(err)
			n++
		}
	}
	return n
}

// watch is the broker's goroutine. Whenever the connection's status
// changes, and every StallTimeout/4, it checks the connection: if it is
// down or was re-established, publications waiting for an acknowledgement
// fail, and so do the subscriptions that may have lost messages. While
// there are subscriptions, each check also pings the server, and ends every
// subscription if the pong does not come within StallTimeout.
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
		if !ping || status != nats.CONNECTED || b.subscribers.Load() == 0 {
			continue
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(b.ctx, b.stall)
		err := b.nc.FlushWithContext(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && b.nc.Status() == nats.CONNECTED && b.nc.Stats().Reconnects == reconnects {
			err := fmt.Errorf("%w: no reply to a ping for %v", errStalled, time.Since(start).Round(time.Millisecond))
			n := b.failSubs(err, func(*sub) bool { return true })
			b.stalls.Add(1)
			b.log.Warn("natsbroker: server stalled; ending subscriptions", "err", err, "subscriptions", n)
		}
	}
}

// check ends what the connection's loss or re-establishment may have
// broken: the current connection context, and the subscriptions made
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
	n := b.failSubs(err, func(s *sub) bool { return down || s.reconnects < reconnects })
	if lost {
		b.connLosses.Add(1)
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

// Subscribe implements [live.Broker]. It subscribes to the channel's
// republished messages, makes sure the server has the subscription, then
// reads the channel's latest message and calls ready with its position, so
// every publication after the head reaches the subscription. It delivers on
// the calling goroutine, skipping messages up to the head. A message out of
// turn (a gap, another epoch) and any failure of the connection end it with
// an error.
func (b *Broker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if b.isClosed() {
		return fmt.Errorf("live: subscribe %q: %w", channel, live.ErrClosed)
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := live.ValidChannel(channel); err != nil {
		return fmt.Errorf("live: subscribe: %w", err)
	}
	s, err := b.register(ctx)
	if err != nil {
		return fmt.Errorf("live: subscribe %q: %w", channel, err)
	}
	defer b.unregister(s)
	// failed returns why s ended, or nil if the caller's context did.
	failed := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		if cause := context.Cause(s.ctx); cause != nil && s.ctx.Err() != nil {
			err = cause
		}
		return fmt.Errorf("live: subscribe %q: %w", channel, err)
	}

	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("live: subscribe %q: %w (%v)", channel, errConnLost, st)
	}
	// An asynchronous subscription into a queue of our own: a synchronous
	// one holds a channel of SubChanLen messages (64k, 512 KiB) for each
	// channel followed, whether or not anything is published.
	q := newMsgQueue()
	ns, err := b.nc.Subscribe(b.announcements(channel), q.push)
	if err != nil {
		return failed(err)
	}
	defer ns.Unsubscribe()
	// Once the server answers a ping sent after SUB, it has the
	// subscription: whatever it stores from now on reaches ns.
	fctx, cancel := context.WithTimeout(s.ctx, b.stall)
	err = b.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return failed(fmt.Errorf("subscribing: %w", err))
	}
	head, err := b.head(s.ctx, channel)
	if err != nil {
		return failed(fmt.Errorf("reading the head: %w", err))
	}
	ready(head)

	last := head
	for {
		m, err := q.next(s.ctx)
		if err != nil {
			return failed(err)
		}
		t, err := parseStored(m.Subject, m.Header, m.Data)
		if b.drop != nil && err == nil && b.drop(t.pos) {
			continue
		}
		switch {
		case err != nil:
			err = fmt.Errorf("malformed message: %w", err)
		case t.pos.Epoch != last.Epoch:
			err = fmt.Errorf("message at %v: the channel's epoch changed (did the server lose its data?)", t.pos)
		case t.pos.Seq <= last.Seq:
			continue // at or before the head, the marker, or filled in already
		}
		if err != nil {
			return failed(fmt.Errorf("after %v: %w", last, err))
		}
		if t.first() <= last.Seq+1 {
			msgs, err := t.messages(channel, last.Seq)
			if err != nil {
				return failed(fmt.Errorf("after %v: %w", last, err))
			}
			for _, m := range msgs {
				deliver(m)
			}
			last = t.pos
			continue
		}
		// The stream republishes concurrent publications in the order
		// their ingest finishes, which is not always the order of their
		// positions; and a message may have been dropped. What t follows
		// is stored (t's position was granted only after it), so read it
		// from the stream; its own delivery comes later and is skipped.
		if t.pos.Seq-last.Seq > fillMax {
			return failed(fmt.Errorf("after %v: %w: message at %v", last, errGap, t.pos))
		}
		msgs, _, err := b.walk(s.ctx, channel, t, int(t.pos.Seq-last.Seq))
		if err != nil {
			return failed(fmt.Errorf("after %v: %w: message at %v; reading those before it: %w", last, errGap, t.pos, err))
		}
		b.fills.Add(1)
		for _, m := range msgs {
			deliver(m)
		}
		last = t.pos
	}
}

// fillMax is the largest hole in a subscription's messages that it fills
// from the stream; a larger one ends it, and the Hub reads history.
const fillMax = walkMax

// A msgQueue holds a subscription's messages until its Subscribe call
// takes them: unbounded here, bounded by the subscription's pending
// limits in the NATS client, which report a slow consumer beyond them.
type msgQueue struct {
	wake chan struct{} // has room for one token: a push leaves one there

	mu   sync.Mutex // guards msgs
	msgs []*nats.Msg
}

func newMsgQueue() *msgQueue { return &msgQueue{wake: make(chan struct{}, 1)} }

// push is the subscription's handler.
func (q *msgQueue) push(m *nats.Msg) {
	q.mu.Lock()
	q.msgs = append(q.msgs, m)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next returns the oldest message, waiting for one until ctx ends.
func (q *msgQueue) next(ctx context.Context) (*nats.Msg, error) {
	for {
		q.mu.Lock()
		if len(q.msgs) > 0 {
			m := q.msgs[0]
			q.msgs[0] = nil
			q.msgs = q.msgs[1:]
			if len(q.msgs) == 0 {
				q.msgs = nil
			}
			q.mu.Unlock()
			return m, nil
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}
