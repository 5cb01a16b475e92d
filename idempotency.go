package live

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
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
// fixed-length hashes. Implementations must be safe for concurrent use.
// The default, one per Hub, keeps them in memory; the Redis and
// PostgreSQL broker modules have stores that nodes share.
type IdempotencyStore interface {
	// Claim reserves key for ttl unless it is reserved or saved already.
	// claimed reports whether this call reserved it; if not, response is
	// what Save recorded, or nil while the request that reserved it runs.
	Claim(ctx context.Context, key string, ttl time.Duration) (claimed bool, response []byte, err error)

	// Save records response under key, which this hub claimed, for ttl.
	Save(ctx context.Context, key string, response []byte, ttl time.Duration) error

	// Release drops this hub's claim of key, so a retry runs the request.
	Release(ctx context.Context, key string) error
}

// Bounds of idempotent requests.
const (
	maxIdempotencyKey  = 255              // bytes of an Idempotency-Key
	defaultRetryWindow = 10 * time.Minute // how long responses are kept for retries
	claimTTL           = time.Minute      // how long a request may run before a retry runs it again
)

// storedResponse is what a store keeps of a response.
type storedResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	Large  bool        `json:"large,omitempty"` // the body was beyond MaxBody and not kept
}

// stillRunning stands for the answer to a retry that gave up waiting for
// the first request.
var stillRunning = &storedResponse{Status: http.StatusConflict}

// replayedHeaders are the response headers a replay repeats.
var replayedHeaders = []string{"Content-Type", "Location", "ETag", "Last-Modified", MutationIDHeader}

// idempotencyKey returns the store key of r, or "" when r carries none.
// Keys are scoped to the method, the path and the user, so that nobody
// replays someone else's response.
func (h *Hub) idempotencyKey(r *http.Request, mid string) (string, error) {
	key := mid
	if key == "" {
		vs := r.Header.Values(IdempotencyKeyHeader)
		switch {
		case len(vs) == 0:
			return "", nil
		case len(vs) > 1:
			return "", fmt.Errorf("live: the request has %d %s headers; send one", len(vs), IdempotencyKeyHeader)
		case len(vs[0]) == 0 || len(vs[0]) > maxIdempotencyKey || !printable(vs[0]):
			return "", fmt.Errorf("live: %s must be 1 to %d printable ASCII characters", IdempotencyKeyHeader, maxIdempotencyKey)
		}
		key = vs[0]
	}
	user := ""
	if h.opts.Identify != nil {
		if id, err := h.opts.Identify(r); err == nil {
			user = id.User
		}
	}
	sum := sha256.Sum256([]byte(r.Method + "\x00" + r.URL.Path + "\x00" + user + "\x00" + key))
	return "idem:" + hex.EncodeToString(sum[:]), nil
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
// returns claimed, or the response to replay; on a store failure it
// logs, and the request runs as if it had no key.
func (h *Hub) claim(ctx context.Context, store IdempotencyStore, key string) (claimed bool, replay *storedResponse) {
	wait := 5 * time.Millisecond
	for {
		claimed, b, err := store.Claim(ctx, key, claimTTL)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				h.opts.Logger.Warn("live: idempotency store failed; running the request without it", "err", err)
			}
			return false, nil
		case claimed:
			return true, nil
		case b != nil:
			var sr storedResponse
			if json.Unmarshal(b, &sr) != nil || sr.Status == 0 {
				h.opts.Logger.Warn("live: idempotency store returned an unreadable response; running the request")
				return false, nil
			}
			return false, &sr
		}
		// The first request with this key is running: wait for it.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, stillRunning
		case <-t.C:
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// replay answers a retry with the first response.
func replay(w http.ResponseWriter, sr *storedResponse) {
	if sr == stillRunning {
		writeError(w, http.StatusConflict, "in_progress", "a request with this key is still running; retry later")
		return
	}
	hd := w.Header()
	for k, v := range sr.Header {
		hd[k] = v
	}
	hd.Set("Idempotent-Replayed", "true")
	switch {
	case sr.Large:
		writeError(w, http.StatusConflict, "already_applied", "a request with this key was applied; its response is too large to repeat")
	default:
		hd.Set("Content-Length", fmt.Sprint(len(sr.Body)))
		w.WriteHeader(sr.Status)
		w.Write(sr.Body)
	}
}

// settle saves what became of a claimed request, or releases the claim
// when a retry should run it again (a 5xx, a panic, a hijack).
func (h *Hub) settle(store IdempotencyStore, key string, hw *hookWriter, window time.Duration, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.WriteTimeout)
	defer cancel()
	if !ok || hw.hijacked || hw.status == 0 || hw.status >= 500 {
		if err := store.Release(ctx, key); err != nil {
			h.opts.Logger.Warn("live: idempotency store failed to release a key", "err", err)
		}
		return
	}
	sr := storedResponse{Status: hw.status, Large: hw.overflow}
	if !hw.overflow {
		sr.Body = hw.body
	}
	for _, k := range replayedHeaders {
		if v := hw.Header().Values(k); len(v) > 0 {
			if sr.Header == nil {
				sr.Header = make(http.Header)
			}
			sr.Header[k] = v
		}
	}
	b, _ := json.Marshal(sr)
	if err := store.Save(ctx, key, b, window); err != nil {
		h.opts.Logger.Warn("live: idempotency store failed to save a response; a retry will run the request again", "err", err)
	}
}

// memoryIdempotency is the default IdempotencyStore: entries in memory,
// expired when read or when room is needed, at most maxBytes of responses
// and maxEntries keys, the oldest giving way first.
type memoryIdempotency struct {
	maxBytes, maxEntries int

	mu    sync.Mutex // guards the fields below
	byKey map[string]*list.Element
	order *list.List // of *memEntryIdem, oldest first
	bytes int
}

type memEntryIdem struct {
	key      string
	response []byte // nil while claimed
	expires  time.Time
}

func newMemoryIdempotency() *memoryIdempotency {
	return &memoryIdempotency{maxBytes: 64 << 20, maxEntries: 100_000, byKey: make(map[string]*list.Element), order: list.New()}
}

func (m *memoryIdempotency) Claim(_ context.Context, key string, ttl time.Duration) (bool, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if el := m.byKey[key]; el != nil {
		e := el.Value.(*memEntryIdem)
		if now.Before(e.expires) {
			return false, e.response, nil
		}
		m.removeLocked(el)
	}
	m.addLocked(&memEntryIdem{key: key, expires: now.Add(ttl)})
	return true, nil, nil
}

func (m *memoryIdempotency) Save(_ context.Context, key string, response []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el := m.byKey[key]; el != nil {
		m.removeLocked(el)
	}
	if len(response) <= m.maxBytes {
		m.addLocked(&memEntryIdem{key: key, response: response, expires: time.Now().Add(ttl)})
	}
	return nil
}

func (m *memoryIdempotency) Release(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el := m.byKey[key]; el != nil && el.Value.(*memEntryIdem).response == nil {
		m.removeLocked(el)
	}
	return nil
}

func (m *memoryIdempotency) addLocked(e *memEntryIdem) {
	m.byKey[e.key] = m.order.PushBack(e)
	m.bytes += len(e.response)
	now := time.Now()
	for m.order.Len() > 0 {
		el := m.order.Front()
		old := el.Value.(*memEntryIdem)
		if m.bytes <= m.maxBytes && m.order.Len() <= m.maxEntries && now.Before(old.expires) {
			break
		}
		m.removeLocked(el)
	}
}

func (m *memoryIdempotency) removeLocked(el *list.Element) {
	e := m.order.Remove(el).(*memEntryIdem)
	delete(m.byKey, e.key)
	m.bytes -= len(e.response)
}
