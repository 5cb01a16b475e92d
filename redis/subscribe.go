package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/go-live/live/internal/follow"
	"github.com/redis/go-redis/v9"
)

// Following a channel holds no goroutine: a follower is a record on the
// pub/sub connection of its channel's server, and the connection's
// goroutines do its work as it comes.
//
//   - Follow records the follower and queues a SUBSCRIBE on the
//     connection; the connection's sender writes the commands that waited
//     together, many channels to a command.
//   - The connection's reader matches the confirmations with the commands
//     and queues the followers it made active; the broker's head reader
//     reads the heads of those that waited together in one pipeline, and
//     calls ready.
//   - The reader delivers each announcement that carries its data, on its
//     own goroutine. An announcement whose data must be read from the
//     stream (or that comes while the follower waits for its head, or for
//     such a read) is queued on the follower, and a goroutine of the
//     follower's own, which runs only while the queue has work, handles it
//     and those queued behind it. The reader never waits for one channel.
//
// The sender, the head reader and the workers run while they have work;
// the reader until its connection fails or the broker closes. All are in
// Broker.wg.

// A psConn is one pub/sub connection, shared by every follower of the
// broker on channels on one Redis server (on a cluster, one master). It
// is never repaired: when it fails, its followers end and the broker
// forgets it, so that go-redis cannot reconnect it and resubscribe behind
// our back, losing the announcements in between. Its reader runs from its
// first SUBSCRIBE until it fails or the broker closes.
type psConn struct {
	ps       *redis.PubSub
	addr     string       // its key in Broker.conns
	lastRecv atomic.Int64 // UnixNano of the last reply read, or of the connection's creation

	// Guarded by Broker.mu.
	chans       map[string]*psChan // by pub/sub channel name
	dead        bool
	cmds        []psCmd // decided, not yet written, oldest first
	unconfirmed int     // channels of the commands written, not yet confirmed
	sending     bool    // a sender writes cmds
	reading     bool    // the reader has started

	// Owned by the pinger.
	pingedAt int64 // UnixNano of the last ping sent; 0: none
}

// A psCmd is a SUBSCRIBE (sub) or UNSUBSCRIBE of one pub/sub channel.
type psCmd struct {
	name string
	sub  bool
}

// A psChan is one pub/sub channel on a psConn.
//
// Redis answers SUBSCRIBE and UNSUBSCRIBE in the order it receives them,
// so a confirmation is matched with the oldest command pending. The
// commands of a channel alternate (SUBSCRIBE only when not subscribed,
// UNSUBSCRIBE only when subscribed), so the count of those pending and
// the kind of the latest tell the kind of the oldest. A follower is
// active once the SUBSCRIBE sent for it (or before it, with no
// UNSUBSCRIBE in between) is confirmed. A confirmation that matches
// nothing means the connection was re-established (or, on a cluster,
// that the master gave the channel's slot away), and kills it.
type psChan struct {
	subs       []*follower
	sent       int32 // SUBSCRIBE commands decided
	confirmed  int32 // SUBSCRIBE commands confirmed
	pending    int32 // commands awaiting confirmation
	subscribed bool  // the latest command was SUBSCRIBE
}

// A follower is one Follow call.
type follower struct {
	b    *Broker
	name string // pub/sub channel, which holds the channel (see channel)

	// Guarded by Broker.mu.
	conn   *psConn // nil once unregistered
	want   int32   // confirmations of the psChan needed to be active
	active bool

	mu      sync.Mutex // held while a callback runs; guards the fields below
	done    bool       // ended or stopped: nothing more is called
	started bool       // ready was called
	busy    bool       // a worker handles queue
	last    live.Position
	queue   *backlog // announcements not handled yet; nil when none
	ready   func(live.Position)
	deliver func(live.Message)
	ended   func(error)
}

// A backlog holds a follower's announcements, oldest first, while it
// waits for its head or for data read from the stream. Past announce's
// bounds the follower ends: the Hub catches up from history instead.
type backlog struct {
	items []string
	bytes int
}

var (
	errStalled = errors.New("redis pub/sub connection stalled")
	errNeedsIO = errors.New("the publication's data is in the stream")
)

// Follow implements [live.Follower]. It queues a SUBSCRIBE to the
// channel's announcements and returns; once Redis confirms, it reads the
// head and calls ready, so every publication after the head is announced
// to it. It delivers announcements on the connection's reader, skipping
// those up to the head; one that needs its data read from the stream is
// delivered, with those behind it, by a goroutine that runs until they
// are. Anything out of turn (a gap, another epoch), a backlog past its
// bounds and any failure of the shared pub/sub connection end it.
func (b *Broker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	if err := b.checkName(channel); err != nil {
		return nil, fmt.Errorf("live: subscribe %q: %w", channel, err)
	}
	f := &follower{b: b, name: b.pubsubName(channel), ready: ready, deliver: deliver, ended: ended}
	addr := ""
	if b.cluster != nil {
		// Known once the client has the cluster's layout, which it reads
		// at its first command.
		master, err := b.cluster.MasterForKey(b.ctx, f.name)
		if err != nil {
			if b.isClosed() {
				err = live.ErrClosed
			}
			return nil, fmt.Errorf("live: subscribe %q: finding the channel's master: %w", channel, err)
		}
		addr = master.Options().Addr
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("live: subscribe %q: %w", channel, live.ErrClosed)
	}
	c := b.conns[addr]
	if c == nil {
		c = b.newConn(addr)
		b.conns[addr] = c
	}
	pc := c.chans[f.name]
	if pc == nil {
		pc = &psChan{}
		c.chans[f.name] = pc
	} else {
		f.name = b.keyOf(c, f.name) // one copy of the name per channel
	}
	if !pc.subscribed {
		pc.subscribed = true
		pc.sent++
		pc.pending++
		b.sendLocked(c, psCmd{f.name, true})
	}
	pc.subs = append(pc.subs, f)
	f.conn, f.want = c, pc.sent
	if pc.confirmed >= f.want {
		f.active = true
		b.headLocked(f)
	}
	return f.stop, nil
}

// keyOf returns the key of c.chans equal to name, which a new follower
// keeps instead of its own copy. b.mu is held.
func (b *Broker) keyOf(c *psConn, name string) string {
	pc := c.chans[name]
	if len(pc.subs) > 0 {
		return pc.subs[0].name
	}
	return name
}

// Subscribe implements [live.Broker] with Follow.
func (b *Broker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if ctx.Err() != nil && !b.isClosed() {
		return nil
	}
	start := func(ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
		return b.Follow(channel, ready, deliver, ended)
	}
	return follow.Subscribe(ctx, start, ready, deliver)
}

// channel returns the channel f follows, which its pub/sub name holds.
func (f *follower) channel() string {
	return f.name[len(f.b.prefix)+1 : len(f.name)-len("}:pub")]
}

// stop ends f without calling ended, waiting for a callback that runs.
func (f *follower) stop() {
	f.mu.Lock()
	f.done, f.queue = true, nil
	f.mu.Unlock()
	f.b.unregister(f)
}

// end calls ended with err, unless f ended or was stopped.
func (f *follower) end(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endLocked(err)
}

func (f *follower) endLocked(err error) {
	if f.done {
		return
	}
	f.done, f.queue = true, nil
	if f.started {
		f.ended(fmt.Errorf("live: subscribe %q after %v: %w", f.channel(), f.last, err))
	} else {
		f.ended(fmt.Errorf("live: subscribe %q: %w", f.channel(), err))
	}
}

// fail ends f with err and unregisters it.
func (f *follower) fail(err error) {
	f.end(err)
	f.b.unregister(f)
}

// push queues a, or ends f if its backlog would outgrow its bounds, and
// reports whether it did not. f.mu is held.
func (f *follower) push(a string) bool {
	q := f.queue
	if q == nil {
		q = new(backlog)
		f.queue = q
	}
	if len(q.items) >= announce.MaxLen || q.bytes+len(a) > announce.MaxBytes {
		f.endLocked(announce.ErrBehind)
		return false
	}
	q.items = append(q.items, a)
	q.bytes += len(a)
	return true
}

// announce hands f an announcement, on the reader's goroutine.
func (f *follower) announce(a string) {
	f.mu.Lock()
	ok := true
	switch {
	case f.done:
	case !f.started || f.busy:
		ok = f.push(a)
	default:
		err := announce.Deliver(f.channel(), &f.last, a, "the stream", needsIO, f.deliver)
		switch {
		case errors.Is(err, errNeedsIO):
			if ok = f.push(a); ok {
				f.work()
			}
		case err != nil:
			f.endLocked(err)
			ok = false
		}
	}
	f.mu.Unlock()
	if !ok {
		f.b.unregister(f)
	}
}

// needsIO is announce.Deliver's read on the reader, which never waits.
func needsIO(live.Position) ([]live.Message, error) { return nil, errNeedsIO }

// work starts a worker for f's backlog. f.mu is held, by a goroutine
// counted in b.wg (the reader, the head reader), and f is not busy.
func (f *follower) work() {
	f.busy = true
	f.b.wg.Add(1)
	go f.drain()
}

// drain is f's worker: it handles f's backlog, reading from the stream
// without holding f.mu, until the backlog is empty or f is done.
func (f *follower) drain() {
	defer f.b.wg.Done()
	f.mu.Lock()
	failed := false
	for !f.done && f.queue != nil && len(f.queue.items) > 0 {
		q := f.queue
		a := q.items[0]
		q.items[0] = ""
		q.items = q.items[1:]
		q.bytes -= len(a)
		if err := announce.Deliver(f.channel(), &f.last, a, "the stream", f.read, f.deliver); err != nil && !f.done {
			f.endLocked(err)
			failed = true
		}
	}
	f.busy = false
	if !f.done {
		f.queue = nil
	}
	f.mu.Unlock()
	if failed {
		f.b.unregister(f)
	}
}

// errStopped is what read returns when f was stopped while it read.
var errStopped = errors.New("stopped")

// read reads publications after after from the stream, without holding
// f.mu, which the caller holds: the reader only queues while f is busy.
func (f *follower) read(after live.Position) ([]live.Message, error) {
	f.mu.Unlock()
	msgs, err := f.b.since(f.b.ctx, f.channel(), after, fetchAhead)
	f.mu.Lock()
	if f.done {
		return nil, errStopped
	}
	return msgs, err
}

// fetchAhead is how many publications a follower reads from the stream at
// once when an announcement comes without data.
const fetchAhead = 16

// start calls ready with the head read for f, or ends f with the error
// reading it, and then has the announcements queued meanwhile delivered.
// It runs on the head reader.
func (f *follower) start(head live.Position, err error) {
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	if err != nil {
		f.endLocked(fmt.Errorf("reading the head: %w", err))
		f.mu.Unlock()
		f.b.unregister(f)
		return
	}
	f.started, f.last = true, head
	f.ready(head)
	if f.queue != nil && len(f.queue.items) > 0 {
		f.work()
	} else {
		f.queue = nil
	}
	f.mu.Unlock()
}

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

// followersLocked returns every follower on c. b.mu is held.
func (c *psConn) followersLocked() []*follower {
	var fs []*follower
	for _, pc := range c.chans {
		fs = append(fs, pc.subs...)
	}
	return fs
}

// kill ends every follower on c and forgets c, unless that happened
// already. The next Follow call makes a new connection.
func (b *Broker) kill(c *psConn, cause error) {
	b.mu.Lock()
	if c.dead {
		b.mu.Unlock()
		return
	}
	c.dead = true
	fs := c.followersLocked()
	if b.conns[c.addr] == c {
		delete(b.conns, c.addr)
	}
	b.mu.Unlock()
	for _, f := range fs {
		f.end(cause)
	}
	c.ps.Close()
	if b.cluster != nil {
		// The master may be gone, or the slot elsewhere: have the client
		// learn the cluster's layout again before the next Follow call.
		b.cluster.ReloadState(b.ctx)
	}
}

// sendLocked queues cmd for c's sender, starting it if it is not
// running and may write. b.mu is held and the broker is not closed.
func (b *Broker) sendLocked(c *psConn, cmd psCmd) {
	c.cmds = append(c.cmds, cmd)
	b.startSenderLocked(c, maxUnconfirmed)
}

// startSenderLocked starts c's sender if commands wait, it is not
// running, and fewer than limit channels await confirmation. b.mu is
// held.
func (b *Broker) startSenderLocked(c *psConn, limit int) {
	if len(c.cmds) > 0 && !c.sending && !c.dead && !b.closed && c.unconfirmed < limit {
		c.sending = true
		b.wg.Add(1)
		go b.send(c)
	}
}

// maxNames bounds the channels of one SUBSCRIBE or UNSUBSCRIBE.
const maxNames = 1024

// maxUnconfirmed bounds the channels whose SUBSCRIBE or UNSUBSCRIBE is
// written and not yet confirmed on a connection. Redis queues a
// confirmation of about 60 bytes a channel in the connection's output
// buffer, which client-output-buffer-limit pubsub bounds (by default 32
// MiB at once, or 8 MiB for a minute) and closes the connection past it:
// a node following a million channels at once would send that much
// faster than it reads it. 32,768 channels is about 2 MiB. (A variable
// for the tests.)
var maxUnconfirmed = 1 << 15

// send is c's sender: it writes the commands queued on c, those that
// waited together as few commands, until none is left or maxUnconfirmed
// channels await confirmation (then the reader starts it again once half
// of them are confirmed). It starts c's reader after its first write: on
// a cluster, a read before the first SSUBSCRIBE would dial a random
// master.
func (b *Broker) send(c *psConn) {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		n := min(len(c.cmds), maxUnconfirmed-c.unconfirmed)
		if n <= 0 || c.dead || b.closed {
			c.sending = false
			b.mu.Unlock()
			return
		}
		cmds := c.cmds[:n:n]
		if c.cmds = c.cmds[n:]; len(c.cmds) == 0 {
			c.cmds = nil
		}
		c.unconfirmed += n
		read := !c.reading
		c.reading = true
		b.mu.Unlock()

		// A channel's commands alternate, so within a run of commands of
		// one kind each channel comes once, and their order is free.
		for i := 0; i < len(cmds); {
			j := i + 1
			for j < len(cmds) && cmds[j].sub == cmds[i].sub {
				j++
			}
			for _, run := range b.runs(cmds[i:j]) {
				if err := b.write(c, cmds[i].sub, run); err != nil {
					b.kill(c, fmt.Errorf("redis SUBSCRIBE: %w", err))
					return
				}
			}
			i = j
		}
		if read {
			b.wg.Add(1)
			go b.read(c)
		}
	}
}

// runs splits cmds, all of one kind, into lists of at most maxNames
// names that one command can carry: on a cluster, names of one slot.
func (b *Broker) runs(cmds []psCmd) [][]string {
	if b.cluster == nil {
		var runs [][]string
		for len(cmds) > 0 {
			n := min(len(cmds), maxNames)
			names := make([]string, n)
			for i := range n {
				names[i] = cmds[i].name
			}
			runs = append(runs, names)
			cmds = cmds[n:]
		}
		return runs
	}
	bySlot := make(map[uint16][]string)
	var slots []uint16
	for _, cmd := range cmds {
		s := slot(cmd.name)
		if _, ok := bySlot[s]; !ok {
			slots = append(slots, s)
		}
		bySlot[s] = append(bySlot[s], cmd.name)
	}
	var runs [][]string
	for _, s := range slots {
		names := bySlot[s]
		for len(names) > 0 {
			n := min(len(names), maxNames)
			runs = append(runs, names[:n])
			names = names[n:]
		}
	}
	return runs
}

// write writes one SUBSCRIBE (sub) or UNSUBSCRIBE of names on c.
func (b *Broker) write(c *psConn, sub bool, names []string) error {
	switch {
	case b.cluster != nil && sub:
		return c.ps.SSubscribe(b.ctx, names...)
	case b.cluster != nil:
		return c.ps.SUnsubscribe(b.ctx, names...)
	case sub:
		return c.ps.Subscribe(b.ctx, names...)
	default:
		return c.ps.Unsubscribe(b.ctx, names...)
	}
}

// slot returns the Redis Cluster hash slot of key.
func slot(key string) uint16 {
	if i := indexByte(key, '{'); i >= 0 {
		if j := indexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16 // CRC16-CCITT (XMODEM), as Redis Cluster uses
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// read is c's reader goroutine: it reads c and hands announcements to the
// followers, until c fails or the broker closes.
func (b *Broker) read(c *psConn) {
	defer b.wg.Done()
	var fs []*follower
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
				fs = append(fs, pc.subs...)
			}
			b.mu.Unlock()
			for _, f := range fs {
				f.announce(m.Payload)
			}
			clear(fs)
			fs = fs[:0]
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
	ok := !c.dead && pc != nil && pc.pending > 0 && (isSub || isUnsub)
	if ok {
		// The oldest is of the latest's kind if an odd number is pending.
		oldestSub := pc.subscribed == (pc.pending%2 == 1)
		ok = oldestSub == isSub
	}
	if !ok {
		b.mu.Unlock()
		b.kill(c, fmt.Errorf("redis pub/sub connection was re-established (unexpected %s %q)", m.Kind, m.Channel))
		return
	}
	pc.pending--
	c.unconfirmed--
	b.startSenderLocked(c, maxUnconfirmed/2)
	if isSub {
		pc.confirmed++
		for _, f := range pc.subs {
			if !f.active && f.want <= pc.confirmed {
				f.active = true
				b.headLocked(f)
			}
		}
	} else if len(pc.subs) == 0 && pc.pending == 0 {
		delete(c.chans, m.Channel)
	}
	b.mu.Unlock()
}

// unregister removes f from its connection, unsubscribing from its channel
// if f was the last, unless that happened already.
func (b *Broker) unregister(f *follower) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := f.conn
	if c == nil {
		return
	}
	f.conn = nil
	pc := c.chans[f.name]
	if pc == nil {
		return
	}
	for i, x := range pc.subs {
		if x == f {
			last := len(pc.subs) - 1
			pc.subs[i] = pc.subs[last]
			pc.subs[last] = nil
			pc.subs = pc.subs[:last]
			break
		}
	}
	if len(pc.subs) > 0 || c.dead || b.closed {
		return
	}
	pc.subs = nil
	if pc.subscribed {
		pc.subscribed = false
		pc.pending++
		b.sendLocked(c, psCmd{f.name, false})
	} else if pc.pending == 0 {
		delete(c.chans, f.name)
	}
}

// headLocked queues f, now active, for the head reader, starting it if
// it is not running. b.mu is held.
func (b *Broker) headLocked(f *follower) {
	if b.closed {
		return
	}
	b.heads = append(b.heads, f)
	if !b.heading {
		b.heading = true
		b.wg.Add(1)
		go b.readHeads()
	}
}

// maxHeads bounds the heads read in one pipeline.
const maxHeads = 4096

// readHeads is the head reader: it reads the heads of the followers that
// became active, those that waited together in one pipeline, and starts
// them, until none is left.
func (b *Broker) readHeads() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		n := min(len(b.heads), maxHeads)
		if n == 0 || b.closed {
			b.heads, b.heading = nil, false
			b.mu.Unlock()
			return
		}
		fs := b.heads[:n:n]
		b.heads = b.heads[n:]
		if len(b.heads) == 0 {
			b.heads = nil
		}
		b.mu.Unlock()

		groups, cmds := b.readHeadsOf(fs)
		for i, g := range groups {
			heads, err := parseHeads(cmds[i], len(g))
			for j, f := range g {
				if err != nil {
					f.start(live.Position{}, err)
				} else {
					f.start(heads[j], nil)
				}
			}
		}
	}
}

// headsPerCall bounds the channels of one call of headScript.
const headsPerCall = 256

// readHeadsOf reads the heads of fs's channels in one pipeline (on a
// cluster, one per master) of headScript calls, one for each group of up
// to headsPerCall channels (on a cluster, of one slot), loading the
// script where Redis does not have it.
func (b *Broker) readHeadsOf(fs []*follower) (groups [][]*follower, cmds []*redis.Cmd) {
	if b.cluster == nil {
		for rest := fs; len(rest) > 0; {
			n := min(len(rest), headsPerCall)
			groups = append(groups, rest[:n])
			rest = rest[n:]
		}
	} else {
		at := make(map[uint16]int)
		for _, f := range fs {
			s := slot(f.name)
			i, ok := at[s]
			if !ok || len(groups[i]) == headsPerCall {
				i = len(groups)
				at[s] = i
				groups = append(groups, nil)
			}
			groups[i] = append(groups[i], f)
		}
	}
	cmds = make([]*redis.Cmd, len(groups))
	epoch, ttl := newEpoch(), b.ttl.Milliseconds()
	send := func(retry bool) error {
		_, err := b.client.Pipelined(b.ctx, func(p redis.Pipeliner) error {
			for i, g := range groups {
				if retry && !isNoScript(cmds[i].Err()) {
					continue
				}
				keys := make([]string, 0, 4*len(g))
				for _, f := range g {
					channel := f.channel()
					keys = append(append(keys, b.keys(channel)...), b.snapshotKey(channel))
				}
				cmds[i] = headScript.EvalSha(b.ctx, p, keys, epoch, ttl)
			}
			return nil
		})
		return err
	}
	if err := send(false); err != nil && hasNoScript(cmds) {
		if err = headScript.Load(b.ctx, b.client).Err(); err == nil {
			send(true)
		}
	}
	return groups, cmds
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
