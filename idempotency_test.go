package live_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// userKey keys the user an application's own auth middleware puts in a
// request's context.
type userKey struct{}

// retryApp is an API whose own middleware signs users in from a cookie,
// as the README's applications do, with a hooked POST /notes whose
// response carries a field only its author may see.
type retryApp struct {
	srv  *httptest.Server
	hub  *live.Hub
	runs sync.Map // "user body" -> *atomic.Int32
}

func newRetryApp(t *testing.T, identify bool) *retryApp {
	t.Helper()
	var opts live.Options
	if identify {
		opts.Identify = func(r *http.Request) (live.Identity, error) {
			u, _ := r.Context().Value(userKey{}).(string)
			return live.Identity{User: u}, nil
		}
	}
	a := &retryApp{hub: live.NewHub(&opts)}
	t.Cleanup(func() { a.hub.Close(context.Background()) })
	create := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		user := r.Context().Value(userKey{}).(string)
		n, _ := a.runs.LoadOrStore(user+" "+string(body), new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":"n-%s","private":"%s's secret"}`, user, user)
	})
	signIn := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := r.Cookie("session")
			if err != nil {
				http.Error(w, `{"error":"sign in"}`, http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, c.Value)))
		})
	}
	mux := http.NewServeMux()
	mux.Handle("POST /notes", signIn(a.hub.Hook(live.HookOptions{Channel: toChannel("notes")})(create)))
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

type retryReply struct {
	status   int
	body     string
	replayed bool
	header   http.Header
}

func (a *retryApp) post(t *testing.T, user, mid, query, body string) retryReply {
	t.Helper()
	req, _ := http.NewRequest("POST", a.srv.URL+"/notes"+query, strings.NewReader(body))
	req.Header.Set("Cookie", "session="+user)
	req.Header.Set(live.MutationIDHeader, mid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return retryReply{resp.StatusCode, string(b), resp.Header.Get("Idempotent-Replayed") == "true", resp.Header}
}

func (a *retryApp) ran(user, body string) int32 {
	n, ok := a.runs.Load(user + " " + body)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// errorCode returns the "error" member of a JSON error body.
func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error
}

// TestRetriesWithoutIdentify is an application that signs users in with
// its own middleware and does not tell the hub who they are: a mutation
// id copied from a broadcast gets nobody's response, and a request runs
// once all the same.
func TestRetriesWithoutIdentify(t *testing.T) {
	a := newRetryApp(t, false)
	first := a.post(t, "alice", "m1", "", `{"text":"hi"}`)
	if first.status != 201 || !strings.Contains(first.body, "alice's secret") {
		t.Fatalf("alice's request: %d %s", first.status, first.body)
	}
	for _, c := range []struct {
		name, user, body string
		status           int
		code             string
	}{
		{"bob, the same body", "bob", `{"text":"hi"}`, 409, "already_applied"},
		{"bob, another body", "bob", `{"text":"mine"}`, 422, "key_reused"},
		{"alice's retry", "alice", `{"text":"hi"}`, 409, "already_applied"},
	} {
		rep := a.post(t, c.user, "m1", "", c.body)
		if rep.status != c.status || errorCode(t, rep.body) != c.code || strings.Contains(rep.body, "secret") {
			t.Errorf("%s: %d %s; want %d %s and no response", c.name, rep.status, rep.body, c.status, c.code)
		}
	}
	if n := a.ran("alice", `{"text":"hi"}`); n != 1 {
		t.Errorf("alice's request ran %d times", n)
	}
	if n := a.ran("bob", `{"text":"hi"}`) + a.ran("bob", `{"text":"mine"}`); n != 0 {
		t.Errorf("bob's requests ran %d times, though each was told it did not", n)
	}
}

// TestRetriesScopedByIdentify is the same application telling the hub
// who its users are: a copied mutation id is another user's own request,
// and the author's retry gets the author's response.
func TestRetriesScopedByIdentify(t *testing.T) {
	a := newRetryApp(t, true)
	first := a.post(t, "alice", "m1", "", `{"text":"hi"}`)
	bob := a.post(t, "bob", "m1", "", `{"text":"hi"}`)
	if bob.status != 201 || bob.replayed || strings.Contains(bob.body, "alice") {
		t.Errorf("bob: %d replayed=%v %s; want his own request run", bob.status, bob.replayed, bob.body)
	}
	again := a.post(t, "alice", "m1", "", `{"text":"hi"}`)
	if again.status != 201 || !again.replayed || again.body != first.body {
		t.Errorf("alice's retry: %d replayed=%v %s; want %s replayed", again.status, again.replayed, again.body, first.body)
	}
	if a.ran("alice", `{"text":"hi"}`) != 1 || a.ran("bob", `{"text":"hi"}`) != 1 {
		t.Errorf("runs: alice %d, bob %d; want 1 and 1", a.ran("alice", `{"text":"hi"}`), a.ran("bob", `{"text":"hi"}`))
	}
}

// TestRetryRepeatsHeaders retries a request whose response says how to
// cache it: the replay carries the first response's headers (all but its
// cookie), not only its body.
func TestRetryRepeatsHeaders(t *testing.T) {
	hub := live.NewHub(&live.Options{Identify: func(r *http.Request) (live.Identity, error) {
		return live.Identity{User: "ann"}, nil
	}})
	t.Cleanup(func() { hub.Close(context.Background()) })
	runs := 0
	h := hub.Hook(live.HookOptions{Channel: toChannel("notes")})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		hd := w.Header()
		hd.Set("Content-Type", "application/json")
		hd.Set("Cache-Control", "no-store")
		hd.Set("Vary", "Cookie")
		hd.Set("Location", "/notes/n1")
		hd.Set("ETag", `"1"`)
		hd.Set("Content-Language", "en")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Set-Cookie", "seen=1")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"n1"}`)
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	post := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/notes", strings.NewReader(`{"text":"hi"}`))
		req.Header.Set(live.IdempotencyKeyHeader, "k1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	names := []string{"Cache-Control", "Content-Language", "Content-Type", "Etag", "Location", "Vary", "X-Content-Type-Options"}
	pick := func(h http.Header) map[string]string {
		m := make(map[string]string)
		for _, n := range names {
			m[n] = h.Get(n)
		}
		return m
	}
	first, again := post(), post()
	if runs != 1 || again.Header.Get("Idempotent-Replayed") != "true" || again.StatusCode != first.StatusCode {
		t.Fatalf("runs %d, retry %d replayed %q; want 1 run and the %d replayed", runs, again.StatusCode, again.Header.Get("Idempotent-Replayed"), first.StatusCode)
	}
	if diff := cmp.Diff(pick(first.Header), pick(again.Header)); diff != "" {
		t.Errorf("replayed headers (-first +replay):\n%s", diff)
	}
	if c := again.Header.Get("Set-Cookie"); c != "" {
		t.Errorf("the replay set the cookie %q", c)
	}
}

// recordStore is an IdempotencyStore that holds one saved record, as a
// shared store written by an older node would.
type recordStore struct{ record []byte }

func (s recordStore) Claim(context.Context, string, time.Duration) (bool, []byte, error) {
	return false, s.record, nil
}
func (recordStore) Save(context.Context, string, []byte, time.Duration) error { return nil }
func (recordStore) Release(context.Context, string) error                     { return nil }

// TestRetryReplaysOldRecords replays records in the forms earlier
// versions saved: without the request's fingerprint, and with only the
// headers they kept then.
func TestRetryReplaysOldRecords(t *testing.T) {
	for _, c := range []struct {
		name, record string
		header       map[string]string
	}{
		{"headers of the first versions", `{"status":201,"header":{"Content-Type":["application/json"],"Location":["/notes/n1"]},"body":"eyJpZCI6Im4xIn0="}`,
			map[string]string{"Content-Type": "application/json", "Location": "/notes/n1", "Cache-Control": ""}},
		{"no headers", `{"status":200,"body":"eyJpZCI6Im4xIn0="}`,
			map[string]string{"Content-Type": "", "Location": "", "Cache-Control": ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hub := live.NewHub(&live.Options{Identify: func(r *http.Request) (live.Identity, error) {
				return live.Identity{User: "ann"}, nil
			}})
			t.Cleanup(func() { hub.Close(context.Background()) })
			h := hub.Hook(live.HookOptions{Channel: toChannel("notes"), Idempotency: recordStore{[]byte(c.record)}})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				t.Error("the handler ran for a saved request")
			}))
			req := httptest.NewRequest("POST", "/notes", strings.NewReader(`{"text":"hi"}`))
			req.Header.Set(live.IdempotencyKeyHeader, "k1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var sr struct{ Status int }
			json.Unmarshal([]byte(c.record), &sr)
			if rec.Code != sr.Status || rec.Body.String() != `{"id":"n1"}` || rec.Header().Get("Idempotent-Replayed") != "true" {
				t.Errorf("replay: %d %s replayed %q; want %d {\"id\":\"n1\"} replayed", rec.Code, rec.Body, rec.Header().Get("Idempotent-Replayed"), sr.Status)
			}
			got := make(map[string]string)
			for n := range c.header {
				got[n] = rec.Header().Get(n)
			}
			if diff := cmp.Diff(c.header, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRetryKeyReused sends a key again with another request: 422, never
// the first request's response, whether the body or the query differs.
func TestRetryKeyReused(t *testing.T) {
	a := newRetryApp(t, true)
	a.post(t, "alice", "m1", "", `{"text":"hi"}`)
	for _, c := range []struct{ name, query, body string }{
		{"another body", "", `{"text":"bye"}`},
		{"a longer body", "", `{"text":"hi"} `},
		{"no body", "", ``},
		{"another query", "?draft=1", `{"text":"hi"}`},
	} {
		rep := a.post(t, "alice", "m1", c.query, c.body)
		if rep.status != 422 || errorCode(t, rep.body) != "key_reused" || rep.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s; want 422 key_reused", c.name, rep.status, rep.body)
		}
	}
	if rep := a.post(t, "alice", "m1", "", `{"text":"hi"}`); rep.status != 201 || !rep.replayed {
		t.Errorf("the same request: %d replayed=%v", rep.status, rep.replayed)
	}
	if n := a.ran("alice", `{"text":"bye"}`); n != 0 {
		t.Errorf("a reused key ran its request %d times", n)
	}
	// A keyed body is read to compare it, within a bound.
	huge := `"` + strings.Repeat("x", 1<<20) + `"`
	if rep := a.post(t, "alice", "m2", "", huge); rep.status != 413 || errorCode(t, rep.body) != "too_large" || a.ran("alice", huge) != 0 {
		t.Errorf("a keyed body of 1 MiB and 2 bytes: %d %.80s", rep.status, rep.body)
	}
}

var floodMiB = flag.Int("live.floodmib", 8, "MiB of the in-memory idempotency store TestRetryStoreFlood floods (64 is the default store)")

// floodApp is a hooked API with a request that waits for release before
// answering, and one answering with a large body.
type floodApp struct {
	srv     *httptest.Server
	hub     *live.Hub
	logs    *hookLogs
	slow    atomic.Int32  // runs of POST /slow
	entered chan struct{} // a run of POST /slow has begun
	release chan struct{} // closed by let, to let POST /slow answer
	once    sync.Once
	floods  atomic.Int32
}

func (a *floodApp) let() { a.once.Do(func() { close(a.release) }) }

func newFloodApp(t *testing.T) *floodApp {
	t.Helper()
	a := &floodApp{logs: &hookLogs{records: make(chan slog.Record, 100)}, entered: make(chan struct{}, 10), release: make(chan struct{})}
	a.hub = live.NewHub(&live.Options{Identify: byUserHeader, Logger: slog.New(a.logs)})
	t.Cleanup(func() { a.hub.Close(context.Background()) })
	t.Cleanup(a.let) // before the server's Close, which waits for handlers
	large := `{"id":"big","pad":"` + strings.Repeat("x", 500<<10) + `"}`
	hook := a.hub.Hook(live.HookOptions{Channel: toChannel("flood")})
	mux := http.NewServeMux()
	mux.Handle("POST /slow", hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.slow.Add(1)
		a.entered <- struct{}{}
		<-a.release
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":"slow","run":%d}`, n)
	})))
	mux.Handle("POST /big", hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		live.SkipEvent(r)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, large)
	})))
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *floodApp) post(t *testing.T, path, user, key string) retryReply {
	req, _ := http.NewRequest("POST", a.srv.URL+path, strings.NewReader(`{}`))
	req.Header.Set("X-User", user)
	req.Header.Set(live.IdempotencyKeyHeader, key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return retryReply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return retryReply{resp.StatusCode, string(b), resp.Header.Get("Idempotent-Replayed") == "true", resp.Header}
}

// flood sends n requests with ~500 KiB responses as user, four at a time,
// each with a key of its own.
func (a *floodApp) flood(t *testing.T, user string, n int) {
	round := a.floods.Add(1)
	var wg sync.WaitGroup
	keys := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				if rep := a.post(t, "/big", user, fmt.Sprintf("%s-%d-%d", user, round, i)); rep.status != 201 || rep.replayed {
					t.Errorf("flood request %d: %d replayed=%v", i, rep.status, rep.replayed)
				}
			}
		}()
	}
	for i := range n {
		keys <- i
	}
	close(keys)
	wg.Wait()
}

// TestRetryStoreFlood pushes the in-memory store past its bound while a
// request runs, and again after it: the running request's copy waits for
// it and its retry is replayed, however much another user sends; the
// other user's own responses give way, and the hub says so. The store is
// bounded to 8 MiB here, as the 64 MiB default takes a minute to flood
// under the race detector; -live.floodmib=64 floods the default.
func TestRetryStoreFlood(t *testing.T) {
	a := newFloodApp(t)
	mib := *floodMiB
	if mib != 64 {
		a.hub.BoundRetryStore(mib<<20, 100_000)
	}
	n := mib*3/2 + 8 // ~680 KiB each once stored: past the bound
	first := make(chan retryReply, 1)
	go func() { first <- a.post(t, "/slow", "alice", "s") }()
	<-a.entered

	a.flood(t, "bob", n)
	// The flood's responses were sent before they were saved: wait for
	// their claims to settle.
	for deadline := time.Now().Add(waitFor); a.hub.RetryClaims() != 1; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatalf("%d claims after the flood; want alice's running request's", a.hub.RetryClaims())
		}
	}
	lost := a.hub.Stats().RetriesLost
	if lost == 0 {
		t.Fatal("the flood dropped nothing: the store is not bounded")
	}
	copied := make(chan retryReply, 1)
	go func() { copied <- a.post(t, "/slow", "alice", "s") }()
	a.let()
	orig, cp := <-first, <-copied
	if orig.status != 201 || cp.status != 201 || !cp.replayed || cp.body != orig.body {
		t.Fatalf("first %d %s, copy %d replayed=%v %s; want the copy to repeat the first", orig.status, orig.body, cp.status, cp.replayed, cp.body)
	}

	a.flood(t, "bob", n)
	if rep := a.post(t, "/slow", "alice", "s"); rep.status != 201 || !rep.replayed || rep.body != orig.body {
		t.Fatalf("alice's retry after bob's flood: %d replayed=%v %s", rep.status, rep.replayed, rep.body)
	}
	if n := a.slow.Load(); n != 1 {
		t.Fatalf("alice's request ran %d times", n)
	}
	if st := a.hub.Stats(); st.RetriesLost <= lost {
		t.Errorf("RetriesLost %d after the second flood, %d after the first", st.RetriesLost, lost)
	}
	warned := false
	for _, l := range a.logs.take() {
		warned = warned || strings.Contains(l, "dropped responses within their retry window")
	}
	if !warned {
		t.Error("nothing was logged of the dropped responses")
	}
}

// TestRetryStoreFullOfClaims fills the in-memory store with running
// requests: the next keyed request is refused with 503 and Retry-After,
// and runs nothing, rather than evicting a running request's claim.
func TestRetryStoreFullOfClaims(t *testing.T) {
	a := newFloodApp(t)
	a.hub.BoundRetryStore(64<<20, 2)
	replies := make(chan retryReply, 2)
	for _, u := range []string{"alice", "bob"} {
		go func() { replies <- a.post(t, "/slow", u, "s") }()
		<-a.entered
	}
	rep := a.post(t, "/slow", "carol", "s")
	if rep.status != 503 || rep.header.Get("Retry-After") == "" || errorCode(t, rep.body) != "busy" {
		t.Fatalf("a claim with the store full of running requests: %d %v %s; want 503 busy with Retry-After", rep.status, rep.header, rep.body)
	}
	if st := a.hub.Stats(); st.RetriesRefused != 1 {
		t.Errorf("RetriesRefused %d; want 1", st.RetriesRefused)
	}
	a.let()
	<-replies
	<-replies
	if rep := a.post(t, "/slow", "carol", "s"); rep.status != 201 || rep.replayed {
		t.Fatalf("carol's retry once there is room: %d replayed=%v", rep.status, rep.replayed)
	}
	if n := a.slow.Load(); n != 3 {
		t.Fatalf("POST /slow ran %d times; want 3", n)
	}
}
