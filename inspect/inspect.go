// Package inspect serves an operator's inspector of a live Hub: the hubs
// sharing its broker, their connections by transport, their busiest
// channels, one user's connections on every hub, and their recent
// refusals and errors; with actions to disconnect a user, re-authorize a
// channel and publish a test message. The page updates itself every
// second through live.
//
// # IT AUTHENTICATES NOBODY
//
// The inspector checks no password, session or role. Whoever reaches it
// sees every node, user id, address and channel name, and can disconnect
// any user and publish on any channel. Mount it ONLY behind the
// application's own admin authentication:
//
//	insp := inspect.Handler(hub, nil)
//	defer insp.Close()
//	mux.Handle("/admin/live/", adminOnly(http.StripPrefix("/admin/live", insp)))
//
// What it does check is that actions come from its own page, against
// cross-site request forgery: actions are POSTs that must carry the
// X-Inspect-Token header equal to the token in the inspector's cookie
// (SameSite=Strict, HttpOnly), which its page reads from the page itself
// and a cross-site form cannot send; and a request whose Sec-Fetch-Site
// says it is not same-origin, or whose Origin names another host, is
// refused with 403.
//
// How it sees the other hubs: each hub's beat on the broker (every
// second) carries a summary of it; while an inspector is open, the beats
// of its hub ask the others for details, which they put in their next
// beats, for about 3 seconds after each ask: the busiest channels (the 20
// with most subscribers and the 20 with most publications per second),
// the connections of the users searched for (up to 50 each), and the
// latest 50 refusals and errors. Hubs of older versions show with their
// id alone. Counting publications per channel costs one atomic add per
// publication; taking the details walks the hub's channels and
// connections once a second while someone watches, and never otherwise.
//
// How the page follows: the inspector runs a Hub of its own, on a memory
// broker that nothing else shares, and serves its one-channel SSE streams
// under its own prefix; the application's live endpoint never carries
// them. It publishes a snapshot there every second while a page is open.
package inspect

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/inspectlink"
)

// Options configure an Inspector. The zero value is ready to use.
type Options struct {
	// Interval is how often open pages are updated; 1 s when zero.
	Interval time.Duration
	// ActionTimeout bounds Disconnect and Reauthorize, which wait for
	// every hub; 5 s when zero.
	ActionTimeout time.Duration
}

// An Inspector is the inspector's http.Handler. Close stops it.
type Inspector struct {
	hub  *live.Hub
	opts Options
	priv *live.Hub // the page's updates travel through it
	mux  *http.ServeMux

	mu      sync.Mutex
	watched map[string]time.Time // the private channels asked for, by when

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Snapshot is what the inspector shows, as its JSON (GET state) and its
// updates carry it.
type Snapshot struct {
	At    time.Time          `json:"at"`
	User  string             `json:"user,omitempty"` // the user searched for
	Nodes []inspectlink.Node `json:"nodes"`          // this hub first, then the others by id
}

// Handler returns the inspector of hub, to mount behind the application's
// admin authentication (see the package doc: it authenticates nobody).
// opts may be nil. It serves, below wherever it is mounted:
//
//	GET  /                     the page (?user= searches a user)
//	GET  /state                the Snapshot as JSON (?user=)
//	GET  /live/{channel}       the page's updates (one-channel SSE)
//	POST /disconnect           user=…                 Hub.Disconnect
//	POST /reauthorize          channel=…&user=…       Hub.Reauthorize ("" for any)
//	POST /publish              channel=…&data=…       Hub.Publish (data as JSON, or as a string)
//
// POSTs take form values and need the X-Inspect-Token header (see the
// package doc); they answer JSON: {"ok":true}, or {"error":…} with a 4xx
// or 5xx status.
func Handler(hub *live.Hub, opts *Options) *Inspector {
	in := &Inspector{hub: hub, watched: make(map[string]time.Time), stop: make(chan struct{}), done: make(chan struct{})}
	if opts != nil {
		in.opts = *opts
	}
	if in.opts.Interval <= 0 {
		in.opts.Interval = time.Second
	}
	if in.opts.ActionTimeout <= 0 {
		in.opts.ActionTimeout = 5 * time.Second
	}
	in.priv = live.NewHub(&live.Options{
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if op == live.OpSubscribe && (channel == "view" || strings.HasPrefix(channel, "u-")) {
				return nil
			}
			return live.Deny("the inspector's updates only")
		},
	})
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", in.page)
	m.HandleFunc("GET /state", in.state)
	m.HandleFunc("GET /live/{channel}", in.follow)
	m.HandleFunc("POST /disconnect", in.action(in.disconnect))
	m.HandleFunc("POST /reauthorize", in.action(in.reauthorize))
	m.HandleFunc("POST /publish", in.action(in.publish))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such page of the inspector"})
	})
	in.mux = m
	go in.run()
	return in
}

// ServeHTTP serves the inspector.
func (in *Inspector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	in.mux.ServeHTTP(w, r)
}

// Close stops the inspector's updates and ends its pages' streams. The
// Hub it inspects stays open.
func (in *Inspector) Close() error {
	in.once.Do(func() { close(in.stop) })
	<-in.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return in.priv.Close(ctx)
}

// channelOf names the private channel of the page searching user.
func channelOf(user string) string {
	if user == "" {
		return "view"
	}
	return "u-" + hex.EncodeToString([]byte(user))
}

// userOf is channelOf's inverse.
func userOf(channel string) (string, bool) {
	if channel == "view" {
		return "", true
	}
	b, err := hex.DecodeString(strings.TrimPrefix(channel, "u-"))
	return string(b), err == nil && strings.HasPrefix(channel, "u-")
}

// maxWatched bounds the searches followed at once.
const maxWatched = inspectlink.MaxUsers

// follow serves a page's updates.
func (in *Inspector) follow(w http.ResponseWriter, r *http.Request) {
	ch := r.PathValue("channel")
	if _, ok := userOf(ch); !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such stream"})
		return
	}
	in.mu.Lock()
	if _, ok := in.watched[ch]; !ok && len(in.watched) >= maxWatched {
		oldest := ""
		for c, at := range in.watched {
			if oldest == "" || at.Before(in.watched[oldest]) {
				oldest = c
			}
		}
		delete(in.watched, oldest)
	}
	in.watched[ch] = time.Now()
	in.mu.Unlock()
	in.priv.SSEHandler().ServeHTTP(w, r)
}

// run publishes a snapshot to every followed search each Interval while
// a page is open.
func (in *Inspector) run() {
	defer close(in.done)
	t := time.NewTicker(in.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-t.C:
		}
		if in.priv.Stats().Connections == 0 {
			continue
		}
		in.mu.Lock()
		var chans, users []string
		for ch, at := range in.watched {
			if time.Since(at) > 10*time.Minute {
				delete(in.watched, ch)
				continue
			}
			chans = append(chans, ch)
			if u, _ := userOf(ch); u != "" {
				users = append(users, u)
			}
		}
		in.mu.Unlock()
		nodes := inspectlink.Cluster(in.hub, users)
		for _, ch := range chans {
			u, _ := userOf(ch)
			ctx, cancel := context.WithTimeout(context.Background(), in.opts.Interval)
			in.priv.Publish(ctx, ch, snapshotFor(nodes, u))
			cancel()
		}
	}
}

// Snapshot describes the cluster now, with the connections of user
// ("" for none) on every hub whose details are fresh.
func (in *Inspector) Snapshot(user string) Snapshot {
	var users []string
	if user != "" {
		users = []string{user}
	}
	return snapshotFor(inspectlink.Cluster(in.hub, users), user)
}

// snapshotFor keeps, of nodes, the connections of user alone.
func snapshotFor(nodes []inspectlink.Node, user string) Snapshot {
	s := Snapshot{At: time.Now(), User: user, Nodes: make([]inspectlink.Node, len(nodes))}
	for i, n := range nodes {
		users := n.Users
		n.Users = nil
		if conns := users[user]; user != "" && len(conns) > 0 {
			n.Users = map[string][]inspectlink.Conn{user: conns}
		}
		s.Nodes[i] = n
	}
	return s
}

func (in *Inspector) state(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, in.Snapshot(r.URL.Query().Get("user")))
}

// cookieName holds the token actions must repeat in tokenHeader.
const (
	cookieName  = "live_inspect_token"
	tokenHeader = "X-Inspect-Token"
)

// token returns the token of the page's cookie, setting a new one when
// there is none.
func token(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(cookieName); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	b := make([]byte, 16)
	rand.Read(b)
	t := hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return t
}

// forged says why r may not come from the inspector's own page, or "".
func forged(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return "a cross-site request (Sec-Fetch-Site: " + s + ")"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return "a request from another origin"
		}
	}
	c, err := r.Cookie(cookieName)
	t := r.Header.Get(tokenHeader)
	if err != nil || t == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(t)) != 1 {
		return "a request without the inspector's token (the " + tokenHeader + " header must repeat the " + cookieName + " cookie)"
	}
	return ""
}

// action wraps an action: CSRF checks, form parsing, JSON answers.
func (in *Inspector) action(do func(ctx context.Context, r *http.Request) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if why := forged(r); why != "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "refused " + why})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad form: " + err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), in.opts.ActionTimeout)
		defer cancel()
		if status, err := do(ctx, r); err != nil {
			writeJSON(w, status, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}
}

func (in *Inspector) disconnect(ctx context.Context, r *http.Request) (int, error) {
	user := r.PostForm.Get("user")
	if user == "" {
		return http.StatusBadRequest, errors.New("user is required")
	}
	if err := in.hub.Disconnect(ctx, user); err != nil {
		return http.StatusGatewayTimeout, err
	}
	return 0, nil
}

func (in *Inspector) reauthorize(ctx context.Context, r *http.Request) (int, error) {
	ch := r.PostForm.Get("channel")
	if ch != "" {
		if err := live.ValidChannel(ch); err != nil {
			return http.StatusBadRequest, err
		}
	}
	if err := in.hub.Reauthorize(ctx, ch, r.PostForm.Get("user")); err != nil {
		return http.StatusGatewayTimeout, err
	}
	return 0, nil
}

func (in *Inspector) publish(ctx context.Context, r *http.Request) (int, error) {
	ch, data := r.PostForm.Get("channel"), r.PostForm.Get("data")
	if ch == "" {
		return http.StatusBadRequest, errors.New("channel is required")
	}
	if err := live.ValidChannel(ch); err != nil {
		return http.StatusBadRequest, err
	}
	var v any = data
	if json.Valid([]byte(data)) {
		v = json.RawMessage(data)
	}
	if _, err := in.hub.Publish(ctx, ch, v); err != nil {
		if ctx.Err() != nil || errors.Is(err, live.ErrClosed) {
			return http.StatusServiceUnavailable, err
		}
		return http.StatusBadRequest, err
	}
	return 0, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
