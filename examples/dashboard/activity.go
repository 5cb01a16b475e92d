package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// actor is who did something in the activity feed.
type actor struct {
	Name   string `json:"name"`
	Avatar string `json:"avatar"`
}

// activity is one entry of the feed, in the seed's shape.
type activity struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Message   string `json:"message"`
	Actor     actor  `json:"actor"`
	Timestamp string `json:"timestamp"`
}

// feed is the activity store: newest first, bounded.
type feed struct {
	mu    sync.Mutex // guards items and next
	items []activity
	next  int
}

const maxFeed = 200

func newFeed() *feed {
	f := &feed{}
	now := time.Now()
	for i, m := range []string{"deployed api v2.14", "opened issue #312", "merged the billing fix"} {
		f.next++
		f.items = append(f.items, activity{
			ID: "a" + strconv.Itoa(f.next), Type: "event", Message: m,
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
	if name != "" {
		initial = strings.ToUpper(name[:1])
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
	f.mu.Lock()
	f.next++
	a.ID = "a" + strconv.Itoa(f.next)
	f.items = append([]activity{a}, f.items...)
	if len(f.items) > maxFeed {
		f.items = f.items[:maxFeed]
	}
	f.mu.Unlock()
	writeJSONStatus(w, http.StatusCreated, a)
}

func (f *feed) update(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeInput(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.items {
		if f.items[i].ID != id {
			continue
		}
		if in.Message != nil {
			f.items[i].Message = *in.Message
		}
		if in.Type != nil {
			f.items[i].Type = *in.Type
		}
		writeJSON(w, f.items[i])
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no activity "+strconv.Quote(id))
}

func (f *feed) remove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.items {
		if f.items[i].ID == id {
			f.items = append(f.items[:i], f.items[i+1:]...)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeError(w, http.StatusNotFound, "not_found", "no activity "+strconv.Quote(id))
}
