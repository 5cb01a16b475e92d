package live

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// Where a subscriber starts. Every transport (a WebSocket's subscribe
// frame, a one-channel SSE stream, each channel of a multiplexed stream
// or a long-poll) calls Hub.start and only encodes what it returns: start
// runs Authorize (through the gate's Hub.authorize) unless the gate ran
// it for the request, decides where the client's cursor puts it (fresh,
// resumed, or reset), registers the subscriber, acknowledges it with
// subscribedFrame and runs the replay, or says why not in a refusal.

// resumeFrom is where a client asks to resume.
type resumeFrom struct {
	given    bool
	pos      Position
	anyEpoch bool  // a bare version number: resume in the channel's current epoch
	err      error // the cursor did not parse
}

func parseResume(s string) resumeFrom {
	p, err := ParsePosition(s)
	return resumeFrom{given: true, pos: p, err: err}
}

// start subscribes c to channel from the client's cursor from, echoing
// ref on the acknowledgement, and returns nil; or the refusal, Authorize's
// or the subscription's. Authorize gets the request that opened c, and
// runs again for as long as a Reauthorize that concerns the subscription
// was applied while it ran (recheck.go). A caller whose gate ran
// Authorize for the channel passes admitted and the control generation g
// it read before.
func (h *Hub) start(ctx context.Context, c *conn, channel string, from resumeFrom, ref json.RawMessage, g uint64, admitted bool) *refusal {
	for {
		if !admitted {
			g = h.controlGen()
			if f := h.authorize(c.req, channel, OpSubscribe); f != nil {
				return f
			}
		}
		err := h.subscribe(ctx, c, channel, from, ref, g)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, errRecheck):
			return subscribeRefusal(err)
		}
		admitted = false
	}
}

// subscribeRefusal is the refusal of a subscription that failed with err.
func subscribeRefusal(err error) *refusal {
	switch {
	case errors.Is(err, ErrClosed):
		return &refusal{status: http.StatusServiceUnavailable, code: "closed", msg: err.Error(), answer: "the live hub is shutting down"}
	case errors.Is(err, errTooManySubscriptions):
		return &refusal{status: http.StatusTooManyRequests, code: "too_many_subscriptions", msg: err.Error()}
	default:
		return &refusal{status: http.StatusServiceUnavailable, code: "unavailable", msg: err.Error()}
	}
}

// subscribedFrame acknowledges c's subscription to channel, which starts
// after cursor, echoing the client's ref. It is the only place the
// acknowledgement is made.
func subscribedFrame(c *conn, channel string, cursor Position, ref json.RawMessage) *frame {
	return control{Type: "subscribed", Channel: channel, Cursor: cursor.String(), Ref: ref, Conn: c.key}.encode(c.ws)
}

// subscribe adds channel name to c, replaying history after from when it
// is given. The subscriber is registered before subscribe returns, so a
// publication made after that reaches the client. The caller has
// validated and authorized the channel, after reading control generation
// g: a Reauthorize that concerns the subscription applied since makes
// subscribe return errRecheck instead (recheck.go).
func (h *Hub) subscribe(ctx context.Context, c *conn, name string, from resumeFrom, ref json.RawMessage, g uint64) error {
	if again, err := h.again(c, name, ref); again || err != nil {
		return err
	}
	hc, err := h.acquire(ctx, name)
	if err != nil {
		return err
	}
	s := &subscription{c: c, hc: hc, idx: -1}
	at := h.decide(ctx, hc, from)
	s.ahead = at.ahead
	var recent []*frame
	fromRecent := false
	if at.resume {
		recent, fromRecent = hc.recentAfterLocked(at.from)
	}
	s.resuming = at.resume
	if err := h.registerLocked(s, g); err != nil {
		hc.mu.Unlock()
		h.release(hc)
		return err
	}
	switch {
	case !at.resume:
		h.beginLocked(s, at, ref)
		return nil
	case fromRecent:
		h.replayLocked(s, recent, at.from, at.cur, ref)
		return nil
	}
	hc.mu.Unlock()
	return h.replay(ctx, s, at.from, at.cur, ref)
}

// again acknowledges once more a subscription c has to name, and reports
// whether it had one; or refuses a subscription beyond
// Options.MaxSubscriptions.
func (h *Hub) again(c *conn, name string, ref json.RawMessage) (bool, error) {
	c.mu.Lock()
	s := c.subs[name]
	full := len(c.subs) >= h.opts.MaxSubscriptions
	c.mu.Unlock()
	switch {
	case s != nil:
		s.hc.mu.Lock()
		c.push(subscribedFrame(c, name, s.hc.last, ref))
		s.hc.mu.Unlock()
		return true, nil
	case full:
		return false, errTooManySubscriptions
	}
	return false, nil
}

// A startAt is the cursor decision for a new subscription.
type startAt struct {
	from   Position // the client's cursor, in the channel's epoch if it gave a bare version
	cur    Position // where the subscription is live from: its acknowledgement's cursor
	reset  string   // why the client must refetch first, or ""
	resume bool     // publications between from and cur are replayed
	ahead  uint64   // a cursor beyond this hub's head that the broker knows (subscription.ahead)
}

// decide decides where a subscription to hc starts for a client resuming
// from from: fresh (no cursor), resumed, or reset. It returns holding
// hc.mu, so that nothing fans out before the subscriber is registered.
func (h *Hub) decide(ctx context.Context, hc *hubChannel, from resumeFrom) startAt {
	// A cursor beyond this hub's head may come from another node that
	// has seen more of the channel: the broker, which refuses positions
	// beyond its own head, tells.
	asked, known := false, false
	for {
		hc.mu.Lock()
		at := startAt{cur: hc.last}
		if from.given {
			if from.anyEpoch {
				from.pos.Epoch = at.cur.Epoch
			}
			at.from, at.reset = from.pos, from.reset(at.cur)
		}
		if at.reset == resetAhead && !asked {
			hc.mu.Unlock()
			asked, known = true, h.knows(ctx, hc.name, from.pos)
			continue
		}
		if at.reset == resetAhead && known {
			// Start the client where it is; this hub catches up.
			at.reset, at.ahead, at.cur = "", from.pos.Seq, from.pos
		}
		at.resume = from.given && at.reset == "" && at.from.Seq < at.cur.Seq
		return at
	}
}

// reset says why a client resuming from f at a channel whose head is cur
// must refetch instead, or returns "" when it can resume.
func (f resumeFrom) reset(cur Position) string {
	switch {
	case f.err != nil:
		return resetMalformed
	case f.pos.Epoch != cur.Epoch:
		return resetEpoch
	case f.pos.Seq > cur.Seq:
		return resetAhead
	}
	return ""
}

// beginLocked starts s, which replays nothing, at at: the client gets
// its acknowledgement, then a reset if it must refetch, and s joins its
// channel's presence. The caller holds s.hc.mu, which beginLocked
// releases.
func (h *Hub) beginLocked(s *subscription, at startAt, ref json.RawMessage) {
	hc, c := s.hc, s.c
	c.push(subscribedFrame(c, hc.name, at.cur, ref))
	if at.reset != "" {
		c.push(hc.kindOf().resetFrame(at.cur, at.reset, c.ws))
		h.stats.reset(at.reset)
	}
	hc.mu.Unlock()
	h.adopt(c, s)
}
