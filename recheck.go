package live

import "errors"

// Revocations race admissions. Authorize (a database lookup, say) may read
// a user's old rights while Hub.Reauthorize runs and finds no subscription
// to check, because the one Authorize is about to allow is not registered
// yet; likewise Hub.Disconnect finds no connection that Identify and
// Authorize are still admitting. So every control message applied moves
// the hub's control generation, and the hub remembers the last ones. An
// admission reads the generation before Identify or Authorize runs, and
// where it registers (the connection in enter, each subscription in
// subscribe, under the locks applyControl's walk takes after moving the
// generation) it asks whether a message since concerns it: a Disconnect of
// its user refuses the connection, a Reauthorize of its channel and user
// runs Authorize again before the subscription receives anything. A
// message applied after that finds the connection or the subscription
// registered.

// recentControls is how many control messages the hub remembers. An
// admission that more passed is checked again.
const recentControls = 32

// errRecheck reports a subscription that a Reauthorize applied while its
// Authorize ran may concern: Authorize must run again.
var errRecheck = errors.New("live: rights changed while Authorize ran")

// noteControlLocked records m as applied, before applyControl walks the
// connections. The caller holds h.mu.
func (h *Hub) noteControlLocked(m controlMsg) {
	h.gen++
	h.recent[h.gen%recentControls] = m
}

// controlGen returns the control generation, read before Identify or
// Authorize runs.
func (h *Hub) controlGen() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}

// missedLocked reports whether a control message of op applied after
// generation g reaches the connections of id (nil: anonymous) and, for a
// Reauthorize, their subscriptions to channel. More messages since g than
// the hub remembers count as one that does: when in doubt, check again. The
// caller holds h.mu.
func (h *Hub) missedLocked(g uint64, op string, id *Identity, channel string) bool {
	if h.gen-g > recentControls {
		return true
	}
	for n := g + 1; n <= h.gen; n++ {
		m := h.recent[n%recentControls]
		if m.Op != op {
			continue
		}
		// The walk's test (applyControl), and reauthorize's.
		if m.User != "" && (id == nil || id.User != m.User) {
			continue
		}
		if m.Channel == "" || m.Channel == channel {
			return true
		}
	}
	return false
}
