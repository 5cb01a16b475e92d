package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemoryIdempotencyBounds fills a small in-memory store: running
// requests' claims stay, expired responses go first, then those of the
// scope holding the most; a claim that finds only claims is refused.
func TestMemoryIdempotencyBounds(t *testing.T) {
	ctx := context.Background()
	lost := 0
	m := newMemoryIdempotency(func(n int) { lost += n })
	m.maxEntries = 4
	key := func(scope, k string) string { return "idem:" + scope + ":" + k }
	claim := func(k string) error {
		t.Helper()
		ok, _, err := m.Claim(ctx, k, time.Minute)
		if err == nil && !ok {
			t.Fatalf("%s was not claimed", k)
		}
		return err
	}
	has := func(k string) string {
		t.Helper()
		ok, resp, err := m.Claim(ctx, k, time.Minute)
		switch {
		case err != nil:
			t.Fatal(err)
		case ok:
			m.Release(ctx, k)
			return "<gone>"
		case resp == nil:
			return "<running>"
		}
		return string(resp)
	}

	claim(key("a", "running"))
	claim(key("a", "done"))
	m.Save(ctx, key("a", "done"), []byte("A"), time.Minute)
	claim(key("b", "old"))
	m.Save(ctx, key("b", "old"), []byte("B-old"), time.Nanosecond) // expires at once
	for i := range 5 {
		k := key("b", fmt.Sprint(i))
		claim(k)
		m.Save(ctx, k, []byte("B-"+strings.Repeat("x", 100)), time.Minute)
	}
	if lost != 3 { // b's 0, 1 and 2: the expired one is not a loss
		t.Errorf("lost %d; want 3", lost)
	}
	if got := has(key("a", "running")); got != "<running>" {
		t.Errorf("the running request: %s", got)
	}
	if got := has(key("a", "done")); got != "A" {
		t.Errorf("a's response after b's flood: %s", got)
	}
	if got := has(key("b", "old")); got != "<gone>" {
		t.Errorf("b's expired response: %s", got)
	}
	if got := has(key("b", "4")); got == "<gone>" {
		t.Errorf("b's latest response was dropped")
	}

	// Only claims left: a claim finds no room, and a response that would
	// need one is dropped, not kept over the bound.
	m = newMemoryIdempotency(func(n int) { lost += n })
	m.maxEntries, lost = 2, 0
	claim(key("a", "1"))
	claim(key("b", "1"))
	if err := claim(key("c", "1")); !errors.Is(err, errIdempotencyFull) {
		t.Fatalf("a claim in a store full of claims: %v", err)
	}
	m.maxBytes = m.bytes + 10
	m.Save(ctx, key("a", "1"), []byte(strings.Repeat("x", 100)), time.Minute)
	if got := has(key("a", "1")); got != "<gone>" || lost != 1 {
		t.Errorf("a response beyond the bound: %s, lost %d", got, lost)
	}
	if got := has(key("b", "1")); got != "<running>" {
		t.Errorf("the other running request: %s", got)
	}
}

// leaseStore is an IdempotencyStore whose claims lapse after their ttl
// unless renewed, as the shared stores' do; extended receives a value at
// each Extend.
type leaseStore struct {
	extended chan struct{}
	mu       sync.Mutex // guards entries
	entries  map[string]leaseEntry
}

type leaseEntry struct {
	response []byte
	expires  time.Time
}

func (s *leaseStore) Claim(_ context.Context, key string, ttl time.Duration) (bool, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok && time.Now().Before(e.expires) {
		return false, e.response, nil
	}
	s.entries[key] = leaseEntry{expires: time.Now().Add(ttl)}
	return true, nil, nil
}

func (s *leaseStore) Save(_ context.Context, key string, response []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[key] = leaseEntry{response: response, expires: time.Now().Add(ttl)}
	return nil
}

func (s *leaseStore) Release(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[key].response == nil {
		delete(s.entries, key)
	}
	return nil
}

func (s *leaseStore) Extend(_ context.Context, key string, ttl time.Duration) error {
	s.mu.Lock()
	if e, ok := s.entries[key]; ok && e.response == nil {
		s.entries[key] = leaseEntry{expires: time.Now().Add(ttl)}
	}
	s.mu.Unlock()
	select {
	case s.extended <- struct{}{}:
	default:
	}
	return nil
}

// TestHookRenewsLease runs a request for several leases of a store whose
// claims lapse: the hub renews its claim, so a copy sent meanwhile waits
// and repeats its response; the renewing stops when the request ends.
func TestHookRenewsLease(t *testing.T) {
	h := NewHub(&Options{Identify: func(r *http.Request) (Identity, error) { return Identity{User: "alice"}, nil }})
	t.Cleanup(func() { h.Close(context.Background()) })
	h.lease = 150 * time.Millisecond
	store := &leaseStore{extended: make(chan struct{}), entries: map[string]leaseEntry{}}
	var runs atomic.Int32
	entered, release := make(chan struct{}, 2), make(chan struct{})
	hook := h.Hook(HookOptions{Channel: func(*http.Request) string { return "c" }, Idempotency: store})
	srv := httptest.NewServer(hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		entered <- struct{}{}
		<-release
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"run":%d}`, n)
	})))
	t.Cleanup(srv.Close)
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let)
	post := func() (int, string) {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(`{}`))
		req.Header.Set(MutationIDHeader, "slow")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	first := make(chan string, 1)
	go func() { _, b := post(); first <- b }()
	<-entered
	for range 4 { // a third of a lease each: past the first lease
		<-store.extended
	}
	copied := make(chan string, 1)
	go func() { status, b := post(); copied <- fmt.Sprint(status, " ", b) }()
	select {
	case <-entered:
		t.Fatal("the copy ran the handler: the claim lapsed while its request ran")
	case <-store.extended: // the copy had time to claim, and is waiting
	}
	let()
	if f, c := <-first, <-copied; f != `{"run":1}` || c != `201 {"run":1}` {
		t.Fatalf("first %s, copy %s", f, c)
	}
	select {
	case <-store.extended:
		t.Fatal("the claim was renewed after its request ended")
	case <-time.After(h.lease): // waiting for a renewal that should not come is the point
	}
}
