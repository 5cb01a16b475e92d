package live

import (
	"net/http"
	"strconv"
	"time"
)

// Credentials that expire. A connection whose Identity carries Expires is
// ended then, as Hub.Disconnect ends one but with its own close code, so
// that a client can tell "sign in again" from "you were removed". Before
// that, clients that speak the frame protocol (WebSocket, the multiplexed
// stream, long-poll) get a "refresh" frame, and one-channel streams a
// "refresh" event, saying when: live.js then fetches a new credential
// (its refresh option) and reconnects from its cursors, losing nothing.
// Each connection has one runtime timer, and no goroutine, until it fires.

// statusExpired is the WebSocket close status of a connection whose
// credentials expired; streams and polls carry it in their "close" frame.
const statusExpired = 4003

// maxRefreshLead bounds how long before Expires the refresh frame goes.
const maxRefreshLead = 30 * time.Second

// refreshLead is how long before expires the hub asks a connection
// admitted at now to refresh: half its remaining life, at most
// maxRefreshLead.
func refreshLead(now, expires time.Time) time.Duration {
	return min(expires.Sub(now)/2, maxRefreshLead)
}

// armExpiryLocked starts c's expiry timer, when its Identity expires. The
// caller holds h.mu, having just registered c.
func (h *Hub) armExpiryLocked(c *conn) {
	if c.id == nil || c.id.Expires.IsZero() {
		return
	}
	exp := c.id.Expires
	now := time.Now()
	refresh := exp.Add(-refreshLead(now, exp))
	var fire func()
	fire = func() {
		h.mu.Lock()
		if _, ok := h.conns[c]; !ok {
			h.mu.Unlock()
			return
		}
		if d := time.Until(exp); d > 0 {
			// The refresh frame's turn; the ending's comes next.
			c.expiry = time.AfterFunc(d, fire)
			h.mu.Unlock()
			c.push(refreshFrame(exp))
			return
		}
		h.mu.Unlock()
		c.end(statusExpired, "credentials expired", refusedFrame("", "credentials_expired", "credentials expired"))
	}
	if d := refresh.Sub(now); d > 0 {
		c.expiry = time.AfterFunc(d, fire)
	} else {
		c.expiry = time.AfterFunc(exp.Sub(now), fire)
	}
}

// refreshFrame asks the client to fetch a new credential before exp:
//
//	{"type":"refresh","expires":1765000000000}
//
// with exp in Unix milliseconds; on a one-channel SSE stream it is the
// event "refresh" with that data.
func refreshFrame(exp time.Time) *frame {
	ms := strconv.FormatInt(exp.UnixMilli(), 10)
	ws := []byte(`{"type":"refresh","expires":` + ms + `}`)
	sse := []byte("event: refresh\ndata: " + string(ws) + "\n\n")
	return &frame{ws: ws, sse: sse}
}

// refuseExpired answers a request whose identity expired already.
func refuseExpired(w http.ResponseWriter) {
	writeError(w, http.StatusUnauthorized, "credentials_expired", "the credentials expired; refresh them and connect again")
}
