package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/redis/go-redis/v9"
)

// A psConn is one pub/sub connection, shared by every subscription of the
// broker. It is never repaired: when it fails, its subscriptions fail and
// the broker replaces it, so that go-redis cannot reconnect it and
// resubscribe behind our back, losing the announcements in between.
type psConn struct {
	ps       *redis.PubSub
	lastRecv atomic.Int64 // UnixNano of the last reply read, or of the connection's creation
	received atomic.Bool  // some reply was read

	// Guarded by Broker.mu.
	chans map[string]*psChan // by pub/sub channel name
	used  bool               // a subscription was registered: the reader may dial
	dead  bool
}

// A psChan is one pub/sub channel on a psConn.
//
// Redis answers SUBSCRIBE and UNSUBSCRIBE in the order it receives them,
// so a confirmation is matched with the oldest command in pending. A
// subscription is active once the SUBSCRIBE sent for it (or before it,
// with no UNSUBSCRIBE in between) is confirmed. A confirmation that
// matches nothing means the connection was re-established, and kills it.
type psChan struct {
	subs       map[*sub]struct{}
	subscribed bool   // the last command sent was SUBSCRIBE
	sent       int    // SUBSCRIBE commands sent
	confirmed  int    // SUBSCRIBE commands confirmed
	pending    []bool // commands awaiting confirmation, oldest first: true for SUBSCRIBE
}

// A sub is one Subscribe call. The reader queues announcements for it;
// the Subscribe call's own goroutine delivers them.
type sub struct {
	*announce.Queue
	name   string        // pub/sub channel
	active chan struct{} // closed when the subscription is confirmed

	// Guarded by Broker.mu.
	conn      *psConn
	want      int // confirmations of psChan needed to be active
	activated bool
}

var errStalled = errors.New("redis pub/sub connection stalled")

func (b *Broker) newConn() *psConn {
	c := &psConn{ps: b.client.Subscribe(b.ctx), chans: make(map[string]*psChan)}
	c.lastRecv.Store(time.Now().UnixNano())
	return c
}

// failLocked fails every subscription on c. b.mu is held.
func (c *psConn) failLocked(err error) {
	for _, pc := range c.chans {
		for s := range pc.subs {
			s.Fail(err)
		}
	}
}

// kill fails every subscription on c and replaces c with a new connection,
// unless that happened already.
func (b *Broker) kill(c *psConn, cause error) {
	b.mu.Lock()
	if c.dead {
		b.mu.Unlock()
		return
	}
	c.dead = true
	c.failLocked(cause)
	if !b.closed {
		b.conn = b.newConn()
	}
	b.mu.Unlock()
	c.ps.Close()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// read is the broker's reader goroutine: it reads the current pub/sub
// connection and hands announcements to the subscriptions.
func (b *Broker) read() {
	defer b.wg.Done()
	failures := 0 // connections in a row that failed without a reply
	for {
		b.mu.Lock()
		c, closed, used := b.conn, b.closed, b.conn.used
		b.mu.Unlock()
		if closed {
			return
		}
		if !used {
			// A broker that only publishes needs no pub/sub connection.
			select {
			case <-b.ctx.Done():
				return
			case <-b.wake:
			}
			continue
		}
		msg, err := c.ps.Receive(b.ctx)
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			b.kill(c, fmt.Errorf("redis pub/sub connection: %w", err))
			if c.received.Load() {
				failures = 0
				continue
			}
			failures++
			// Redis is down: try again soon, or as soon as a Subscribe call
			// has dialled a new connection.
			t := time.NewTimer(min(50*time.Millisecond<<min(failures, 5), time.Second))
			select {
			case <-b.ctx.Done():
				t.Stop()
				return
			case <-b.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		c.lastRecv.Store(time.Now().UnixNano())
		c.received.Store(true)
		switch m := msg.(type) {
		case *redis.Message:
			b.mu.Lock()
			if pc := c.chans[m.Channel]; pc != nil && !c.dead {
				for s := range pc.subs {
					s.Push(m.Payload)
				}
			}
			b.mu.Unlock()
		case *redis.Subscription:
			b.confirm(c, m)
		}
	}
}

// confirm matches a SUBSCRIBE or UNSUBSCRIBE confirmation with the command
// it answers.
func (b *Broker) confirm(c *psConn, m *redis.Subscription) {
	b.mu.Lock()
	pc := c.chans[m.Channel]
	isSub := m.Kind == "subscribe"
	if c.dead || pc == nil || len(pc.pending) == 0 || pc.pending[0] != isSub || (!isSub && m.Kind != "unsubscribe") {
		b.mu.Unlock()
		b.kill(c, fmt.Errorf("redis pub/sub connection was re-established (unexpected %s %q)", m.Kind, m.Channel))
		return
	}
	pc.pending = pc.pending[1:]
	if isSub {
		pc.confirmed++
		for s := range pc.subs {
			if !s.activated && s.want <= pc.confirmed {
				s.activated = true
				close(s.active)
			}
		}
	} else if len(pc.subs) == 0 && len(pc.pending) == 0 {
		delete(c.chans, m.Channel)
	}
	b.mu.Unlock()
}

// ping is the broker's pinger goroutine: it pings the pub/sub connection
// when it is quiet and kills it when nothing, not even the pong, arrives
// for StallTimeout.
func (b *Broker) ping() {
	defer b.wg.Done()
	every := b.stall / 4
	t := time.NewTicker(every)
	defer t.Stop()
	var pinged *psConn // the connection last pinged, at pingedAt
	var pingedAt int64
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		c, idle := b.conn, len(b.conn.chans) == 0
		b.mu.Unlock()
		if idle {
			continue // nothing to lose; a new subscription's confirmation is checked like a pong
		}
		now, last := time.Now().UnixNano(), c.lastRecv.Load()
		waiting := pinged == c && pingedAt > last
		switch {
		case waiting && now-last >= int64(b.stall) && now-pingedAt >= int64(b.stall/2):
			b.kill(c, fmt.Errorf("%w: no reply to a ping for %v", errStalled, time.Duration(now-pingedAt).Round(time.Millisecond)))
		case !waiting && now-last >= int64(every):
			pinged, pingedAt = c, now
			ctx, cancel := context.WithTimeout(b.ctx, b.stall)
			err := c.ps.Ping(ctx)
			cancel()
			if err != nil && b.ctx.Err() == nil {
				b.kill(c, fmt.Errorf("redis pub/sub ping: %w", err))
			}
		}
	}
}

// register adds s to the current connection, subscribing to its channel
// if the connection is not subscribed (or is unsubscribing).
func (b *Broker) register(s *sub) error {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return live.ErrClosed
	}
	c := b.conn
	c.used = true
	pc := c.chans[s.name]
	if pc == nil {
		pc = &psChan{subs: make(map[*sub]struct{})}
		c.chans[s.name] = pc
	}
	send := !pc.subscribed
	if send {
		pc.subscribed = true
		pc.sent++
		pc.pending = append(pc.pending, true)
	}
	pc.subs[s] = struct{}{}
	s.conn, s.want = c, pc.sent
	if pc.confirmed >= s.want {
		s.activated = true
		close(s.active)
	}
	b.mu.Unlock()

	select {
	case b.wake <- struct{}{}:
	default:
	}
	if send {
		if err := c.ps.Subscribe(b.ctx, s.name); err != nil {
			b.kill(c, fmt.Errorf("redis SUBSCRIBE: %w", err))
		}
	}
	return nil
}

// unregister removes s, unsubscribing from its channel if s was the last.
func (b *Broker) unregister(s *sub) {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	c := s.conn
	pc := c.chans[s.name]
	send := false
	if pc != nil {
		delete(pc.subs, s)
		if len(pc.subs) == 0 && pc.subscribed && !c.dead && !b.closed {
			pc.subscribed = false
			pc.pending = append(pc.pending, false)
			send = true
		}
	}
	b.mu.Unlock()
	if send {
		if err := c.ps.Unsubscribe(b.ctx, s.name); err != nil {
			b.kill(c, fmt.Errorf("redis UNSUBSCRIBE: %w", err))
		}
	}
}

// Subscribe implements [live.Broker]. It subscribes to the channel's
// announcements, waits for Redis to confirm, then reads the head and calls
// ready, so every publication after the head is announced to it. It
// delivers announcements on the calling goroutine, skipping those up to
// the head and fetching large data from the stream. Anything out of turn
// (a gap, another epoch) and any failure of the shared pub/sub connection
// ends it with an error.
func (b *Broker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if b.isClosed() {
		return fmt.Errorf("live: subscribe %q: %w", channel, live.ErrClosed)
	}
	if ctx.Err() != nil {
		return nil
	}
	s := &sub{Queue: announce.New(), name: b.pubsubName(channel), active: make(chan struct{})}
	if err := b.register(s); err != nil {
		return fmt.Errorf("live: subscribe %q: %w", channel, err)
	}
	defer b.unregister(s)

	// Announcements that come before the subscription is in place stay
	// queued; they are sorted out against the head read below.
	if err := s.Await(ctx, s.active); err != nil {
		return fmt.Errorf("live: subscribe %q: %w", channel, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	head, err := b.head(ctx, channel)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("live: subscribe %q: reading the head: %w", channel, err)
	}
	ready(head)

	last := head
	err = s.Drain(ctx, func(a string) error { return b.announce(ctx, channel, &last, a, deliver) })
	if err != nil {
		return fmt.Errorf("live: subscribe %q after %v: %w", channel, last, err)
	}
	return nil
}

// announce delivers the publication an announcement describes if it is the
// one after *last, and advances *last.
func (b *Broker) announce(ctx context.Context, channel string, last *live.Position, a string, deliver func(live.Message)) error {
	epoch, rest, ok1 := strings.Cut(a, " ")
	seqPart, rest, ok2 := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if !ok1 || !ok2 || err != nil || rest == "" || (rest[0] != 'd' && rest[0] != 'r') {
		return fmt.Errorf("malformed announcement %.60q on %s", a, b.pubsubName(channel))
	}
	switch {
	case epoch != last.Epoch:
		return fmt.Errorf("announcement at %d.%s: the channel's epoch changed (did Redis lose its data?)", seq, epoch)
	case seq <= last.Seq:
		return nil // at or before the head, or a repeat
	case seq != last.Seq+1:
		return fmt.Errorf("%w: announcement at %d.%s", errGap, seq, epoch)
	}
	pos := live.Position{Epoch: epoch, Seq: seq}
	if rest[0] == 'd' {
		deliver(live.Message{Channel: channel, Pos: pos, Data: []byte(rest[1:])})
		*last = pos
		return nil
	}
	// Read the publication from the stream, with those after it, which
	// are announced already or soon will be: their announcements are then
	// skipped as old. One round trip serves a burst of large publications.
	msgs, err := b.since(ctx, channel, *last, fetchAhead)
	if errors.Is(err, live.ErrGone) {
		return fmt.Errorf("publication %v left history before it could be read", pos)
	}
	if err != nil {
		return fmt.Errorf("reading publication %v: %w", pos, err)
	}
	for _, m := range msgs {
		deliver(m)
		*last = m.Pos
	}
	return nil
}

// fetchAhead is how many publications a subscription reads from the stream
// at once when an announcement comes without data.
const fetchAhead = 16
