package live

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Stream tickets: where a page cannot send headers (EventSource, a
// cross-origin WebSocket, an htmx or Turbo page's stream URL), the
// application mints a ticket for an identity and channels (Hub.Ticket)
// and puts it in the URL as ?ticket=. A ticket is the payload
//
//	{"u":user,"i":info,"c":[channels],"t":ticket expiry,"x":identity expiry,"n":nonce}
//
// (times in Unix ms) in base64url, a dot, and its HMAC-SHA256 under
// Options.TicketKey, in base64url. It admits one connection: its nonce is
// claimed in Options.TicketStore, which hubs sharing a store (the broker
// modules' shared IdempotencyStores) make single use across nodes.

// ticketParam is the query parameter that carries a stream ticket. It is
// not among credentialParams: a ticket is made to be in a URL.
const ticketParam = "ticket"

// Bounds of tickets.
const (
	defaultTicketTTL = 30 * time.Second
	maxTicketTTL     = 5 * time.Minute
	maxTicketBytes   = 4 << 10
	ticketKeyPrefix  = "live-ticket:"
)

// ticketClaims is a ticket's payload.
type ticketClaims struct {
	User     string          `json:"u,omitempty"`
	Info     json.RawMessage `json:"i,omitempty"`
	Channels []string        `json:"c"`
	Until    int64           `json:"t"`           // the ticket expires, Unix ms
	Expires  int64           `json:"x,omitempty"` // the identity expires, Unix ms
	Nonce    string          `json:"n"`
}

type ticketKey struct{}

// Ticket mints a stream ticket: a string that, sent as the query
// parameter "ticket" of one SSE stream (one-channel or multiplexed),
// long-poll or WebSocket handshake, stands for id there, in place of
// Options.Identify, and admits subscribing to channels and nothing else
// (Authorize still runs, with IdentityOf returning id; publishing with a
// ticket is refused). It is good for ttl (0: 30 s; at most 5 minutes) and
// for one connection: it is refused once used (401, "ticket_used") on
// every Hub sharing Options.TicketStore, once expired (401,
// "ticket_expired") and when it does not verify (401, "bad_ticket"). A
// stock EventSource that reconnects with the same URL is refused: give it
// a new ticket (docs/operations.md, "Credentials"). Hubs accept each
// other's tickets when they share Options.TicketKey.
func (h *Hub) Ticket(id Identity, channels []string, ttl time.Duration) (string, error) {
	switch {
	case ttl == 0:
		ttl = defaultTicketTTL
	case ttl < 0 || ttl > maxTicketTTL:
		return "", fmt.Errorf("live: a ticket's ttl must be within (0, %v]", maxTicketTTL)
	}
	if len(channels) == 0 {
		return "", errors.New("live: a ticket needs a channel")
	}
	for _, ch := range channels {
		if _, code, msg := channelRefusal(ch); code != "" {
			return "", fmt.Errorf("live: ticket channel %q: %s", ch, msg)
		}
	}
	c := ticketClaims{User: id.User, Channels: channels, Until: time.Now().Add(ttl).UnixMilli(), Nonce: rand.Text()}
	if id.Info != nil {
		info, err := json.Marshal(id.Info)
		if err != nil {
			return "", fmt.Errorf("live: a ticket's Info: %w", err)
		}
		if len(info) > maxInfoBytes {
			return "", errors.New("live: a ticket's Info is over 1 KiB as JSON")
		}
		c.Info = info
	}
	if !id.Expires.IsZero() {
		c.Expires = id.Expires.UnixMilli()
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	t := base64.RawURLEncoding.EncodeToString(payload)
	t += "." + base64.RawURLEncoding.EncodeToString(h.ticketMAC(t))
	if len(t) > maxTicketBytes {
		return "", errors.New("live: the ticket is over 4 KiB: name fewer channels, or a smaller Info")
	}
	return t, nil
}

// ticketMAC signs a ticket's encoded payload.
func (h *Hub) ticketMAC(payload string) []byte {
	m := hmac.New(sha256.New, h.opts.TicketKey)
	m.Write([]byte("live ticket\x00"))
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// admitTicket identifies r by its ticket, in place of Options.Identify,
// and claims the ticket. It answers the request itself when it refuses.
func (h *Hub) admitTicket(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	vs := r.URL.Query()[ticketParam]
	if len(vs) != 1 {
		writeError(w, http.StatusBadRequest, "bad_ticket", "send one ticket")
		return nil, false
	}
	c, ok := h.verifyTicket(vs[0])
	if !ok {
		writeError(w, http.StatusUnauthorized, "bad_ticket", "the ticket is not valid")
		return nil, false
	}
	left := time.Until(time.UnixMilli(c.Until))
	if left <= 0 {
		writeError(w, http.StatusUnauthorized, "ticket_expired", "the ticket expired; get a new one")
		return nil, false
	}
	claimed, _, err := h.opts.TicketStore.Claim(r.Context(), ticketKeyPrefix+c.Nonce, left+time.Minute)
	if err != nil {
		h.opts.Logger.Warn("live: the ticket store failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the server cannot check the ticket now")
		return nil, false
	}
	if !claimed {
		writeError(w, http.StatusUnauthorized, "ticket_used", "the ticket was used already; get a new one")
		return nil, false
	}
	id := Identity{User: c.User}
	if c.Info != nil {
		id.Info = c.Info
	}
	if c.Expires != 0 {
		id.Expires = time.UnixMilli(c.Expires)
		if !id.Expires.After(time.Now()) {
			refuseExpired(w)
			return nil, false
		}
	}
	ctx := context.WithValue(r.Context(), identityKey{}, id)
	ctx = context.WithValue(ctx, ticketKey{}, c)
	return r.WithContext(ctx), true
}

// verifyTicket decodes t and checks its signature.
func (h *Hub) verifyTicket(t string) (*ticketClaims, bool) {
	if len(t) > maxTicketBytes {
		return nil, false
	}
	payload, sig, ok := strings.Cut(t, ".")
	if !ok {
		return nil, false
	}
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, h.ticketMAC(payload)) {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, false
	}
	var c ticketClaims
	if json.Unmarshal(b, &c) != nil || c.Nonce == "" || len(c.Channels) == 0 {
		return nil, false
	}
	return &c, true
}

// ticketRefusal refuses, for a request admitted by a ticket, a channel
// the ticket does not name and any publication.
func ticketRefusal(r *http.Request, channel string, op Op) *refusal {
	if r == nil {
		return nil
	}
	c, _ := r.Context().Value(ticketKey{}).(*ticketClaims)
	switch {
	case c == nil:
		return nil
	case op != OpSubscribe:
		return &refusal{status: http.StatusForbidden, code: "forbidden", msg: "a ticket admits subscribing only"}
	case !slices.Contains(c.Channels, channel):
		return &refusal{status: http.StatusForbidden, code: "forbidden", msg: "the ticket does not name this channel"}
	}
	return nil
}

// ticketed reports whether r was admitted by a ticket.
func ticketed(r *http.Request) bool {
	_, ok := r.Context().Value(ticketKey{}).(*ticketClaims)
	return ok
}

// usedTickets is Options.TicketStore's default: the nonces this hub saw
// claimed, each kept until its ticket expires, which makes tickets single
// use on this hub only.
type usedTickets struct {
	mu   sync.Mutex
	seen map[string]time.Time // nonce key → when it may be forgotten
	next time.Time            // when to sweep next
}

func (u *usedTickets) Claim(_ context.Context, key string, ttl time.Duration) (bool, []byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	if u.seen == nil {
		u.seen = make(map[string]time.Time)
	}
	if now.After(u.next) {
		for k, t := range u.seen {
			if now.After(t) {
				delete(u.seen, k)
			}
		}
		u.next = now.Add(time.Minute)
	}
	if t, ok := u.seen[key]; ok && !now.After(t) {
		return false, nil, nil
	}
	u.seen[key] = now.Add(ttl)
	return true, nil, nil
}

func (u *usedTickets) Save(context.Context, string, []byte, time.Duration) error { return nil }

func (u *usedTickets) Release(_ context.Context, key string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.seen, key)
	return nil
}
