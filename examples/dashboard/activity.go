package main

import (
	"context"
	"encoding/json"
	"html"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-live/live"
)

// actor is who did something in the activity feed.
type actor struct {
	Name   string `json:"name"`
	Avatar string `json:"avatar"`
}

// activity is one entry of the feed, in the shape React's useLiveList
// keeps.
type activity struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Message   string `json:"message"`
	Actor     actor  `json:"actor"`
	Timestamp string `json:"timestamp"`
}

// feed is the activity store: newest first, bounded. A handler changes
// its node's store and answers; Hub.Hook then publishes the change on
// activityChannel, and every node sharing the broker folds it into its own
// store (apply), so all of them hold the same items.
type feed struct {
	// catchUp, if set, brings the store up to date with the broker's
	// history, for a request that names an entry the store lacks.
	catchUp func(ctx context.Context) error

	mu    sync.Mutex // guards items
	items []activity
}

// activityChannel carries the feed's list operations, as Hub.Hook
// publishes them.
const activityChannel = "activity"

const maxFeed = 200

// newFeed returns a feed with the same three entries on every node.
func newFeed() *feed {
	f := &feed{}
	now := time.Now()
	for i, m := range []string{"deployed api v2.14", "opened issue #312", "merged the billing fix"} {
		f.items = append(f.items, activity{
			ID: "a" + strconv.Itoa(i+1), Type: "event", Message: m,
			Actor:     actor{Name: []string{"Ada", "Grace", "Linus"}[i], Avatar: avatarURL([]string{"Ada", "Grace", "Linus"}[i])},
			Timestamp: now.Add(-time.Duration(3-i) * time.Minute).UTC().Format(time.RFC3339),
		})
	}
	// Newest first.
	for i, j := 0, len(f.items)-1; i < j; i, j = i+1, j-1 {
		f.items[i], f.items[j] = f.items[j], f.items[i]
	}
	return f
}

// avatarURL returns an inline SVG avatar, so the demo needs nothing from
// the network.
func avatarURL(name string) string {
	initial := "?"
	if r, _ := utf8.DecodeRuneInString(name); r != utf8.RuneError {
		initial = html.EscapeString(strings.ToUpper(string(r)))
	}
	hue := 0
	for _, r := range name {
		hue = (hue*31 + int(r)) % 360
	}
	svg := `<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32" rx="16" fill="hsl(` +
		strconv.Itoa(hue) + `,55%,45%)"/><text x="16" y="21" font-family="sans-serif" font-size="15" fill="white" text-anchor="middle">` +
		initial + `</text></svg>`
	return "data:image/svg+xml," + strings.NewReplacer("<", "%3C", ">", "%3E", "#", "%23", `"`, "'").Replace(svg)
}

// input is what a client sends to create or edit an entry.
type input struct {
	Type    *string `json:"type"`
	Message *string `json:"message"`
	Actor   *actor  `json:"actor"`
}

func decodeInput(w http.ResponseWriter, r *http.Request) (input, bool) {
	var in input
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	if err := dec.Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", "the body must be a JSON object: "+err.Error())
		return in, false
	}
	if in.Message != nil && (len(*in.Message) == 0 || len(*in.Message) > 500) {
		writeError(w, http.StatusBadRequest, "bad_message", "message must be 1 to 500 bytes")
		return in, false
	}
	if in.Type != nil && (len(*in.Type) == 0 || len(*in.Type) > 40) {
		writeError(w, http.StatusBadRequest, "bad_type", "type must be 1 to 40 bytes")
		return in, false
	}
	return in, true
}

func (f *feed) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	items := append([]activity(nil), f.items...)
	f.mu.Unlock()
	writeJSON(w, items)
}

func (f *feed) create(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeInput(w, r)
	if !ok {
		return
	}
	if in.Message == nil {
		writeError(w, http.StatusBadRequest, "bad_message", "message is required")
		return
	}
	a := activity{Type: "comment", Message: *in.Message, Actor: actor{Name: "You", Avatar: avatarURL("You")},
		Timestamp: time.Now().UTC().Format(time.RFC3339)}
	if in.Type != nil {
		a.Type = *in.Type
	}
	if in.Actor != nil && in.Actor.Name != "" && len(in.Actor.Name) <= 60 {
		a.Actor = actor{Name: in.Actor.Name, Avatar: avatarURL(in.Actor.Name)}
	}
	// Ids are random, not counted, so that nodes sharing a broker never
	// give two entries the same one.
	a.ID = "a" + strconv.FormatUint(rand.Uint64(), 36)
	f.mu.Lock()
	f.add(a)
	f.mu.Unlock()
	writeJSONStatus(w, http.StatusCreated, a)
}

// add puts a in front unless an entry has its id already. f.mu is held.
func (f *feed) add(a activity) {
	if f.index(a.ID) >= 0 {
		return
	}
	f.items = append([]activity{a}, f.items...)
	if len(f.items) > maxFeed {
		f.items = f.items[:maxFeed]
	}
}

// find locks f.mu and returns the position of the entry with id, or -1.
// If the store lacks it, another node may have just added it: find
// catches up with the broker before it looks again.
func (f *feed) find(ctx context.Context, id string) int {
	f.mu.Lock()
	i := f.index(id)
	if i >= 0 || f.catchUp == nil {
		return i
	}
	f.mu.Unlock()
	f.catchUp(ctx) // on failure, the entry is as unknown as it was
	f.mu.Lock()
	return f.index(id)
}

// index returns the position of the entry with id, or -1. f.mu is held.
func (f *feed) index(id string) int {
	for i := range f.items {
		if f.items[i].ID == id {
			return i
		}
	}
	return -1
}

// listOp is a publication on activityChannel.
type listOp struct {
	Type string   `json:"type"`
	Item activity `json:"item"`
	ID   string   `json:"id"`
}

// apply folds one publication on activityChannel into the store. Add and
// update carry the whole entry as a handler answered it, so applying them
// in the broker's order leaves every node with the same entries, even
// those that took a change locally before it was published.
func (f *feed) apply(m live.Message) {
	var op listOp
	if err := json.Unmarshal(m.Data, &op); err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch op.Type {
	case "add":
		if op.Item.ID == "" {
			return
		}
		// The node that took the add has the entry already, placed when
		// it answered; place it again in the broker's order, which every
		// node shares.
		if i := f.index(op.Item.ID); i >= 0 {
			f.items = append(f.items[:i], f.items[i+1:]...)
		}
		f.add(op.Item)
	case "update":
		if i := f.index(op.Item.ID); i >= 0 && op.Item.ID != "" {
			f.items[i] = op.Item
		}
	case "remove":
		if i := f.index(op.ID); i >= 0 {
			f.items = append(f.items[:i], f.items[i+1:]...)
		}
	}
}

func (f *feed) update(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeInput(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	i := f.find(r.Context(), id)
	if i < 0 {
		f.mu.Unlock()
		writeError(w, http.StatusNotFound, "not_found", "no activity "+strconv.Quote(id))
		return
	}
	if in.Message != nil {
		f.items[i].Message = *in.Message
	}
	if in.Type != nil {
		f.items[i].Type = *in.Type
	}
	a := f.items[i]
	f.mu.Unlock()
	writeJSON(w, a)
}

func (f *feed) remove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	i := f.find(r.Context(), id)
	if i >= 0 {
		f.items = append(f.items[:i], f.items[i+1:]...)
	}
	f.mu.Unlock()
	if i < 0 {
		writeError(w, http.StatusNotFound, "not_found", "no activity "+strconv.Quote(id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
