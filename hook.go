package live

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
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
	// event calls it "id" regardless, as the seed expects. Default "id".
	IDField string

	// ID returns the id a successful DELETE removed, given the response
	// body; nil or "" means none, and nothing is published. Default: the
	// route's {IDField} wildcard, else the IDField member of a JSON object
	// response, else the last wildcard of the route pattern (for requests
	// not routed by http.ServeMux, the last path segment). Ids from the
	// path are strings and the seed compares ids with ===: if your ids are
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
	// the handler. The check is not atomic with the handler's write: a
	// concurrent request can change the resource in between. It rejects
	// stale edits early; handlers that must never lose an update compare
	// and write atomically and answer with [WriteConflict]. An error from
	// Version is logged and answered with 500. Default: If-Match is left
	// to the handler.
	Version func(r *http.Request) (current string, err error)

	// RetryWindow is how long the hook remembers the response to a
	// request that carried [MutationIDHeader] or [IdempotencyKeyHeader]:
	// a retry within it (same method, path, user and key) is answered
	// with the first response, marked Idempotent-Replayed: true, and
	// neither runs the handler nor publishes again. A retry that arrives
	// while the first request runs waits for it (and gets 409
	// "in_progress" if its own context ends first). 2xx and 4xx answers
	// are kept; after a 5xx, a panic or a hijack a retry runs again, as it
	// does when the first request ran longer than a minute or its node
	// died. A response beyond MaxBody is repeated as 409
	// "already_applied". Default 10 minutes; negative turns it off.
	RetryWindow time.Duration

	// Idempotency keeps those responses. Default: in the Hub's memory (at
	// most 64 MiB, the oldest giving way first), which a retry landing on
	// another node does not see; the Redis and PostgreSQL broker modules
	// have stores that nodes share.
	Idempotency IdempotencyStore

	// ToOthers makes the hook's publications skip the connection that
	// made the change, named by the request's [ConnectionHeader] (live.js
	// sends it with its writes), as [Except] does: for clients that apply
	// their own changes and do not send mutation ids. Default: every
	// subscriber gets every publication.
	ToOthers bool
}

// Event is one publication [Hub.Hook] makes, as [HookOptions].Event or
// [SetEvent] chose it: Data, encoded as [Hub.Publish] encodes it (pass a
// json.RawMessage for JSON you already have), on Channel.
type Event struct {
	Channel string
	Data    any
}

// ListUpdate is the default event, the seed's LiveListUpdate: "add" and
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
// Each publication may take up to [Options].WriteTimeout, even if the
// client has gone: the change happened, and other clients need it.
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
		key, err := h.idempotencyKey(r, mid)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_idempotency_key", err.Error())
			return
		}
		if key != "" {
			claimed, sr := h.claim(r.Context(), o.Idempotency, key)
			if sr != nil {
				replay(w, sr)
				return
			}
			if claimed {
				done := false
				settle = func(ran bool) {
					if !done {
						done = true
						h.settle(o.Idempotency, key, hw, o.RetryWindow, ran)
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
	hw.finish()
	if settle != nil {
		// Before publishing: should this node die in between, a retry
		// repeats the response rather than the change.
		settle(true)
	}
	if hw.hijacked || hw.status < 200 || hw.status > 299 {
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
		if _, err := h.Publish(ctx, ev.Channel, ev.Data); err != nil {
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

// ifMatch reports whether the If-Match header values admit current, with
// the strong comparison RFC 9110 requires for If-Match. Unquoted tags are
// accepted as if quoted, for clients that send a bare version.
func ifMatch(values []string, current string) bool {
	if current == "" {
		return false
	}
	cur := entityTag(current)
	for _, v := range values {
		for {
			var tag string
			tag, v = nextTag(v)
			if tag == "" {
				break
			}
			if tag == "*" || (!strings.HasPrefix(cur, "W/") && entityTag(tag) == cur) {
				return true
			}
		}
	}
	return false
}

// entityTag returns v as an entity tag: quoted unless it already is.
func entityTag(v string) string {
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `W/"`) {
		return v
	}
	return `"` + v + `"`
}

// nextTag returns the first entity tag of an If-Match list and the rest.
// Quoted tags may contain commas, so the list is scanned, not split.
func nextTag(s string) (tag, rest string) {
	s = strings.TrimLeft(s, " \t,")
	if s == "" {
		return "", ""
	}
	open := 0
	if strings.HasPrefix(s, "W/") {
		open = 2
	}
	if open < len(s) && s[open] == '"' {
		if end := strings.IndexByte(s[open+1:], '"'); end >= 0 {
			n := open + end + 2
			return s[:n], s[n:]
		}
	}
	if i := strings.IndexByte(s, ','); i >= 0 {
		return strings.TrimSpace(s[:i]), s[i:]
	}
	return strings.TrimSpace(s), ""
}

// conflictBody is the JSON body of a 409 or 412 answer.
type conflictBody struct {
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Version json.RawMessage `json:"version"`
}

// WriteConflict answers a write that lost a race the way [Hub.Hook]
// answers a stale If-Match: status (412 when the request's If-Match
// failed, 409 when a version sent in the body did) and the JSON body
// {"error":"conflict","message":…,"version":<current>}, where current is
// the resource's version: a JSON number when it is one (as a State's
// versions are), otherwise a string, "" if the resource no longer exists.
// Call it from a
// handler's atomic compare-and-write, which the hook's own check cannot
// replace; the client refetches, or merges onto version, and retries.
func WriteConflict(w http.ResponseWriter, status int, current string) {
	msg := "the resource has changed; merge onto the current version and retry"
	if current == "" {
		msg = "the resource no longer exists"
	}
	writeConflict(w, status, msg, current)
}

// writeConflict writes the body of every 409 and 412 the package answers:
// the Hook's, WriteConflict's and a State's.
func writeConflict(w http.ResponseWriter, status int, msg, version string) {
	v := json.RawMessage(quote(version))
	if _, ok := parseSeq(version); ok {
		v = json.RawMessage(version)
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(conflictBody{Error: "conflict", Message: msg, Version: v})
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

// hookWriter holds a handler's response until the handler returns,
// flushes, hijacks or writes more than max bytes, and keeps the body, up
// to max bytes, for the event. Holding lets finish send a small response
// with a Content-Length, complete before the publication.
type hookWriter struct {
	w         http.ResponseWriter
	max       int
	status    int    // final status, 0 until WriteHeader or Write
	committed bool   // status and held body passed to w
	body      []byte // the response body so far, while not overflow
	overflow  bool   // the body exceeded max; capture stopped
	hijacked  bool
}

func (hw *hookWriter) Header() http.Header { return hw.w.Header() }

// Unwrap lets http.ResponseController reach the deadlines and full duplex
// of the writer underneath.
func (hw *hookWriter) Unwrap() http.ResponseWriter { return hw.w }

func (hw *hookWriter) WriteHeader(code int) {
	switch {
	case hw.hijacked:
		return
	case hw.committed:
		hw.w.WriteHeader(code) // net/http reports the superfluous call
	case code < 100 || code > 999:
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	case code < 200 && code != http.StatusSwitchingProtocols:
		hw.w.WriteHeader(code) // informational: sent at once, status still open
	case hw.status == 0:
		hw.status = code
	}
}

func (hw *hookWriter) Write(p []byte) (int, error) {
	if hw.hijacked {
		return 0, http.ErrHijacked
	}
	if hw.status == 0 {
		hw.status = http.StatusOK
	}
	if !bodyAllowed(hw.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if !hw.overflow && len(hw.body)+len(p) > hw.max {
		if err := hw.commit(); err != nil {
			return 0, err
		}
		hw.overflow, hw.body = true, nil
	}
	if !hw.committed {
		hw.body = append(hw.body, p...)
		return len(p), nil
	}
	n, err := hw.w.Write(p)
	if !hw.overflow {
		hw.body = append(hw.body, p[:n]...)
	}
	return n, err
}

// Flush and FlushError send what is held and flush; handlers that stream
// through the hook keep streaming.
func (hw *hookWriter) Flush() { _ = hw.FlushError() }

func (hw *hookWriter) FlushError() error {
	if hw.hijacked {
		return http.ErrHijacked
	}
	if err := hw.commit(); err != nil {
		return err
	}
	return http.NewResponseController(hw.w).Flush()
}

// Hijack sends what is held and hands over the connection; the hook then
// publishes nothing, as it cannot know the outcome.
func (hw *hookWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if hw.status != 0 {
		if err := hw.commit(); err != nil {
			return nil, nil, err
		}
	}
	c, rw, err := http.NewResponseController(hw.w).Hijack()
	if err == nil {
		hw.hijacked = true
	}
	return c, rw, err
}

// commit passes the status and the held body to w.
func (hw *hookWriter) commit() error {
	if hw.committed {
		return nil
	}
	hw.committed = true
	if hw.status == 0 {
		hw.status = http.StatusOK
	}
	hw.w.WriteHeader(hw.status)
	if len(hw.body) == 0 {
		return nil
	}
	_, err := hw.w.Write(hw.body)
	return err
}

// finish sends a response still held when the handler returned, with a
// Content-Length unless the handler chose its framing.
func (hw *hookWriter) finish() {
	if hw.committed || hw.hijacked {
		return
	}
	if hw.status == 0 {
		hw.status = http.StatusOK
	}
	hd := hw.w.Header()
	if bodyAllowed(hw.status) && !hasFraming(hd) {
		hd.Set("Content-Length", strconv.Itoa(len(hw.body)))
	}
	_ = hw.commit()
}

// hasFraming reports whether the handler set a Content-Length, a
// Transfer-Encoding or trailers, which a Content-Length would contradict.
func hasFraming(hd http.Header) bool {
	if hd.Get("Content-Length") != "" || hd.Get("Transfer-Encoding") != "" || hd.Get("Trailer") != "" {
		return true
	}
	for k := range hd {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
