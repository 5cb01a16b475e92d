package pgbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// An lchan is a channel the listener must LISTEN to: it has subscribers.
type lchan struct {
	subs      map[*sub]struct{}
	listening bool // the current connection is listening to it
}

// A sub is one Subscribe call. The listener queues announcements for it;
// the Subscribe call's own goroutine delivers them.
type sub struct {
	*announce.Queue
	channel string
	active  chan struct{} // closed once the listener is listening to the channel

	activated bool // guarded by Broker.mu
}

var (
	errStalled = errors.New("postgres listening connection stalled")
)

// failLocked fails every subscription and forgets them: the next
// connection starts with what new Subscribe calls register. b.mu is held.
func (b *Broker) failLocked(err error) {
	for _, lc := range b.chans {
		for s := range lc.subs {
			s.Fail(err)
		}
	}
	b.chans = make(map[string]*lchan)
	b.dirty = false
}

func (b *Broker) fail(err error) {
	b.mu.Lock()
	b.failLocked(err)
	b.mu.Unlock()
}

// changedLocked tells the listener that chans changed. b.mu is held.
func (b *Broker) changedLocked() {
	b.dirty = true
	if b.interrupt != nil {
		b.interrupt()
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// activateLocked records that the connection listens to lc's channel and
// activates its subscriptions. Broker.mu is held.
func (lc *lchan) activateLocked() {
	lc.listening = true
	for s := range lc.subs {
		if !s.activated {
			s.activated = true
			close(s.active)
		}
	}
}

// register adds s; it becomes active at once if the listener is listening
// to its channel, else once it is.
func (b *Broker) register(s *sub) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return live.ErrClosed
	}
	lc := b.chans[s.channel]
	if lc == nil {
		lc = &lchan{subs: make(map[*sub]struct{})}
		b.chans[s.channel] = lc
	}
	lc.subs[s] = struct{}{}
	if lc.listening {
		s.activated = true
		close(s.active)
	} else {
		b.changedLocked()
	}
	return nil
}

// unregister removes s, unless a failure removed it already; the listener
// stops listening to a channel without subscriptions.
func (b *Broker) unregister(s *sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lc := b.chans[s.channel]
	if lc == nil {
		return
	}
	if _, ok := lc.subs[s]; !ok {
		return
	}
	delete(lc.subs, s)
	if len(lc.subs) == 0 {
		delete(b.chans, s.channel)
		b.changedLocked()
	}
}

// listen is the broker's listener goroutine. It connects once a
// subscription needs it, keeps the connection's LISTENs in step with the
// subscriptions, hands notifications to them, and pings. When the
// connection fails it fails every subscription and connects again.
func (b *Broker) listen() {
	defer b.wg.Done()
	failures := 0 // connection attempts in a row that failed
	for {
		b.mu.Lock()
		closed, idle := b.closed, len(b.chans) == 0
		b.mu.Unlock()
		if closed {
			return
		}
		if idle {
			// A broker that only publishes needs no listening connection.
			select {
			case <-b.ctx.Done():
				return
			case <-b.wake:
			}
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.stall)
		conn, err := pgconn.ConnectConfig(ctx, b.lcfg)
		cancel()
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			b.fail(fmt.Errorf("connecting the listener: %w", err))
			failures++
			// The server is down: its subscribers fail (the Hub retries with
			// its own backoff); new ones wait for the next attempt.
			t := time.NewTimer(min(50*time.Millisecond<<min(failures, 5), time.Second))
			select {
			case <-b.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		failures = 0
		b.listens.Add(1)
		err = b.serve(conn)
		ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
		conn.Close(ctx)
		cancel()
		if b.ctx.Err() != nil {
			return
		}
		b.failures.Add(1)
		if errors.Is(err, errStalled) {
			b.stalls.Add(1)
		}
		b.log.Warn("pgbroker: listening connection lost; subscriptions end and resubscribe", "schema", b.schema, "err", err)
		b.fail(err)
	}
}

// serve runs one listening connection until it fails or the broker
// closes, and returns why it failed.
func (b *Broker) serve(conn *pgconn.PgConn) error {
	listened := make(map[string]bool) // channels this connection LISTENs to
	last := time.Now()                // of the last reply from the server
	pingEvery := b.stall / 4
	for {
		// Bring the LISTENs in step with the subscriptions.
		b.mu.Lock()
		b.dirty = false
		var add []string
		var cmds strings.Builder
		for ch, lc := range b.chans {
			switch {
			case !listened[ch]:
				add = append(add, ch)
				cmds.WriteString("LISTEN " + pgx.Identifier{b.notifyName(ch)}.Sanitize() + ";")
			case !lc.listening:
				// Left and joined again while the connection kept listening.
				lc.activateLocked()
			}
		}
		var remove []string
		for ch := range listened {
			if b.chans[ch] == nil {
				remove = append(remove, ch)
				cmds.WriteString("UNLISTEN " + pgx.Identifier{b.notifyName(ch)}.Sanitize() + ";")
			}
		}
		b.mu.Unlock()
		if cmds.Len() > 0 {
			ctx, cancel := context.WithTimeout(b.ctx, b.stall)
			_, err := conn.Exec(ctx, cmds.String()).ReadAll()
			cancel()
			if b.ctx.Err() != nil {
				return nil
			}
			if err != nil {
				return fmt.Errorf("postgres LISTEN: %w", err)
			}
			last = time.Now()
			for _, ch := range remove {
				delete(listened, ch)
			}
			b.mu.Lock()
			for _, ch := range add {
				listened[ch] = true
				if lc := b.chans[ch]; lc != nil {
					lc.activateLocked()
				}
			}
			b.mu.Unlock()
		}

		// Wait for notifications, a change of subscriptions, or the time to
		// ping.
		ctx, cancel := context.WithDeadline(b.ctx, last.Add(pingEvery))
		b.mu.Lock()
		if b.dirty {
			b.mu.Unlock()
			cancel()
			continue
		}
		b.interrupt = cancel
		b.mu.Unlock()
		err := conn.WaitForNotification(ctx)
		b.mu.Lock()
		b.interrupt = nil
		b.mu.Unlock()
		cancel()
		switch {
		case b.ctx.Err() != nil:
			return nil
		case err == nil:
			last = time.Now()
			continue
		case conn.IsClosed():
			return fmt.Errorf("postgres listening connection: %w", err)
		case time.Since(last) < pingEvery:
			continue // interrupted by a change of subscriptions
		}
		ctx, cancel = context.WithDeadline(b.ctx, last.Add(b.stall))
		err = conn.Ping(ctx)
		cancel()
		switch {
		case b.ctx.Err() != nil:
			return nil
		case err != nil && !time.Now().Before(last.Add(b.stall)):
			return fmt.Errorf("%w: no reply for %v", errStalled, time.Since(last).Round(time.Millisecond))
		case err != nil:
			return fmt.Errorf("postgres listening connection: %w", err)
		}
		last = time.Now()
	}
}

// dispatch is the listening connection's notification handler. It runs on
// the listener goroutine, inside the connection's reads, and only queues.
func (b *Broker) dispatch(_ *pgconn.PgConn, n *pgconn.Notification) {
	channel, _, _ := strings.Cut(n.Payload, " ")
	b.mu.Lock()
	defer b.mu.Unlock()
	lc := b.chans[channel]
	if lc == nil || n.Channel != b.notifyName(channel) {
		return
	}
	for s := range lc.subs {
		s.Push(n.Payload)
	}
}

// Subscribe implements [live.Broker]. It waits until the listening
// connection is listening to the channel, then reads the head and calls
// ready, so every publication committed after the head is announced to it.
// It delivers announcements on the calling goroutine, skipping those up to
// the head and reading large data from the table. Anything out of turn (a
// gap, another epoch) and any failure of the listening connection ends it
// with an error.
func (b *Broker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if err := live.ValidChannel(channel); err != nil {
		return err
	}
	if b.isClosed() {
		return fmt.Errorf("live: subscribe %q: %w", channel, live.ErrClosed)
	}
	if ctx.Err() != nil {
		return nil
	}
	s := &sub{Queue: announce.New(), channel: channel, active: make(chan struct{})}
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
		if err := s.Failure(); err != nil {
			return fmt.Errorf("live: subscribe %q: %w", channel, err)
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
// one after *last, and advances *last. An announcement is "<channel> "
// and then one of announce.Deliver's; the data of a large one is read
// from the table.
func (b *Broker) announce(ctx context.Context, channel string, last *live.Position, a string, deliver func(live.Message)) error {
	_, rest, _ := strings.Cut(a, " ")
	read := func(after live.Position) ([]live.Message, error) { return b.since(ctx, channel, after, fetchAhead) }
	return announce.Deliver(channel, last, rest, "the table", read, deliver)
}

// fetchAhead is how many publications a subscription reads from the table
// at once when an announcement comes without data.
const fetchAhead = 16
