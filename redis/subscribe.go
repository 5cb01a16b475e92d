package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/redis/go-redis/v9"
)

// A psConn is one pub/sub connection, shared by every subscription of the
// broker to channels on one Redis server (on a cluster, one master). It
// is never repaired: when it fails, its subscriptions fail and the broker
// forgets it, so that go-redis cannot reconnect it and resubscribe behind
// our back, losing the announcements in between. Its reader goroutine
// runs from its first SUBSCRIBE until it fails or the broker closes.
type psConn struct {
	ps       *redis.PubSub
	addr     string       // its key in Broker.conns
	lastRecv atomic.Int64 // UnixNano of the last reply read, or of the connection's creation

	// Guarded by Broker.mu.
	chans map[string]*psChan // by pub/sub channel name
	dead  bool

	// Owned by the pinger.
	pingedAt int64 // UnixNano of the last ping sent; 0: none
}

// A psChan is one pub/sub channel on a psConn.
//
// Redis answers SUBSCRIBE and UNSUBSCRIBE in the order it receives them,
// so a confirmation is matched with the oldest command in pending. A
// subscription is active once the SUBSCRIBE sent for it (or before it,
// with no UNSUBSCRIBE in between) is confirmed. A confirmation that
// matches nothing means the connection was re-established (or, on a
// cluster, that the master gave the channel's slot away), and kills it.
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

// newConn returns a connection for the server at addr, which dials when
// its first SUBSCRIBE is sent. On a cluster go-redis dials the master of
// that first channel's slot, which is the master at addr.
func (b *Broker) newConn(addr string) *psConn {
	var ps *redis.PubSub
	if b.cluster != nil {
		ps = b.cluster.SSubscribe(b.ctx)
	} else {
		ps = b.client.Subscribe(b.ctx)
	}
	c := &psConn{ps: ps, addr: addr, chans: make(map[string]*psChan)}
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

// kill fails every subscription on c and forgets c, unless that happened
// already. The next Subscribe call makes a new connection.
func (b *Broker) kill(c *psConn, cause error) {
	b.mu.Lock()
	if c.dead {
		b.mu.Unlock()
		return
	}
	c.dead = true
	c.failLocked(cause)
	if b.conns[c.addr] == c {
		delete(b.conns, c.addr)
	}
	b.mu.Unlock()
	c.ps.Close()
	if b.cluster != nil {
		// The master may be gone, or the slot elsewhere: have the client
		// learn the cluster's layout again before the next Subscribe call.
		b.cluster.ReloadState(b.ctx)
	}
}

// read is c's reader goroutine: it reads c and hands announcements to the
// subscriptions, until c fails or the broker closes.
func (b *Broker) read(c *psConn) {
	defer b.wg.Done()
	for {
		msg, err := c.ps.Receive(b.ctx)
		if err != nil {
			if b.ctx.Err() == nil {
				b.kill(c, fmt.Errorf("redis pub/sub connection: %w", err))
			}
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
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

// confirm matches a SUBSCRIBE or UNSUBSCRIBE confirmation (SSUBSCRIBE or
// SUNSUBSCRIBE on a cluster) with the command it answers.
func (b *Broker) confirm(c *psConn, m *redis.Subscription) {
	b.mu.Lock()
	pc := c.chans[m.Channel]
	isSub := m.Kind == "subscribe" || m.Kind == "ssubscribe"
	isUnsub := m.Kind == "unsubscribe" || m.Kind == "sunsubscribe"
	if c.dead || pc == nil || len(pc.pending) == 0 || pc.pending[0] != isSub || (!isSub && !isUnsub) {
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

// ping is the broker's pinger goroutine: it pings each pub/sub connection
// in use when it is quiet and kills it when nothing, not even the pong,
// arrives for StallTimeout.
func (b *Broker) ping() {
	defer b.wg.Done()
	every := b.stall / 4
	t := time.NewTicker(every)
	defer t.Stop()
	var conns []*psConn
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		conns = conns[:0]
		b.mu.Lock()
		for _, c := range b.conns {
			// An idle connection has nothing to lose; a new
			// subscription's confirmation is checked like a pong.
			if len(c.chans) > 0 {
				conns = append(conns, c)
			}
		}
		b.mu.Unlock()
		for _, c := range conns {
			b.check(c, every)
		}
		clear(conns)
	}
}

// check pings c if it has been quiet for every, and kills it if it has
// not answered a ping for StallTimeout.
func (b *Broker) check(c *psConn, every time.Duration) {
	now, last := time.Now().UnixNano(), c.lastRecv.Load()
	waiting := c.pingedAt > last
	switch {
	case waiting && now-last >= int64(b.stall) && now-c.pingedAt >= int64(b.stall/2):
		b.kill(c, fmt.Errorf("%w: no reply to a ping for %v", errStalled, time.Duration(now-c.pingedAt).Round(time.Millisecond)))
	case !waiting && now-last >= int64(every):
		c.pingedAt = now
		ctx, cancel := context.WithTimeout(b.ctx, b.stall)
		err := c.ps.Ping(ctx)
		cancel()
		if err != nil && b.ctx.Err() == nil {
			b.kill(c, fmt.Errorf("redis pub/sub ping: %w", err))
		}
	}
}

// register adds s to the connection for its channel's server, making the
// connection if there is none, and subscribes to the channel if the
// connection is not subscribed (or is unsubscribing).
func (b *Broker) register(ctx context.Context, s *sub) error {
	addr := ""
	if b.cluster != nil {
		master, err := b.cluster.MasterForKey(ctx, s.name)
		if err != nil {
			return fmt.Errorf("finding the channel's master: %w", err)
		}
		addr = master.Options().Addr
	}

	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return live.ErrClosed
	}
	c := b.conns[addr]
	start := c == nil
	if start {
		c = b.newConn(addr)
		b.conns[addr] = c
		b.wg.Add(1) // its reader, started below
	}
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

	if send {
		var err error
		if b.cluster != nil {
			err = c.ps.SSubscribe(b.ctx, s.name)
		} else {
			err = c.ps.Subscribe(b.ctx, s.name)
		}
		if err != nil {
			b.kill(c, fmt.Errorf("redis SUBSCRIBE: %w", err))
		}
	}
	if start {
		// Only now: on a cluster, a read before the first SSUBSCRIBE
		// would dial a random master.
		go b.read(c)
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
		var err error
		if b.cluster != nil {
			err = c.ps.SUnsubscribe(b.ctx, s.name)
		} else {
			err = c.ps.Unsubscribe(b.ctx, s.name)
		}
		if err != nil {
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
	if err := b.checkName(channel); err != nil {
		return fmt.Errorf("live: subscribe %q: %w", channel, err)
	}
	s := &sub{Queue: announce.New(), name: b.pubsubName(channel), active: make(chan struct{})}
	if err := b.register(ctx, s); err != nil {
		if ctx.Err() != nil {
			return nil
		}
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
// one after *last, and advances *last (see announce.Deliver); the data of
// a large one is read from the stream.
func (b *Broker) announce(ctx context.Context, channel string, last *live.Position, a string, deliver func(live.Message)) error {
	read := func(after live.Position) ([]live.Message, error) { return b.since(ctx, channel, after, fetchAhead) }
	return announce.Deliver(channel, last, a, "the stream", read, deliver)
}

// fetchAhead is how many publications a subscription reads from the stream
// at once when an announcement comes without data.
const fetchAhead = 16
