package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live/internal/inspectlink"
)

// The server's hand on live sessions. Hub.Disconnect and Hub.Reauthorize
// act on this hub's connections at once, publish a control message on a
// reserved channel of the broker, so that every Hub sharing the broker
// does the same, and wait until every one says it has (roster.go). A hub
// that cannot vouch for having seen every control message (its
// subscription to them broke and history cannot fill the hole) re-runs
// Identify for all its connections and Authorize for all its
// subscriptions: when in doubt, it revokes.

// controlChannel carries control messages between the hubs sharing a
// broker.
const controlChannel = reservedPrefix + "control"

// statusDisconnected is the WebSocket close status of a connection that
// Hub.Disconnect ended.
const statusDisconnected = 4001

// A controlMsg is one control message. From names the hub that sent it,
// which applied it already. Hubs also say on the channel that they are
// alive (At, when they said it), that they applied the messages up to a
// position (Pos) and goodbye. "recheck", which never travels, checks every
// connection again.
type controlMsg struct {
	Op      string `json:"op"` // "disconnect", "reauthorize"; "alive", "applied", "bye"
	User    string `json:"user,omitempty"`
	Channel string `json:"channel,omitempty"`
	From    string `json:"from"`
	At      int64  `json:"at,omitempty"`  // alive: Unix nanoseconds
	Pos     string `json:"pos,omitempty"` // applied, alive: the cursor up to which the sender applied others' messages
	// alive: the sender's summary for inspectors, in detail while one
	// asks (Ask, from an inspecting hub). Older hubs ignore both.
	Info *inspectlink.Node `json:"info,omitempty"`
	Ask  *inspectlink.Ask  `json:"ask,omitempty"`
}

// Disconnect ends every connection of user, on this Hub and on every Hub
// sharing its broker: WebSocket connections close with status 4001,
// multiplexed SSE streams and long-polls end with an error frame (code
// "disconnected") and a "close" frame carrying 4001, and one-channel SSE
// streams end after a "refused" event. Clients that reconnect are
// identified and authorized again, so a user who logged out or was banned
// (whom Options.Identify or Authorize now refuses) stays out.
//
// It returns nil once every Hub sharing the broker has closed the user's
// connections, so a publication made after it returns reaches none of
// them. Hubs know each other through the broker: each says it is alive
// every second and is forgotten 7 s after it stops (at once when it
// closes). A Hub that does not confirm before ctx ends makes Disconnect
// return an error naming it (its host, process id and a random part) and
// wrapping ctx's error; such a Hub applies the message when it reads it,
// and one that lost the broker for 5 s ends all its connections, as it can
// no longer apply revocations. Give ctx a deadline: without one, a Hub cut
// from the broker keeps Disconnect waiting until the others forget it.
// In its first 1.5 s after starting or reconnecting to the broker a Hub
// waits until it has heard from every other. Waiting costs a round trip
// through the broker and one acknowledgement from each other Hub: with 2
// or 3 nodes, about 1 ms on Redis, 2-9 ms on NATS, 6-18 ms on PostgreSQL
// (docs/performance.md has the figures).
func (h *Hub) Disconnect(ctx context.Context, user string) error {
	if user == "" {
		return errors.New("live: Disconnect needs a user")
	}
	return h.control(ctx, controlMsg{Op: "disconnect", User: user})
}

// Reauthorize runs Options.Authorize again for the subscriptions to
// channel of user, on this Hub and on every Hub sharing its broker; ""
// matches any channel, or any user. Call it when rights change (a user
// leaves a team, a document is unshared). A subscription Authorize now
// refuses ends: over WebSocket and the multiplexed SSE stream the client
// gets an error frame naming the channel and nothing more of it; a
// one-channel SSE stream gets a "refused" event and ends. Resuming it later
// is refused as any subscription would be. It waits for every Hub sharing
// the broker as Disconnect does, with the same errors.
func (h *Hub) Reauthorize(ctx context.Context, channel, user string) error {
	return h.control(ctx, controlMsg{Op: "reauthorize", User: user, Channel: channel})
}

// control applies m here and publishes it for the other hubs.
func (h *Hub) control(ctx context.Context, m controlMsg) error {
	h.applyControl(m)
	m.From = h.id
	data, _ := json.Marshal(m)
	pos, err := h.publish(ctx, controlChannel, data)
	if err != nil {
		return fmt.Errorf("live: %s reached this hub only: %w", m.Op, err)
	}
	if h.ownBroker {
		return nil // no other hub shares it
	}
	if err := h.roster.await(ctx, pos); err != nil {
		return fmt.Errorf("live: %s applied by this hub, not known to be by all: %w", m.Op, err)
	}
	return nil
}

// applyControl applies m to this hub's connections.
func (h *Hub) applyControl(m controlMsg) {
	h.stats.control(m.Op)
	h.mu.Lock()
	h.noteControlLocked(m) // admissions under way check again (recheck.go)
	var conns []*conn
	for c := range h.conns {
		if m.User == "" || c.id != nil && c.id.User == m.User {
			conns = append(conns, c)
		}
	}
	h.mu.Unlock()
	for _, c := range conns {
		switch m.Op {
		case "disconnect":
			c.end(statusDisconnected, "disconnected by the server", refusedFrame("", "disconnected", "disconnected by the server"))
		case "reauthorize":
			h.reauthorize(c, m.Channel)
		case "recheck":
			h.recheck(c)
		}
	}
}

// recheck runs Options.Identify again for c, ending c as Disconnect does
// when it now refuses or names another user, then Authorize for its
// subscriptions.
func (h *Hub) recheck(c *conn) {
	r := c.authRequest()
	if r != nil && h.opts.Identify != nil && !ticketed(r) {
		user := ""
		if c.id != nil {
			user = c.id.User
		}
		if id, err := h.opts.Identify(r); err != nil || id.User != user {
			c.end(statusDisconnected, "disconnected by the server", refusedFrame("", "disconnected", "disconnected by the server"))
			return
		}
	}
	h.reauthorize(c, "")
}

// reauthorize runs Authorize for c's subscriptions to channel ("" for
// all) and ends those it refuses.
func (h *Hub) reauthorize(c *conn, channel string) {
	c.mu.Lock()
	var names []string
	for name := range c.subs {
		if channel == "" || name == channel {
			names = append(names, name)
		}
	}
	c.mu.Unlock()
	r := c.authRequest()
	if r == nil {
		return // the server's own subscriber, not a client's
	}
	for _, name := range names {
		f := h.authorize(r, name, OpSubscribe)
		if f == nil {
			continue
		}
		if !c.ws {
			// A one-channel SSE stream has nothing left to carry.
			c.end(0, "", refusedFrame(name, f.code, f.msg))
			return
		}
		if h.unsubscribe(c, name) {
			c.push(f.frame(name, nil))
		}
	}
}

// refusedFrame is the last frame of a connection the server ended: an
// error frame for WebSocket and multiplexed streams, a "refused" event for
// one-channel SSE streams (not "error", which EventSource keeps for its
// own failures).
func refusedFrame(channel, code, msg string) *frame {
	f := errorFrame(code, msg, channel, nil)
	body, _ := json.Marshal(control{Channel: channel, Code: code, Message: msg})
	b := append([]byte("event: refused\ndata: "), body...)
	f.sse = append(b, "\n\n"...)
	return f
}

// end ends c after last words: a WebSocket close frame with code and
// reason, or, on an SSE stream, the frame last (an error frame on a
// multiplexed one, an event on a one-channel one).
func (c *conn) end(code uint16, reason string, last *frame) {
	c.endWith(&lastWords{code: code, reason: reason, f: last})
}

// endWith ends c after the last words lw (see end).
func (c *conn) endWith(lw *lastWords) {
	c.mu.Lock()
	w := c.wire
	c.mu.Unlock()
	switch {
	case w == wireWS:
		c.closeWith(lw.code, lw.reason, time.Now().Add(closeWait))
		c.kill(errDisconnected)
	case w != wireNone:
		c.wmu.Lock()
		if c.out == nil {
			c.out = getOut()
		}
		c.out = c.appendLast(c.out, lw)
		c.wmu.Unlock()
		c.writeLast(time.Now().Add(closeWait))
		c.kill(errDisconnected)
	default:
		// Not taken over yet: the stream ends once it starts, with lw.
		c.kill(lw)
	}
}

// appendLast appends the last words of an SSE stream the server ends: the
// frame, then, on a multiplexed stream, a "close" frame with the code a
// WebSocket would have been closed with, when it has one.
func (c *conn) appendLast(b []byte, lw *lastWords) []byte {
	if lw.retry > 0 {
		// A drain's: when to come back, then on a multiplexed stream the
		// close frame that says so.
		b = appendRetry(b, lw.retry)
		if c.wire == wireSSEMux {
			b = c.appendFrame(b, lw.f)
		}
		return b
	}
	b = c.appendFrame(b, lw.f)
	if c.wire == wireSSEMux && lw.code != 0 {
		b = c.appendFrame(b, closeFrame(lw.code, lw.reason))
	}
	return b
}

// closeFrame is the frame that tells a multiplexed SSE stream or a
// long-poll why the server ends it, as a WebSocket's close frame does:
//
//	{"type":"close","closeCode":4001,"reason":"disconnected by the server"}
//
// with the WebSocket's close code (4001 Hub.Disconnect, 1013 try again
// later, 1001 going away). The field is not "code", which error frames
// use for a string. Clients that ignore unknown frame types see the
// stream end as before.
func closeFrame(code uint16, reason string) *frame {
	b := append([]byte(`{"type":"close","closeCode":`), strconv.Itoa(int(code))...)
	b = append(b, `,"reason":`...)
	b = append(b, quote(reason)...)
	return &frame{ws: append(b, '}')}
}

// errDisconnected ends a connection the server ended.
var errDisconnected = errors.New("live: disconnected by the server")

// runControl follows the control channel for the hub's lifetime, applying
// what other hubs send and telling them up to where it has. A hole in what
// the broker delivers is filled from history; one that cannot be filled
// makes the hub check every connection again, since a Disconnect or
// Reauthorize may be in it. The broker's callbacks only queue; a goroutine
// of the hub's applies, so that neither the broker nor Authorize waits for
// the other.
func (h *Hub) runControl() error {
	// A todo is a message to apply, or a hole (from, to] to fill first;
	// pos is where the channel is applied to once it is done.
	type todo struct {
		msg      controlMsg
		hole     bool
		from, to Position
		pos      Position
	}
	var (
		mu    sync.Mutex // guards tr and queue
		tr    trail
		queue []todo
	)
	wake := make(chan struct{}, 1)
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	ready := func(head Position) {
		mu.Lock()
		defer mu.Unlock()
		switch first, from, to := tr.ready(head); {
		case first:
			// Connections accepted before now may belong to a user
			// disconnected before now.
			queue = append(queue, todo{msg: controlMsg{Op: "recheck"}, pos: head})
		case from != to:
			queue = append(queue, todo{hole: true, from: from, to: to, pos: to})
		}
		h.roster.ready(head)
		signal()
	}
	deliver := func(m Message) {
		mu.Lock()
		defer mu.Unlock()
		seen, from, to := tr.next(m.Pos)
		if seen {
			return
		}
		if from != to {
			queue = append(queue, todo{hole: true, from: from, to: to, pos: to})
			signal()
		}
		msg := decodeControl(m)
		if h.roster.delivered(msg, m.Pos) {
			return
		}
		queue = append(queue, todo{msg: msg, pos: m.Pos})
		signal()
	}
	apply := func(m controlMsg) {
		if m.From == h.id {
			return // applied when sent
		}
		if m.User == "" && m.Channel == "" && (m.Op == "reauthorize" || m.Op == "recheck") && !h.hasConns() {
			return
		}
		h.applyControl(m)
	}
	// fill applies what history holds of the hole (from, to], or, when it
	// cannot, checks everything again.
	fill := func(from, to Position) {
		var msgs []Message
		err := ErrGone
		if from.Epoch == to.Epoch {
			msgs, err = h.history.Since(h.ctx, controlChannel, from)
		}
		if err != nil {
			if h.ctx.Err() == nil {
				h.opts.Logger.Warn("live: control messages may have been lost; checking every connection again", "err", err)
			}
			apply(controlMsg{Op: "recheck"})
			return
		}
		for _, m := range msgs {
			if m.Pos.Seq > to.Seq {
				break
			}
			switch msg := decodeControl(m); msg.Op {
			case "disconnect", "reauthorize", "recheck":
				apply(msg)
			default:
				h.roster.acked(msg)
			}
		}
	}

	done := make(chan struct{})
	h.group.Go(func() error {
		for {
			select {
			case <-wake:
			case <-done:
				return nil
			}
			mu.Lock()
			todos := queue
			queue = nil
			mu.Unlock()
			var applied Position
			for _, t := range todos {
				if t.hole {
					fill(t.from, t.to)
				} else {
					apply(t.msg)
				}
				if t.hole || t.msg.From != h.id {
					applied = t.pos
				}
			}
			if applied != (Position{}) && !h.ownBroker {
				h.roster.noteApplied(applied)
				h.roster.send(h.ctx, controlMsg{Op: "applied", Pos: applied.String()})
			}
		}
	})
	defer close(done)
	return h.follow(controlChannel, ready, deliver, h.roster.broke)
}

// A trail follows the positions that a hub's subscription to one of its
// reserved channels delivers, across resubscriptions, and tells where
// publications were missed. Its user serialises the calls.
type trail struct {
	last    Position
	started bool
}

// ready records the head of a new subscription. first reports the first
// one; otherwise (from, to] is what was published while none was active,
// empty when from == to.
func (t *trail) ready(head Position) (first bool, from, to Position) {
	first, from = !t.started, t.last
	t.started, t.last = true, head
	if first {
		return true, head, head
	}
	return false, from, head
}

// next records a delivery at pos. seen reports one delivered already;
// otherwise (from, to] is what was skipped before it, empty when
// from == to.
func (t *trail) next(pos Position) (seen bool, from, to Position) {
	last := t.last
	if pos.Epoch == last.Epoch && pos.Seq <= last.Seq {
		return true, last, last
	}
	t.last = pos
	if pos.Epoch != last.Epoch || pos.Seq > last.Seq+1 {
		return false, last, Position{pos.Epoch, pos.Seq - 1}
	}
	return false, last, last
}

// follow subscribes to one of the hub's reserved channels for the hub's
// lifetime, subscribing again when the subscription breaks; ready tells
// of each new subscription's head, and broke, if not nil, of its end. Its
// backoff is capped low, so that it finds the broker back soon after an
// outage of any length, and wakes the channels' subscriptions, which back
// off further, when it does.
func (h *Hub) follow(channel string, ready func(head Position), deliver func(Message), broke func()) error {
	const minDelay, maxDelay = 50 * time.Millisecond, 250 * time.Millisecond
	delay := minDelay
	var readies atomic.Int64
	onReady := func(head Position) {
		if readies.Add(1) > 1 {
			h.answered()
		}
		ready(head)
	}
	for {
		before := readies.Load()
		err := h.broker.Subscribe(h.ctx, channel, onReady, deliver)
		if h.ctx.Err() != nil {
			return nil
		}
		if broke != nil {
			broke()
		}
		if h.brokerClosed(err) {
			// Not a fault: the application closed the broker, most likely
			// on its way to closing the hub. It does not come back.
			h.opts.Logger.Debug("live: the broker is closed; the subscription to "+channel+" ends", "err", err)
			<-h.ctx.Done()
			return nil
		}
		h.stats.brokerErrors.Add(1)
		h.note("broker", "subscription broke: "+err.Error(), channel, "")
		h.opts.Logger.Warn("live: subscription to "+channel+" broke; resubscribing", "err", err)
		if readies.Load() > before {
			delay = minDelay
		}
		if !h.backoff(h.ctx, delay) {
			return nil
		}
		delay = min(2*delay, maxDelay)
	}
}

// brokerClosed reports whether a subscription ended because the broker
// was closed (it said [ErrClosed]) or the hub is closing, which are not
// faults of the link to the broker.
func (h *Hub) brokerClosed(err error) bool {
	if errors.Is(err, ErrClosed) {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// hasConns reports whether the hub has connections.
func (h *Hub) hasConns() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns) > 0
}

// decodeControl decodes a control message. One it cannot read, or one
// without the meta that only a hub attaches (a node older than this one,
// or a broker that drops meta, sent it), makes the hub check every
// connection again: when in doubt, the hub revokes, and what is not known
// to come from a hub closes nothing by itself.
func decodeControl(msg Message) controlMsg {
	var m controlMsg
	if _, fromHub := readMeta(msg); !fromHub || json.Unmarshal(msg.Data, &m) != nil {
		return controlMsg{Op: "recheck"}
	}
	switch m.Op {
	case "disconnect", "reauthorize", "alive", "applied", "bye":
		return m
	}
	return controlMsg{Op: "recheck"}
}
