package live

import (
	"bytes"
	"container/heap"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// IdempotencyKeyHeader is the common header by which a client names a
// request it may retry. [Hub.Hook] treats it, and [MutationIDHeader], as a
// key: a retry with the same key gets the first response back instead of
// running the handler again.
const IdempotencyKeyHeader = "Idempotency-Key"

// An IdempotencyStore remembers, for a while, what became of requests
// that carried a key, so that [Hub.Hook] recognises their retries on any
// node that shares the store. The hub stores opaque bytes; keys are
// fixed-length hashes, "idem:<scope>:<request>", where scope stands for
// the user. Implementations must be safe for concurrent use. The
// default, one per Hub, keeps them in memory; the Redis, NATS and
// PostgreSQL broker modules have stores that nodes share.
//
// A store may also have a method
//
//	Extend(ctx context.Context, key string, ttl time.Duration) error
//
// that keeps this hub's claim of key (not a saved response) reserved for
// another ttl. The hub calls it while the request runs, every third of
// the lease, so that a handler slower than the lease is not run a second
// time by a retry. A store without it lets a retry run a request still
// running after a minute.
type IdempotencyStore interface {
	// Claim reserves key for ttl unless it is reserved or saved already.
	// claimed reports whether this call reserved it; if not, response is
	// what Save recorded, or nil while the request that reserved it runs.
	// An error refuses the request (503): the hub cannot tell whether it
	// ran already.
	Claim(ctx context.Context, key string, ttl time.Duration) (claimed bool, response []byte, err error)

	// Save records response under key, which this hub claimed, for ttl.
	Save(ctx context.Context, key string, response []byte, ttl time.Duration) error

	// Release drops this hub's claim of key, so a retry runs the request.
	Release(ctx context.Context, key string) error
}

// claimExtender is the optional ability of stores to renew a claim.
type claimExtender interface {
	Extend(ctx context.Context, key string, ttl time.Duration) error
}

// Bounds of idempotent requests.
const (
	maxIdempotencyKey  = 255              // bytes of an Idempotency-Key
	defaultRetryWindow = 10 * time.Minute // how long responses are kept for retries
	claimTTL           = time.Minute      // a claim's lease in a shared store, renewed while its request runs
	minKeyedBody       = 1 << 20          // a keyed request's body may be MaxBody or this, whichever is larger
	maxStoredResponse  = 1 << 20          // bytes of a stored response; a larger one is kept as "already applied"
)

// storedResponse is what a store keeps of a response.
type storedResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	Large  bool        `json:"large,omitempty"` // the body was beyond MaxBody and not kept
	// Request fingerprints the request that got the response (method,
	// path, query and body): a retry with the same key and another
	// request is refused. Empty in records written before it existed.
	Request string `json:"request,omitempty"`
	// Withheld marks the outcome of a request from a caller without a
	// user: its response is never repeated, since nobody can be shown to
	// be that caller.
	Withheld bool `json:"withheld,omitempty"`
}

// stillRunning stands for the answer to a retry that gave up waiting for
// the first request.
var stillRunning = &storedResponse{Status: http.StatusConflict}

// replayedHeaders are the response headers a replay repeats: those that
// describe the representation, say how to cache it, or name what the
// request made. A record keeps them in its "header" member, which records
// of every version have, so a record saved before a header joined this
// list replays with the headers it has. Set-Cookie is never kept: a
// session is not the response's to repeat.
var replayedHeaders = []string{
	"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
	"Content-Location", "Content-Type", "ETag", "Expires", "Last-Modified", "Link",
	"Location", "Vary", "X-Content-Type-Options", MutationIDHeader,
}

// errIdempotencyFull is the memory store's answer to a claim when it is
// full of requests still running.
var errIdempotencyFull = errors.New("live: the idempotency store is full of running requests")

// retryKey is what identifies a keyed request: its store key, what the
// request was, and whether the caller has a user to scope it by.
type retryKey struct {
	store   string
	request string
	user    bool
}

// retryKeyOf returns the retry key of r, nil when r carries none. It reads
// a keyed request's body, at most limit bytes, to fingerprint it, and
// gives r a copy to read. Keys are scoped to the method, the path and the
// user (Options.Identify), so that nobody replays someone else's response.
// A request it cannot take it answers, and returns ok false.
func (h *Hub) retryKeyOf(w http.ResponseWriter, r *http.Request, mid string, limit int) (k *retryKey, ok bool) {
	key := mid
	if key == "" {
		vs := r.Header.Values(IdempotencyKeyHeader)
		switch {
		case len(vs) == 0:
			return nil, true
		case len(vs) > 1:
			writeError(w, http.StatusBadRequest, "bad_idempotency_key", fmt.Sprintf("live: the request has %d %s headers; send one", len(vs), IdempotencyKeyHeader))
			return nil, false
		case len(vs[0]) == 0 || len(vs[0]) > maxIdempotencyKey || !printable(vs[0]):
			writeError(w, http.StatusBadRequest, "bad_idempotency_key", fmt.Sprintf("live: %s must be 1 to %d printable ASCII characters", IdempotencyKeyHeader, maxIdempotencyKey))
			return nil, false
		}
		key = vs[0]
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
		switch {
		case err != nil:
			writeError(w, http.StatusBadRequest, "bad_body", "live: the request body could not be read")
			return nil, false
		case len(b) > limit:
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("live: a request with %s or %s may carry at most %d bytes", MutationIDHeader, IdempotencyKeyHeader, limit))
			return nil, false
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	user := ""
	if h.opts.Identify != nil {
		if id, err := h.opts.Identify(r); err == nil {
			user = id.User
		}
	}
	scope := sha256.Sum256([]byte("user\x00" + user))
	req := sha256.New()
	for _, s := range []string{r.Method, r.URL.Path, r.URL.RawQuery} {
		req.Write(binary.AppendUvarint(nil, uint64(len(s))))
		req.Write([]byte(s))
	}
	req.Write(body)
	// The request part of the store key: method, path and key,
	// length-prefixed so that no two of them run together.
	sum := sha256.New()
	for _, s := range []string{r.Method, r.URL.Path, user, key} {
		sum.Write(binary.AppendUvarint(nil, uint64(len(s))))
		sum.Write([]byte(s))
	}
	return &retryKey{
		store:   "idem:" + hex.EncodeToString(scope[:16]) + ":" + hex.EncodeToString(sum.Sum(nil)),
		request: hex.EncodeToString(req.Sum(nil)[:16]),
		user:    user != "",
	}, true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// claim claims key, waiting while a request with the same key runs. It
// returns claimed, or the response to replay, or the store's error.
func (h *Hub) claim(ctx context.Context, store IdempotencyStore, key string) (claimed bool, replay *storedResponse, err error) {
	wait := 5 * time.Millisecond
	for {
		claimed, b, err := store.Claim(ctx, key, h.lease)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return false, stillRunning, nil
			}
			return false, nil, err
		case claimed:
			return true, nil, nil
		case b != nil:
			var sr storedResponse
			if json.Unmarshal(b, &sr) != nil || sr.Status == 0 {
				return false, nil, errors.New("live: the idempotency store returned an unreadable response")
			}
			return false, &sr, nil
		}
		// The first request with this key is running: wait for it.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, stillRunning, nil
		case <-t.C:
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// refuseClaim answers a keyed request whose claim failed: the hub cannot
// tell whether it ran already, so it runs nothing.
func (h *Hub) refuseClaim(w http.ResponseWriter, err error) {
	h.stats.retriesRefused.Add(1)
	h.warnRetries("live: a keyed request was refused with 503: the idempotency store could not claim its key", err)
	w.Header().Set("Retry-After", "1")
	if errors.Is(err, errIdempotencyFull) {
		writeError(w, http.StatusServiceUnavailable, "busy", "too many requests are running; retry later")
		return
	}
	writeError(w, http.StatusServiceUnavailable, "idempotency_unavailable", "the server cannot tell whether this request ran; retry later")
}

// warnRetries logs a failure of the retry window, at most once every ten
// seconds, so that a flood does not flood the log too.
func (h *Hub) warnRetries(msg string, err error) {
	now := time.Now().UnixNano()
	last := h.retryWarned.Load()
	if now-last < int64(10*time.Second) || !h.retryWarned.CompareAndSwap(last, now) {
		return
	}
	if err != nil {
		h.opts.Logger.Warn(msg, "err", err)
	} else {
		h.opts.Logger.Warn(msg)
	}
}

// replay answers a retry with the first response, if the caller may see it.
func replay(w http.ResponseWriter, sr *storedResponse, k *retryKey) {
	if sr == stillRunning {
		writeError(w, http.StatusConflict, "in_progress", "a request with this key is still running; retry later")
		return
	}
	if sr.Request != "" && sr.Request != k.request {
		writeError(w, http.StatusUnprocessableEntity, "key_reused", "this key was used for another request; use a new key for a new request")
		return
	}
	hd := w.Header()
	hd.Set("Idempotent-Replayed", "true")
	switch {
	case sr.Withheld:
		writeError(w, http.StatusConflict, "already_applied", "a request with this key was applied; its response is repeated only to a signed-in user who made it")
	case sr.Large:
		writeError(w, http.StatusConflict, "already_applied", "a request with this key was applied; its response is too large to repeat")
	default:
		for k, v := range sr.Header {
			hd[k] = v
		}
		hd.Set("Content-Length", fmt.Sprint(len(sr.Body)))
		w.WriteHeader(sr.Status)
		w.Write(sr.Body)
	}
}

// kept reports whether a response with status is kept for retries: what
// the request made of the resource, and refusals of the request itself.
// Refusals that depend on who asks or when (authentication, permission,
// rate, timeouts, conflicts with the current state, preconditions) are not:
// a retry asks again. Neither are 5xx answers.
func kept(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired,
		http.StatusRequestTimeout, http.StatusConflict, http.StatusPreconditionFailed,
		http.StatusLocked, http.StatusFailedDependency, http.StatusTooEarly,
		http.StatusPreconditionRequired, http.StatusTooManyRequests, http.StatusUnavailableForLegalReasons:
		return false
	}
	return status >= 200 && status < 500
}

// settle saves what became of a claimed request, or releases the claim
// when a retry should ask again (see kept; a panic, a hijack).
func (h *Hub) settle(store IdempotencyStore, k *retryKey, hw *hookWriter, window time.Duration, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.WriteTimeout)
	defer cancel()
	// A caller without a user gets no response repeated, so only the
	// fact that a change was made is kept: a refusal changed nothing.
	if !ok || hw.hijacked || !kept(hw.status) || (!k.user && hw.status >= 400) {
		if err := store.Release(ctx, k.store); err != nil {
			h.opts.Logger.Warn("live: idempotency store failed to release a key", "err", err)
		}
		return
	}
	sr := storedResponse{Status: hw.status, Request: k.request, Withheld: !k.user}
	if !sr.Withheld {
		sr.Large = hw.overflow
		if !hw.overflow {
			sr.Body = hw.body
		}
		for _, name := range replayedHeaders {
			if v := hw.Header().Values(name); len(v) > 0 {
				if sr.Header == nil {
					sr.Header = make(http.Header)
				}
				sr.Header[name] = v
			}
		}
	}
	b, _ := json.Marshal(sr)
	if len(b) > maxStoredResponse {
		sr.Body, sr.Large = nil, true
		b, _ = json.Marshal(sr)
	}
	if err := store.Save(ctx, k.store, b, window); err != nil {
		h.stats.retriesLost.Add(1)
		h.warnRetries("live: idempotency store failed to save a response; a retry will run the request again", err)
	}
}

// extendClaim renews key's lease in store, if it can, until the returned
// stop is called; stop returns once renewing has ended.
func (h *Hub) extendClaim(store IdempotencyStore, key string) (stop func()) {
	ext, ok := store.(claimExtender)
	if !ok {
		return func() {}
	}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(h.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), h.lease/3)
			err := ext.Extend(ctx, key, h.lease)
			cancel()
			if err != nil {
				h.warnRetries("live: idempotency store failed to extend a running request's claim; a retry may run it again", err)
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

// The default store.

// memoryIdempotency is the default IdempotencyStore. It holds at most
// maxEntries keys and maxBytes (each entry costing its response, its key
// and entryCost for the bookkeeping). A claim is never evicted: it lasts
// until its request settles, whatever the lease, since it cannot outlive
// the process. When room is needed, expired responses go first, then the
// oldest response of the user (scope) that holds the most, so that one
// user's traffic evicts its own responses before anyone else's. A claim
// that finds no room is refused; each response dropped before its window
// ends is reported to lost.
type memoryIdempotency struct {
	maxBytes, maxEntries int
	lost                 func(n int) // called, outside mu, with the responses dropped within their window

	mu      sync.Mutex // guards the fields below
	byKey   map[string]*memEntryIdem
	scopes  map[string]*idemScope
	heavy   scopeHeap  // scopes holding responses, heaviest first
	saved   *list.List // of *memEntryIdem with responses, in the order saved
	bytes   int
	entries int
}

// entryCost approximates what an entry costs beside its key and response.
const entryCost = 256

type memEntryIdem struct {
	key      string
	scope    *idemScope
	response []byte // nil while claimed
	expires  time.Time
	inSaved  *list.Element // in memoryIdempotency.saved; nil while claimed
	inScope  *list.Element // in scope.saved; nil while claimed
}

func (e *memEntryIdem) cost() int { return entryCost + len(e.key) + len(e.response) }

// idemScope is the entries of one user.
type idemScope struct {
	name   string
	saved  *list.List // of *memEntryIdem with responses, oldest first
	weight int        // cost of the responses in saved
	claims int
	index  int // in heavy, -1 when saved is empty
}

// scopeHeap orders scopes by weight, heaviest first.
type scopeHeap []*idemScope

func (s scopeHeap) Len() int           { return len(s) }
func (s scopeHeap) Less(i, j int) bool { return s[i].weight > s[j].weight }
func (s scopeHeap) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *scopeHeap) Push(x any) {
	sc := x.(*idemScope)
	sc.index = len(*s)
	*s = append(*s, sc)
}
func (s *scopeHeap) Pop() any {
	old := *s
	sc := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	sc.index = -1
	return sc
}

// Default bounds of the memory store, documented on HookOptions.Idempotency.
const (
	memIdemBytes   = 64 << 20
	memIdemEntries = 100_000
)

func newMemoryIdempotency(lost func(int)) *memoryIdempotency {
	return &memoryIdempotency{
		maxBytes: memIdemBytes, maxEntries: memIdemEntries, lost: lost,
		byKey: make(map[string]*memEntryIdem), scopes: make(map[string]*idemScope), saved: list.New(),
	}
}

// scopeOf returns the scope part of a hub's key "idem:<scope>:<request>".
func scopeOf(key string) string {
	rest, ok := strings.CutPrefix(key, "idem:")
	if !ok {
		return ""
	}
	scope, _, _ := strings.Cut(rest, ":")
	return scope
}

func (m *memoryIdempotency) Claim(_ context.Context, key string, _ time.Duration) (bool, []byte, error) {
	m.mu.Lock()
	now := time.Now()
	if e := m.byKey[key]; e != nil {
		if e.response == nil || now.Before(e.expires) {
			m.mu.Unlock()
			return false, e.response, nil
		}
		m.removeLocked(e)
	}
	e := &memEntryIdem{key: key}
	dropped, ok := m.makeRoomLocked(e.cost(), now)
	if ok {
		e.scope = m.scopeLocked(scopeOf(key))
		e.scope.claims++
		m.byKey[key] = e
		m.bytes += e.cost()
		m.entries++
	}
	m.mu.Unlock()
	m.report(dropped)
	if !ok {
		return false, nil, errIdempotencyFull
	}
	return true, nil, nil
}

func (m *memoryIdempotency) Save(_ context.Context, key string, response []byte, ttl time.Duration) error {
	m.mu.Lock()
	if e := m.byKey[key]; e != nil {
		m.removeLocked(e)
	}
	now := time.Now()
	e := &memEntryIdem{key: key, response: response, expires: now.Add(ttl)}
	dropped, ok := m.makeRoomLocked(e.cost(), now)
	if ok {
		e.scope = m.scopeLocked(scopeOf(key))
		e.inSaved = m.saved.PushBack(e)
		e.inScope = e.scope.saved.PushBack(e)
		m.byKey[key] = e
		m.bytes += e.cost()
		m.entries++
		m.weighLocked(e.scope, e.cost())
	} else {
		dropped++ // the response itself
	}
	m.mu.Unlock()
	m.report(dropped)
	return nil
}

func (m *memoryIdempotency) Release(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.byKey[key]; e != nil && e.response == nil {
		m.removeLocked(e)
	}
	return nil
}

func (m *memoryIdempotency) report(dropped int) {
	if dropped > 0 && m.lost != nil {
		m.lost(dropped)
	}
}

// makeRoomLocked drops expired responses, then live ones from the
// heaviest scope, until an entry costing cost fits. It returns how many
// live responses it dropped, and whether the entry fits.
func (m *memoryIdempotency) makeRoomLocked(cost int, now time.Time) (dropped int, ok bool) {
	if cost > m.maxBytes {
		return 0, false
	}
	full := func() bool { return m.entries+1 > m.maxEntries || m.bytes+cost > m.maxBytes }
	// Responses are saved in the order they expire when every hook has
	// the same RetryWindow; one kept longer may shelter expired ones
	// behind it, which then give way below with the live ones (uncounted),
	// rather than cost a walk of the whole list.
	for m.saved.Len() > 0 && full() {
		e := m.saved.Front().Value.(*memEntryIdem)
		if now.Before(e.expires) {
			break
		}
		m.removeLocked(e)
	}
	for full() {
		if len(m.heavy) == 0 {
			return dropped, false
		}
		e := m.heavy[0].saved.Front().Value.(*memEntryIdem)
		if now.Before(e.expires) {
			dropped++
		}
		m.removeLocked(e)
	}
	return dropped, true
}

func (m *memoryIdempotency) scopeLocked(name string) *idemScope {
	sc := m.scopes[name]
	if sc == nil {
		sc = &idemScope{name: name, saved: list.New(), index: -1}
		m.scopes[name] = sc
	}
	return sc
}

// weighLocked adds delta to sc's weight and keeps heavy in order.
func (m *memoryIdempotency) weighLocked(sc *idemScope, delta int) {
	sc.weight += delta
	switch {
	case sc.saved.Len() == 0 && sc.index >= 0:
		heap.Remove(&m.heavy, sc.index)
	case sc.saved.Len() > 0 && sc.index < 0:
		heap.Push(&m.heavy, sc)
	case sc.index >= 0:
		heap.Fix(&m.heavy, sc.index)
	}
}

func (m *memoryIdempotency) removeLocked(e *memEntryIdem) {
	delete(m.byKey, e.key)
	m.bytes -= e.cost()
	m.entries--
	sc := e.scope
	if e.response == nil {
		sc.claims--
	} else {
		m.saved.Remove(e.inSaved)
		sc.saved.Remove(e.inScope)
		m.weighLocked(sc, -e.cost())
	}
	if sc.claims == 0 && sc.saved.Len() == 0 {
		delete(m.scopes, sc.name)
	}
}
