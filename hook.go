package live

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// MutationIDHeader is the request header in which a client names one
// mutation, for example the temporary id of its optimistic item. [Hub.Hook]
// copies it to the response and to the published event as "mutationId",
// so the client replaces its optimistic item exactly once, whether the
// HTTP response or the broadcast arrives first. Values are 1 to 128
// printable ASCII characters. Cross-origin clients need the header in
// Access-Control-Allow-Headers (and Access-Control-Expose-Headers to read
// the echo); the application's CORS layer sets those.
//
// The id is also a key for retries: see [HookOptions].RetryWindow.
const MutationIDHeader = "Live-Mutation-Id"

const (
	maxMutationID   = 128
	eventRoom       = 1 << 10 // what an event adds around a response body
	defaultIDField  = "id"
	hookLogMessage  = "live: hook published nothing; subscribers missed a change"
	hookPublishFail = "live: hook publish failed; subscribers missed a change"
)

// HookOptions configures [Hub.Hook]. A zero field means the default
// documented on it.
type HookOptions struct {
	// Channel names the channel a request's default event goes to: a
	// constant such as "todos", or one that depends on the request, such
	// as "todos:"+r.PathValue("tenant"). Return "" to publish nothing for
	// the request. Required unless Event is set.
	Channel func(r *http.Request) string

	// IDField names an item's id: the route wildcard and the member of a
	// JSON object response that a DELETE's id is read from. The published
	// event calls it "id" regardless, as React's useLiveList expects.
	// Default "id".
	IDField string

	// ID returns the id a successful DELETE removed, given the response
	// body; nil or "" means none, and nothing is published. Default: the
	// route's {IDField} wildcard, else the IDField member of a JSON object
	// response, else the last wildcard of the route pattern (for requests
	// not routed by http.ServeMux, the last path segment). Ids from the
	// path are strings and useLiveList compares ids with ===: if your ids are
	// numbers, return numbers here or answer DELETE with the item.
	ID func(r *http.Request, body []byte) any

	// Event maps a successful mutation (2xx status, response body) to the
	// events to publish, replacing the default list update. Use it for
	// another shape or several channels; return nil to publish nothing.
	// [ListUpdate] builds the default shape. Default: one [ListUpdate] on
	// Channel(r) for POST, PUT, PATCH and DELETE.
	Event func(r *http.Request, status int, body []byte) []Event

	// MaxBody bounds the response bytes the hook keeps to publish. A
	// longer response still reaches the client intact, but nothing is
	// published for it (unless the handler called [SetEvent]) and the
	// loss is logged and counted. Default: the largest publication the
	// Hub accepts (half of Options.QueueBytes) less 1 KiB for the event
	// around the body, 511 KiB with the Hub's defaults.
	MaxBody int

	// Version, if set, returns the current version of the resource a
	// request targets, "" if it does not exist. When a request carries
	// If-Match, the hook compares it with the version as an entity tag
	// (strong comparison; a bare version v stands for "v"; * matches any
	// existing version) and answers a mismatch with 412 and a JSON body
	// {"error":"conflict","message":…,"version":<current>} without calling
	// the handler. The check is not atomic with the handler's write, on
	// one node as on several: the version and the write are the
	// application's, so no broker can decide them, and a concurrent
	// request can change the resource in between. It rejects stale edits
	// early; handlers that must never lose an update compare and write
	// atomically where the resource is kept (UPDATE … WHERE version = …)
	// and answer with [WriteConflict], or, for a [State], write with
	// ApplyIf or SetIf, which a [Conditional] broker decides. An error
	// from Version is logged and answered with 500. Default: If-Match is
	// left to the handler.
	Version func(r *http.Request) (current string, err error)

	// RetryWindow is how long the hook remembers the response to a
	// request that carried [MutationIDHeader] or [IdempotencyKeyHeader]:
	// a retry within it (same method, path, user and key) is answered
	// with the first response (status, body and the headers that
	// describe it: Content-Type, Cache-Control, ETag, Location, Vary and
	// the like, never Set-Cookie), marked Idempotent-Replayed: true, and
	// neither runs the handler nor publishes again. A retry that arrives
	// while the first request runs waits for it (and gets 409
	// "in_progress" if its own context ends first).
	//
	// Keys are scoped by the user [Options].Identify names. A mutation
	// id is broadcast, so anyone can send it again: a request whose
	// caller has no user (no Identify, an anonymous Identity, or an
	// error from Identify) still runs once, but its retries get 409
	// "already_applied", never its response. An application that signs
	// users in with its own middleware sets Identify to read the user
	// that middleware found, and its users' retries get their responses.
	//
	// A key sent again with another request (method, path, query or
	// body differing) gets 422 "key_reused" and runs nothing. To compare
	// them, the hook reads a keyed request's body before the handler
	// runs: at most MaxBody or 1 MiB, whichever is larger (413 beyond).
	//
	// Kept are 2xx, 3xx and 4xx answers, except refusals that depend on
	// who asks or when (401, 403, 407, 408, 409, 412, 423, 424, 425, 428,
	// 429, 451): after those, a 5xx, a panic or a hijack, a retry runs
	// again. A caller without a user has only its successes kept. A
	// response with a body beyond MaxBody, or too large to keep (a record
	// over 1 MiB, about 750 KiB of body), is repeated as 409
	// "already_applied".
	// If the store cannot claim a key (it fails, or the in-memory store
	// is full of running requests), the request is refused with 503 and
	// Retry-After rather than run without knowing whether it ran.
	// Default 10 minutes; negative turns it off.
	RetryWindow time.Duration

	// Idempotency keeps those responses. Default: in the Hub's memory,
	// which a retry landing on another node does not see: at most
	// 100,000 keys and 64 MiB (responses, keys and ~256 bytes of
	// bookkeeping each). A running request's claim is never evicted.
	// When room is needed, expired responses go first, then the oldest
	// response of the user holding the most, so one user's traffic
	// evicts its own responses before anyone else's; such a response is
	// lost to its retries, which run again, and the Hub counts it
	// ([Stats].RetriesLost) and logs a warning. The Redis, NATS and
	// PostgreSQL broker modules have stores that nodes share, bounded by
	// their servers.
	Idempotency IdempotencyStore

	// ToOthers makes the hook's publications skip the connection that
	// made the change, named by the request's [ConnectionHeader] (live.js
	// sends it with its writes), as [Except] does: for clients that apply
	// their own changes and do not send mutation ids. Default: every
	// subscriber gets every publication.
	ToOthers bool

	// Publish, if set, takes a request's events instead of the Hub: for
	// example the outbox module's, which records them in the request's
	// database transaction and commits it. The hook calls it once for
	// each request the handler answered with a 2xx status, with the
	// events (none, when there are none to publish, so that Publish can
	// still end the request's work), before the response is sent if the
	// hook still holds it (the handler did not flush, hijack or exceed
	// MaxBody) and before the response is kept for retries. Its error is
	// logged, and a response still held is replaced by 500 and a JSON
	// body {"error":"publish_failed",…}, which a retry runs again; a
	// response already sent stays as it is. ToOthers does not apply:
	// Publish decides whom its events reach. Default: the Hub publishes.
	Publish func(r *http.Request, events []Event) error
}

// Event is one publication [Hub.Hook] makes, as [HookOptions].Event or
// [SetEvent] chose it: Data, encoded as [Hub.Publish] encodes it (pass a
// json.RawMessage for JSON you already have, a [Text] for an HTML
// fragment), on Channel.
type Event struct {
	Channel string
	Data    any
}

// ListUpdate is the default event, React useLiveList's LiveListUpdate: "add" and
// "update" carry the item as the handler answered it, "remove" the id.
// MutationID echoes the request's [MutationIDHeader]. Build one in
// [HookOptions].Event to publish the default shape on more channels.
type ListUpdate struct {
	Type       string          `json:"type"`
	Item       json.RawMessage `json:"item,omitempty"`
	ID         any             `json:"id,omitempty"`
	MutationID string          `json:"mutationId,omitempty"`
}

// Hook returns middleware that publishes what a mutating handler did, so
// every subscriber's list follows without the handler knowing about the
// Hub. After a POST, PUT, PATCH or DELETE answered with a 2xx status it
// publishes on opts.Channel(r), by default,
//
//	POST        {"type":"add","item":<response body>}
//	PUT, PATCH  {"type":"update","item":<response body>}
//	DELETE      {"type":"remove","id":<id>}
//
// with "mutationId" added when the request carried [MutationIDHeader]. The
// response body must be one JSON value. GET, HEAD, OPTIONS and TRACE pass
// through untouched.
//
// Nothing is published after another status, a panic (which propagates
// unchanged) or a hijacked connection. The client has the whole response
// before the publication: the hook holds what the handler writes until it
// returns, flushes, or exceeds MaxBody, sends it with a Content-Length,
// flushes, and only then publishes. (Over HTTP/1.1 the response is then
// complete; over HTTP/2 its bytes are sent.) A handler that flushes
// streams as usual; http.ResponseController reaches Flush, Hijack and the
// deadlines through the hook's ResponseWriter.
//
// An event that cannot be published (body not JSON or beyond MaxBody, no
// id, invalid channel, broker failure) is logged as an error through
// [Options].Logger and never changes the response, which is already sent.
// A request's publications may take up to [Options].WriteTimeout
// together, even if the client has gone: the change happened, and other
// clients need it.
//
// Hook panics if opts sets neither Channel nor Event.
func (h *Hub) Hook(opts HookOptions) func(http.Handler) http.Handler {
	if opts.Channel == nil && opts.Event == nil {
		panic("live: Hook needs HookOptions.Channel or HookOptions.Event")
	}
	if opts.IDField == "" {
		opts.IDField = defaultIDField
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = max(h.maxPublication()-eventRoom, 1)
	}
	if opts.RetryWindow == 0 {
		opts.RetryWindow = defaultRetryWindow
	}
	if opts.Idempotency == nil {
		opts.Idempotency = h.idem
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
				next.ServeHTTP(w, r)
				return
			}
			h.serveHook(&opts, next, w, r)
		})
	}
}

func (h *Hub) serveHook(o *HookOptions, next http.Handler, w http.ResponseWriter, r *http.Request) {
	mid, err := mutationID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_mutation_id", err.Error())
		return
	}
	if mid != "" {
		w.Header().Set(MutationIDHeader, mid)
	}
	hw := &hookWriter{w: w, max: o.MaxBody}
	// settle records what became of a request whose key this hub claimed,
	// once; nil for requests without a key.
	var settle func(ran bool)
	if o.RetryWindow > 0 {
		k, ok := h.retryKeyOf(w, r, mid, max(o.MaxBody, minKeyedBody))
		if !ok {
			return
		}
		if k != nil {
			claimed, sr, err := h.claim(r.Context(), o.Idempotency, k.store)
			switch {
			case err != nil:
				h.refuseClaim(w, err)
				return
			case sr != nil:
				replay(w, sr, k)
				return
			case claimed:
				stop := h.extendClaim(o.Idempotency, k.store)
				done := false
				settle = func(ran bool) {
					if !done {
						done = true
						stop()
						h.settle(o.Idempotency, k, hw, o.RetryWindow, ran)
					}
				}
				defer settle(false) // a panic, or a refused If-Match: a retry runs again
			}
		}
	}
	if o.Version != nil && !h.checkVersion(o, w, r) {
		return
	}

	st := &hookState{}
	// A panic in next propagates from here: nothing below runs, nothing is
	// published, and net/http sees the original value.
	next.ServeHTTP(hw, r.WithContext(context.WithValue(r.Context(), hookKey{}, st)))
	ok2xx := !hw.hijacked && hw.status >= 200 && hw.status <= 299
	if o.Publish != nil && ok2xx {
		// Publish while the response is held, if it is: its failure can
		// still fail the request.
		events, _ := h.hookEvents(o, st, r, hw, mid)
		if err := o.Publish(r, events); err != nil {
			h.stats.hookDropped.Add(1)
			h.opts.Logger.Error("live: HookOptions.Publish failed", "method", r.Method, "path", r.URL.Path,
				"status", hw.status, "response_sent", hw.committed, "err", err)
			if !hw.committed {
				for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Range", "ETag", "Last-Modified", "Location", "Trailer"} {
					w.Header().Del(k)
				}
				writeError(w, http.StatusInternalServerError, "publish_failed", "the change could not be committed with its publication")
				return
			}
		}
	}
	hw.finish()
	if settle != nil {
		// Before publishing: should this node die in between, a retry
		// repeats the response rather than the change.
		settle(true)
	}
	if !ok2xx || o.Publish != nil {
		return
	}

	events, ok := h.hookEvents(o, st, r, hw, mid)
	if !ok || len(events) == 0 {
		return
	}
	// Send the response before anyone hears of the change, so a client
	// awaiting its request sees the answer first.
	_ = http.NewResponseController(w).Flush()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.opts.WriteTimeout)
	defer cancel()
	if o.ToOthers {
		ctx = Except(ctx, r.Header.Get(ConnectionHeader), "")
	}
	for _, ev := range events {
		// The response is sent: the event is promised, and waits in the
		// hub if the broker does not take it now.
		ectx, data, err := h.encodePublication(ctx, ev.Channel, ev.Data)
		if err == nil {
			err = h.promise(ectx, ev.Channel, data)
		}
		if err != nil {
			h.stats.hookDropped.Add(1)
			h.opts.Logger.Error(hookPublishFail, "method", r.Method, "path", r.URL.Path,
				"channel", ev.Channel, "err", err)
		}
	}
}

// hookEvents returns what to publish for a successful request; ok is false
// when the default events could not be built, which it logs.
func (h *Hub) hookEvents(o *HookOptions, st *hookState, r *http.Request, hw *hookWriter, mid string) (events []Event, ok bool) {
	st.mu.Lock()
	skip, set, events := st.skip, st.set, st.events
	st.mu.Unlock()
	if skip {
		return nil, true
	}
	if set {
		return events, true
	}
	fail := func(reason string) ([]Event, bool) {
		h.stats.hookDropped.Add(1)
		h.opts.Logger.Error(hookLogMessage, "method", r.Method, "path", r.URL.Path,
			"status", hw.status, "reason", reason)
		return nil, false
	}
	if hw.overflow {
		return fail(fmt.Sprintf("response body exceeds HookOptions.MaxBody (%d bytes)", o.MaxBody))
	}
	if o.Event != nil {
		return o.Event(r, hw.status, hw.body), true
	}

	channel := o.Channel(r)
	if channel == "" {
		return nil, true
	}
	u := ListUpdate{MutationID: mid}
	switch r.Method {
	case http.MethodPost:
		u.Type = "add"
	case http.MethodPut, http.MethodPatch:
		u.Type = "update"
	case http.MethodDelete:
		u.Type = "remove"
		if o.ID != nil {
			u.ID = o.ID(r, hw.body)
		} else {
			u.ID = defaultID(r, hw.body, o.IDField)
		}
		if noID(u.ID) {
			return fail("no id for the removed item (set HookOptions.ID)")
		}
		return []Event{{Channel: channel, Data: u}}, true
	default:
		return nil, true
	}
	if !json.Valid(hw.body) || !utf8.Valid(hw.body) {
		return fail("response body is not one JSON value in UTF-8")
	}
	u.Item = hw.body
	return []Event{{Channel: channel, Data: u}}, true
}

// defaultID finds the id of a removed item; see HookOptions.ID.
func defaultID(r *http.Request, body []byte, field string) any {
	if v := r.PathValue(field); v != "" {
		return v
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) == nil {
		if v, ok := obj[field]; ok && !noID(v) {
			return v
		}
	}
	if r.Pattern == "" {
		p := r.URL.Path
		return p[strings.LastIndexByte(p, '/')+1:]
	}
	last := r.Pattern[strings.LastIndexByte(r.Pattern, '/')+1:]
	if name, ok := strings.CutPrefix(last, "{"); ok {
		name = strings.TrimSuffix(strings.TrimSuffix(name, "}"), "...")
		if name != "$" {
			return r.PathValue(name)
		}
	}
	return nil
}

func noID(id any) bool {
	switch v := id.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case json.RawMessage:
		s := strings.TrimSpace(string(v))
		return s == "" || s == "null" || s == `""`
	}
	return false
}

// mutationID returns the request's valid mutation id, "" if it has none.
func mutationID(r *http.Request) (string, error) {
	vs := r.Header.Values(MutationIDHeader)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("live: the request has %d %s headers; send one", len(vs), MutationIDHeader)
	}
	v := vs[0]
	if len(v) > maxMutationID {
		return "", fmt.Errorf("live: %s is longer than %d bytes", MutationIDHeader, maxMutationID)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c > '~' {
			return "", fmt.Errorf("live: %s must be printable ASCII", MutationIDHeader)
		}
	}
	return v, nil
}

// hookKey keys a request's *hookState in its context.
type hookKey struct{}

// hookState is what a handler told the hook about its request.
type hookState struct {
	mu     sync.Mutex // guards the fields below
	skip   bool
	set    bool
	events []Event
}

func stateOf(r *http.Request) *hookState {
	st, _ := r.Context().Value(hookKey{}).(*hookState)
	return st
}

// SetEvent makes the [Hub.Hook] that wraps the handler publish v on
// channel, instead of its default events, if the request succeeds. A bulk
// import calls it once, so subscribers get one event (say "refetch")
// rather than one per row. Calling it again adds another event; events
// are published in order. Outside a Hook it does nothing, so handlers
// stay usable unwrapped.
func SetEvent(r *http.Request, channel string, v any) {
	if st := stateOf(r); st != nil {
		st.mu.Lock()
		st.set = true
		st.events = append(st.events, Event{Channel: channel, Data: v})
		st.mu.Unlock()
	}
}

// SkipEvent makes the [Hub.Hook] that wraps the handler publish nothing
// for this request, whatever [SetEvent] said: for a request that turned
// out to change nothing, or whose handler published itself. Outside a
// Hook it does nothing.
func SkipEvent(r *http.Request) {
	if st := stateOf(r); st != nil {
		st.mu.Lock()
		st.skip = true
		st.mu.Unlock()
	}
}

// checkVersion answers the request and returns false if its If-Match
// does not admit the resource's current version.
func (h *Hub) checkVersion(o *HookOptions, w http.ResponseWriter, r *http.Request) bool {
	tags := r.Header.Values("If-Match")
	if len(tags) == 0 {
		return true
	}
	current, err := o.Version(r)
	if err != nil {
		h.opts.Logger.Error("live: hook: HookOptions.Version failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "version_unavailable", "the current version could not be read")
		return false
	}
	if ifMatch(tags, current) {
		return true
	}
	WriteConflict(w, http.StatusPreconditionFailed, current)
	return false
}
