package pgbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/go-live/live/internal/follow"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Following a channel costs no goroutine. The listener goroutine LISTENs
// in batches, and delivers each announcement that carries its data and
// follows the last position straight from the connection's reads. A
// follow is only handed to a goroutine of its own while it has work that
// needs the database: reading its head (one goroutine, for every follow
// waiting, in batches), or reading large data from the table. Meanwhile
// its announcements queue behind that work (a backlog), so they keep
// their order, and the listener never waits for one follow's I/O.

// An lchan is a channel followed on this broker, with its followers and
// the state of its LISTEN. All its fields are guarded by Broker.mu.
type lchan struct {
	name      string
	first     *follower // the followers, linked through next
	listening bool      // the last LISTEN or UNLISTEN completed for it was LISTEN
	sending   bool      // a LISTEN or UNLISTEN for it is in flight
	queued    bool      // on Broker.todo
}

// A follower is one Follow call.
type follower struct {
	b *Broker

	// Guarded by Broker.mu.
	lc   *lchan    // nil once stopped or ended
	next *follower // in lc's list
	last live.Position
	wait *backlog // non-nil while announcements queue instead of being delivered by the listener

	mu      sync.Mutex // held while a callback runs; guards shut
	shut    bool
	ready   func(live.Position)
	deliver func(live.Message)
	ended   func(error)
}

// A backlog holds a follower's announcements, oldest first, while it
// waits for its LISTEN, for its head, or for the table.
type backlog struct {
	q     []string // announcements without their "<channel> "
	bytes int
	phase phase
}

type phase uint8

const (
	awaitListen phase = iota // the channel's LISTEN has not completed
	awaitHead                // listening; the head is to be read
	working                  // ready was called; a goroutine delivers q
)

// Batches: LISTEN and UNLISTEN statements sent in one round trip, and
// channels whose heads are read in one query. A server that checks its
// LISTENs one by one (PostgreSQL 15 does, for each LISTEN and each
// notification) takes longer for each LISTEN the more it has: the
// listener halves its batches while one takes more than an eighth of
// StallTimeout, so that no round trip nears the bound that takes the
// connection for stalled.
const (
	maxListens = 1024
	minListens = 16
	maxHeads   = 2048
)

var (
	errStalled = errors.New("postgres listening connection stalled")

	// errRead tells the listener that an announcement's data is in the
	// table, which a goroutine of the follow's must read.
	errRead = errors.New("the data must be read from the table")
)

func needRead(live.Position) ([]live.Message, error) { return nil, errRead }

// callReady, callDeliver and callEnd call the follow's callbacks unless
// it was stopped or ended; callEnd shuts it.
func (f *follower) callReady(p live.Position) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.shut {
		f.ready(p)
	}
}

func (f *follower) callDeliver(m live.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.shut {
		f.deliver(m)
	}
}

func (f *follower) callEnd(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.shut {
		f.shut = true
		f.ended(err)
	}
}

// stop is the stop function Follow returns.
func (f *follower) stop() {
	f.mu.Lock()
	f.shut = true
	f.mu.Unlock()
	f.b.mu.Lock()
	f.b.unlinkLocked(f)
	f.b.mu.Unlock()
}

// Subscribe implements [live.Broker] with Follow.
func (b *Broker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	start := func(ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
		return b.Follow(channel, ready, deliver, ended)
	}
	return follow.Subscribe(ctx, start, ready, deliver)
}

// Follow implements [live.Follower]. Once the listening connection is
// listening to the channel, it reads the head and calls ready, so every
// publication committed after the head is announced to it; ready comes
// from a goroutine that reads the heads of the channels that became
// active together in one query. Announcements that carry their data are
// delivered from the listener goroutine, under a lock of the broker's:
// deliver must only queue, and not call Follow. Large data is read from the table on a
// goroutine of the follow's, which runs while it has such reads to do.
// Anything out of turn (a gap, another epoch), a backlog past its
// bounds and any failure of the listening connection end it with an
// error.
func (b *Broker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (stop func(), err error) {
	if err := live.ValidChannel(channel); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, fmt.Errorf("live: follow %q: %w", channel, live.ErrClosed)
	}
	lc := b.chans[channel]
	if lc == nil {
		lc = &lchan{name: channel}
		b.chans[channel] = lc
		b.queueLocked(lc)
	}
	f := &follower{b: b, lc: lc, next: lc.first, wait: &backlog{}, ready: ready, deliver: deliver, ended: ended}
	lc.first = f
	if lc.listening && !lc.sending {
		b.awaitHeadLocked(f)
	}
	return f.stop, nil
}

// unlinkLocked takes f off its channel, unless it is off already, and
// drops its backlog; the listener stops listening to a channel without
// followers. Broker.mu is held.
func (b *Broker) unlinkLocked(f *follower) {
	lc := f.lc
	if lc == nil {
		return
	}
	for p := &lc.first; *p != nil; p = &(*p).next {
		if *p == f {
			*p = f.next
			break
		}
	}
	f.lc, f.next, f.wait = nil, nil, nil
	if lc.first != nil {
		return
	}
	if lc.listening || lc.sending {
		b.queueLocked(lc)
	} else if b.chans[lc.name] == lc {
		delete(b.chans, lc.name)
	}
}

// end ends f with err, unless it was stopped or ended.
func (b *Broker) end(f *follower, err error) {
	b.mu.Lock()
	b.unlinkLocked(f)
	b.mu.Unlock()
	f.callEnd(err)
}

// failLocked takes every follower off and returns them, for the caller
// to end with endAll once it has let go of Broker.mu: the next connection
// starts with what new Follow calls register.
func (b *Broker) failLocked() []ending {
	var all []ending
	for _, lc := range b.chans {
		for f := lc.first; f != nil; f = f.next {
			all = append(all, ending{f, lc.name})
		}
	}
	for _, e := range all {
		e.f.lc, e.f.next, e.f.wait = nil, nil, nil
	}
	b.chans = make(map[string]*lchan)
	b.todo, b.heads = nil, nil
	return all
}

// An ending is a follower taken off its channel, to be ended.
type ending struct {
	f       *follower
	channel string
}

// fail ends every follow with err.
func (b *Broker) fail(err error) {
	b.mu.Lock()
	all := b.failLocked()
	b.mu.Unlock()
	endAll(all, err)
}

func endAll(all []ending, err error) {
	for _, e := range all {
		e.f.callEnd(fmt.Errorf("live: follow %q: %w", e.channel, err))
	}
}

// queueLocked puts lc on the listener's list of channels whose LISTEN
// may have to change, and wakes the listener. Broker.mu is held.
func (b *Broker) queueLocked(lc *lchan) {
	if lc.queued {
		return
	}
	lc.queued = true
	b.todo = append(b.todo, lc)
	if b.interrupt != nil {
		b.interrupt()
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// awaitHeadLocked puts f, whose channel is listened to, on the list of
// follows whose heads are to be read, and starts the head reader unless
// it runs. Broker.mu is held.
func (b *Broker) awaitHeadLocked(f *follower) {
	f.wait.phase = awaitHead
	b.heads = append(b.heads, f)
	if !b.reading {
		b.reading = true
		b.wg.Add(1)
		go b.readHeads()
	}
}

// takeListensLocked takes up to limit channels off the listener's list
// whose LISTEN must change, marks them in flight, and returns them with
// the statements that change them. Broker.mu is held.
func (b *Broker) takeListensLocked(limit int) ([]*lchan, string) {
	var batch []*lchan
	var cmds strings.Builder
	n := 0
	for ; n < len(b.todo) && len(batch) < limit; n++ {
		lc := b.todo[n]
		b.todo[n] = nil
		lc.queued = false
		if b.chans[lc.name] != lc {
			continue // forgotten before its LISTEN was sent
		}
		want := lc.first != nil
		if want == lc.listening {
			continue
		}
		lc.sending = true
		batch = append(batch, lc)
		if want {
			cmds.WriteString("LISTEN ")
		} else {
			cmds.WriteString("UNLISTEN ")
		}
		cmds.WriteString(pgx.Identifier{b.notifyName(lc.name)}.Sanitize())
		cmds.WriteString(";")
	}
	b.todo = b.todo[n:]
	if len(b.todo) == 0 {
		b.todo = nil
	}
	return batch, cmds.String()
}

// sentLocked records that the statements for batch completed: the
// followers of a channel now listened to wait for its head, a channel
// no longer listened to is forgotten, and one whose followers came or
// went meanwhile goes back on the list. Broker.mu is held.
func (b *Broker) sentLocked(batch []*lchan) {
	for _, lc := range batch {
		lc.sending = false
		if b.chans[lc.name] != lc {
			continue // failed meanwhile (the broker closed)
		}
		lc.listening = !lc.listening
		want := lc.first != nil
		switch {
		case want && lc.listening:
			for f := lc.first; f != nil; f = f.next {
				if f.wait != nil && f.wait.phase == awaitListen {
					b.awaitHeadLocked(f)
				}
			}
		case !want && !lc.listening:
			delete(b.chans, lc.name)
		default:
			b.queueLocked(lc)
		}
	}
}

// listen is the broker's listener goroutine. It connects once a follow
// needs it, keeps the connection's LISTENs in step with the follows,
// hands notifications to them, and pings. When the connection fails it
// ends every follow and connects again.
func (b *Broker) listen() {
	defer b.wg.Done()
	failures := 0 // connection attempts in a row that failed
	for {
		b.mu.Lock()
		closed, idle := b.closed.Load(), len(b.chans) == 0
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
			// The server is down: its followers end (the Hub retries with
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
		b.log.Warn("pgbroker: listening connection lost; follows end and follow again", "schema", b.schema, "err", err)
		b.fail(err)
	}
}

// serve runs one listening connection until it fails or the broker
// closes, and returns why it failed. It starts with every channel
// followed on the list of LISTENs to send, as failing the last
// connection forgot them all.
func (b *Broker) serve(conn *pgconn.PgConn) error {
	last := time.Now() // of the last reply from the server
	pingEvery := b.stall / 4
	listens := maxListens // in the next batch, at most
	for {
		// Bring the LISTENs in step with the follows, a batch per round
		// trip: Follow calls that come meanwhile make the next batch.
		b.mu.Lock()
		batch, cmds := b.takeListensLocked(listens)
		b.mu.Unlock()
		if len(batch) > 0 {
			ctx, cancel := context.WithTimeout(b.ctx, b.stall)
			sent := time.Now()
			_, err := conn.Exec(ctx, cmds).ReadAll()
			cancel()
			if b.ctx.Err() != nil {
				return nil
			}
			if err != nil {
				return fmt.Errorf("postgres LISTEN: %w", err)
			}
			last = time.Now()
			switch took := last.Sub(sent); {
			case took > b.stall/8:
				listens = max(listens/2, minListens)
			case took < b.stall/32 && len(batch) == listens:
				listens = min(listens*2, maxListens)
			}
			b.mu.Lock()
			b.sentLocked(batch)
			b.mu.Unlock()
			continue
		}

		// Wait for notifications, a change of follows, or the time to
		// ping.
		ctx, cancel := context.WithDeadline(b.ctx, last.Add(pingEvery))
		b.mu.Lock()
		if len(b.todo) > 0 {
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
			continue // interrupted by a change of follows
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
// the listener goroutine, inside the connection's reads. It delivers the
// announcement to each follower that is neither waiting nor working, if
// the announcement carries its data, and queues it for the others; a
// follower whose announcement needs the table gets a goroutine that
// reads it.
func (b *Broker) dispatch(_ *pgconn.PgConn, n *pgconn.Notification) {
	channel, a, _ := strings.Cut(n.Payload, " ")
	if n.Channel != b.notifyName(channel) {
		return
	}
	var ended []*follower
	var errs []error
	b.mu.Lock()
	lc := b.chans[channel]
	if lc == nil {
		b.mu.Unlock()
		return
	}
	for f := lc.first; f != nil; f = f.next {
		if w := f.wait; w != nil {
			if len(w.q) >= announce.MaxLen || w.bytes+len(a) > announce.MaxBytes {
				ended, errs = append(ended, f), append(errs, fmt.Errorf("live: follow %q after %v: %w", channel, f.last, announce.ErrBehind))
				continue
			}
			w.q = append(w.q, a)
			w.bytes += len(a)
			continue
		}
		last := f.last
		err := announce.Deliver(channel, &last, a, "the table", needRead, f.callDeliver)
		f.last = last
		switch {
		case errors.Is(err, errRead):
			f.wait = &backlog{q: []string{a}, bytes: len(a), phase: working}
			b.wg.Add(1)
			go b.work(f)
		case err != nil:
			ended, errs = append(ended, f), append(errs, fmt.Errorf("live: follow %q after %v: %w", channel, f.last, err))
		}
	}
	for _, f := range ended {
		b.unlinkLocked(f)
	}
	b.mu.Unlock()
	for i, f := range ended {
		f.callEnd(errs[i])
	}
}

// work is the goroutine of a follower with announcements that need the
// table: it delivers its backlog, and ends once the backlog is empty.
func (b *Broker) work(f *follower) {
	defer b.wg.Done()
	b.drain(f, false)
}

// drain delivers f's backlog, oldest first, until it is empty; then the
// listener delivers f's announcements again. inline says that drain runs
// on a goroutine shared with other follows (the head reader): it must not
// wait for the table, so it hands f's backlog over to a goroutine of f's
// at the first announcement that needs it.
func (b *Broker) drain(f *follower, inline bool) {
	for {
		b.mu.Lock()
		w := f.wait
		if w == nil {
			b.mu.Unlock()
			return // stopped or ended
		}
		if len(w.q) == 0 {
			f.wait = nil
			b.mu.Unlock()
			return
		}
		a, last, channel := w.q[0], f.last, f.lc.name
		b.mu.Unlock()

		read := needRead
		if !inline {
			read = func(after live.Position) ([]live.Message, error) { return b.since(b.ctx, channel, after, fetchAhead) }
		}
		err := announce.Deliver(channel, &last, a, "the table", read, f.callDeliver)
		if inline && errors.Is(err, errRead) {
			b.mu.Lock()
			if f.wait == w && !b.closed.Load() {
				b.wg.Add(1)
				go b.work(f)
			}
			b.mu.Unlock()
			return
		}
		b.mu.Lock()
		if f.wait != w {
			b.mu.Unlock()
			return
		}
		f.last = last
		w.q[0] = ""
		w.q = w.q[1:]
		w.bytes -= len(a)
		b.mu.Unlock()
		if err != nil {
			if b.ctx.Err() != nil {
				err = live.ErrClosed
			}
			b.end(f, fmt.Errorf("live: follow %q after %v: %w", channel, last, err))
			return
		}
	}
}

// readHeads is the goroutine that reads the heads of the follows whose
// channels are listened to, a batch of channels per query, calls their
// ready and delivers what they queued meanwhile. It ends when no follow
// waits for its head.
func (b *Broker) readHeads() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		var batch []*follower
		var names []string
		seen := make(map[string]int) // index in names
		n := 0
		for ; n < len(b.heads) && len(names) < maxHeads; n++ {
			f := b.heads[n]
			b.heads[n] = nil
			if f.wait == nil || f.wait.phase != awaitHead {
				continue // stopped or ended
			}
			batch = append(batch, f)
			if _, ok := seen[f.lc.name]; !ok {
				seen[f.lc.name] = len(names)
				names = append(names, f.lc.name)
			}
		}
		b.heads = b.heads[n:]
		if len(batch) == 0 {
			b.heads = nil
			b.reading = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()

		heads, err := b.readHeadsOf(names)
		for _, f := range batch {
			b.mu.Lock()
			if f.wait == nil {
				b.mu.Unlock()
				continue
			}
			channel := f.lc.name
			if err != nil {
				b.mu.Unlock()
				if b.ctx.Err() != nil {
					err = live.ErrClosed
				}
				b.end(f, fmt.Errorf("live: follow %q: reading the head: %w", channel, err))
				continue
			}
			head := heads[seen[channel]]
			f.last = head
			f.wait.phase = working
			b.mu.Unlock()
			f.callReady(head)
			b.drain(f, true)
		}
	}
}

// readHeadsOf returns the heads of channels, in their order, creating the
// rows of new ones (see head).
func (b *Broker) readHeadsOf(channels []string) ([]live.Position, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 4*b.stall)
	defer cancel()
	read := func() ([]live.Position, error) {
		if err := b.ensure(ctx); err != nil {
			return nil, err
		}
		epochs := make([]string, len(channels))
		for i := range epochs {
			epochs[i] = newEpoch()
		}
		rows, err := b.pool.Query(ctx, b.headsSQL, channels, epochs)
		if err != nil {
			return nil, err
		}
		heads := make([]live.Position, 0, len(channels))
		var epoch string
		var seq int64
		_, err = pgx.ForEachRow(rows, []any{&epoch, &seq}, func() error {
			heads = append(heads, live.Position{Epoch: epoch, Seq: uint64(seq)})
			return nil
		})
		if err == nil && len(heads) != len(channels) {
			err = fmt.Errorf("%d heads read for %d channels", len(heads), len(channels))
		}
		return heads, err
	}
	heads, err := read()
	if err != nil && b.missing(err) {
		heads, err = read()
	}
	return heads, err
}

// fetchAhead is how many publications a follow reads from the table at
// once when an announcement comes without data.
const fetchAhead = 16
