package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"hash/fnv"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/go-live/live"
)

// Visitors. The demo has no accounts: each browser gets a random visitor
// id in a cookie on its first visit, and a name and a color derived from
// it, which the board's presence shows. Anyone may remove anyone from the
// board (it is a demo of the server's hand on sessions, not of access
// control): the removed visitor's live session ends at once, on every
// node (Hub.Disconnect), their page says so and does not reconnect, and
// their writes to the board are refused.

const visitorCookie = "visitor"

// welcome gives a browser without a visitor id one.
func welcome(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(visitorCookie); err == nil && validVisitor(c.Value) {
		return
	}
	var b [10]byte
	rand.Read(b[:])
	id := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	http.SetCookie(w, &http.Cookie{Name: visitorCookie, Value: id, Path: "/", SameSite: http.SameSiteLaxMode, MaxAge: 30 * 24 * 3600})
}

func validVisitor(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

var (
	adjectives = []string{"Amber", "Brisk", "Calm", "Dapper", "Eager", "Fuzzy", "Gentle", "Hasty", "Jolly", "Keen", "Lucky", "Merry", "Nimble", "Quiet", "Rapid", "Sunny"}
	animals    = []string{"Otter", "Heron", "Lynx", "Panda", "Fox", "Koala", "Badger", "Falcon", "Gecko", "Moose", "Puffin", "Walrus", "Yak", "Zebra", "Bison", "Crane"}
	colors     = []string{"#e76f51", "#2a9d8f", "#e9c46a", "#8ab17d", "#6d597a", "#457b9d", "#f4a261", "#c05299"}
)

// identify names the visitor of a request; one without the cookie is
// anonymous (counted, not shown).
func identify(r *http.Request) (live.Identity, error) {
	c, err := r.Cookie(visitorCookie)
	if err != nil || !validVisitor(c.Value) {
		return live.Identity{}, nil
	}
	h := fnv.New32a()
	h.Write([]byte(c.Value))
	n := h.Sum32()
	return live.Identity{User: c.Value, Info: map[string]string{
		"name":  adjectives[n%16] + " " + animals[n/16%16],
		"color": colors[n/256%8],
	}}, nil
}

// visitorsChannel carries removals from the board, so that every node
// learns of them in the same order and keeps them after a restart (as far
// as the broker's history reaches).
const visitorsChannel = "visitors"

// removals are the visitors removed from the board, as this node knows
// them.
type removals struct {
	hub  *live.Hub
	wake chan struct{}

	mu      sync.Mutex // guards removed, pending and caughtUp
	removed map[string]bool
	pending []string // removed since the last Reauthorize
	// caughtUp is set once the node has read the removals made before it
	// started, which concern no connection of its own.
	caughtUp bool
}

func newRemovals() *removals {
	return &removals{wake: make(chan struct{}, 1), removed: make(map[string]bool)}
}

// apply is the follower's: it records a removal, and has run end the
// visitor's live session.
func (rm *removals) apply(m live.Message) {
	var v struct {
		Removed string `json:"removed"`
	}
	if json.Unmarshal(m.Data, &v) != nil || !validVisitor(v.Removed) {
		return
	}
	rm.mu.Lock()
	rm.removed[v.Removed] = true
	if rm.caughtUp {
		rm.pending = append(rm.pending, v.Removed)
	}
	rm.mu.Unlock()
	select {
	case rm.wake <- struct{}{}:
	default:
	}
}

// run ends the live sessions of those removed, until ctx ends. Each node
// does, so a removal that reaches a node through the broker's history
// after an outage still ends sessions; Disconnect reaches every node
// sharing the broker.
func (rm *removals) run(ctx context.Context, logger *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rm.wake:
		}
		rm.mu.Lock()
		users := rm.pending
		rm.pending = nil
		rm.mu.Unlock()
		for _, u := range users {
			if err := rm.hub.Disconnect(ctx, u); err != nil && ctx.Err() == nil {
				logger.Warn("dashboard: removing a visitor reached this node only", "err", err)
			}
		}
	}
}

// start makes later removals end subscriptions.
func (rm *removals) start() {
	rm.mu.Lock()
	rm.caughtUp = true
	rm.mu.Unlock()
}

func (rm *removals) has(user string) bool {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return rm.removed[user]
}

// removeVisitor removes ?user= from the board, on every node.
func (a *app) removeVisitor(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if !validVisitor(user) {
		writeError(w, http.StatusBadRequest, "bad_user", "?user= names no visitor")
		return
	}
	if _, err := a.hub.Publish(r.Context(), visitorsChannel, map[string]string{"removed": user}); err != nil {
		writeError(w, http.StatusBadGateway, "broker", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// guardBoard refuses board writes from removed visitors.
func (a *app) guardBoard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if id, _ := identify(r); id.User != "" && a.removals.has(id.User) {
				writeError(w, http.StatusForbidden, "forbidden", "you were removed from the board")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
