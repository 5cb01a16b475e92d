package live

import (
	"context"
	"errors"
)

// A subscription is one connection's interest in one channel.
type subscription struct {
	c   *conn
	hc  *hubChannel
	idx int // position in hc.subs, -1 once removed; guarded by hc.mu

	// ahead, when set, is a cursor the client resumed from that this
	// hub had not reached yet, though the broker had (another node
	// published it): publications up to it are not sent again. Guarded
	// by hc.mu.
	ahead uint64

	// While a resuming subscription replays history, live frames wait in
	// pending, within the queue's bounds. broken records that some were
	// lost (pending overflowed, or the channel reset) so the replay must
	// end in a reset, for why. Guarded by hc.mu.
	resuming     bool
	broken       bool
	why          string
	pending      []*frame
	pendingBytes int

	// ctx bounds the replay; stop ends it. Set before the subscription
	// is adopted, for resuming subscriptions only.
	ctx  context.Context
	stop context.CancelFunc
}

// registerLocked makes s one of c's subscriptions and one of its
// channel's subscribers, unless a Reauthorize that concerns it was applied
// after control generation g (errRecheck). The caller holds s.hc.mu; the
// check and the registration hold c.mu, which reauthorize takes to list
// c's subscriptions, so a Reauthorize either is seen here or sees s.
// Connections without a request (the hub's own) have nothing to check.
func (h *Hub) registerLocked(s *subscription, g uint64) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.req != nil {
		h.mu.Lock()
		missed := h.missedLocked(g, "reauthorize", c.id, s.hc.name)
		h.mu.Unlock()
		if missed {
			return errRecheck
		}
	}
	if c.subs == nil {
		c.subs = make(map[string]*subscription)
	}
	c.subs[s.hc.name] = s
	s.hc.addLocked(s)
	h.stats.subscriptions.Add(1)
	h.stats.subsBy[c.tr].Add(1)
	return nil
}

// adopt joins s's channel's presence, once s receives publications.
func (h *Hub) adopt(c *conn, s *subscription) {
	if !s.hc.presence {
		return
	}
	h.presence.join(c, s.hc.name)
	// An unsubscription since registerLocked left before this joined.
	s.hc.mu.Lock()
	gone := s.idx < 0
	s.hc.mu.Unlock()
	if gone {
		h.presence.leave(c, s.hc.name)
	}
}

// unsubscribe removes channel name from c; it reports whether c had it.
func (h *Hub) unsubscribe(c *conn, name string) bool {
	c.mu.Lock()
	s := c.subs[name]
	delete(c.subs, name)
	c.mu.Unlock()
	if s == nil {
		return false
	}
	s.cancel()
	return true
}

// cancel detaches s from its channel.
func (s *subscription) cancel() {
	hc := s.hc
	hc.mu.Lock()
	stop := s.stop
	removed := s.idx >= 0
	hc.removeLocked(s)
	hc.mu.Unlock()
	if stop != nil {
		stop()
	}
	if removed {
		hc.h.stats.subscriptions.Add(-1)
		hc.h.stats.subsBy[s.c.tr].Add(-1)
		if hc.presence {
			hc.h.presence.leave(s.c, hc.name)
		}
		hc.h.release(hc)
	}
}

func (hc *hubChannel) addLocked(s *subscription) {
	s.idx = len(hc.subs)
	hc.subs = append(hc.subs, s)
}

func (hc *hubChannel) removeLocked(s *subscription) {
	i := s.idx
	if i < 0 {
		return
	}
	last := len(hc.subs) - 1
	hc.subs[i] = hc.subs[last]
	hc.subs[i].idx = i
	hc.subs[last] = nil
	hc.subs = hc.subs[:last]
	s.idx = -1
}

var (
	errTooManySubscriptions = errors.New("live: too many subscriptions on this connection")
)
