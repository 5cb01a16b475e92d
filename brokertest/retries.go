package brokertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// idempotent is the optional ability of brokers whose server can also
// keep Hub.Hook's responses for retries, shared by every node.
type idempotent interface {
	Idempotency() live.IdempotencyStore
}

// testRetries checks, for brokers with an Idempotency method, the store's
// contract and what an application gets from it: a request whose response
// was lost, retried on either node, runs once and publishes once, and
// copies sent at once to both nodes run once.
func (s *suite) testRetries(t *testing.T) {
	b1, b2 := s.broker(t), s.broker(t)
	i1, ok := b1.(idempotent)
	if !ok {
		t.Skip("the broker has no Idempotency method")
	}
	i2 := b2.(idempotent)
	t.Run("Store", func(t *testing.T) { testStore(t, i1.Idempotency(), i2.Idempotency()) })
	t.Run("Hook", func(t *testing.T) { testHookRetries(t, b1, b2, i1.Idempotency(), i2.Idempotency()) })
	t.Run("Scope", func(t *testing.T) { testRetryScope(t, b1, b2, i1.Idempotency(), i2.Idempotency()) })
}

func testStore(t *testing.T, a, b live.IdempotencyStore) {
	ctx, cancel := timeout(t)
	defer cancel()
	key := "idem:" + channelName(t)
	claim := func(st live.IdempotencyStore, ttl time.Duration) (bool, string) {
		t.Helper()
		ok, resp, err := st.Claim(ctx, key, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if resp == nil {
			return ok, "<running>"
		}
		return ok, string(resp)
	}
	if ok, _ := claim(a, time.Minute); !ok {
		t.Fatal("a new key was not claimed")
	}
	if ok, r := claim(b, time.Minute); ok || r != "<running>" {
		t.Fatalf("a claimed key, on the other node: claimed %v, %s; want it running", ok, r)
	}
	if err := a.Release(ctx, key); err != nil {
		t.Fatal(err)
	}
	if ok, _ := claim(b, time.Minute); !ok {
		t.Fatal("a released key was not claimed again")
	}
	if err := b.Save(ctx, key, []byte(`{"status":201}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, key); err != nil { // a late release keeps the response
		t.Fatal(err)
	}
	if ok, r := claim(a, time.Minute); ok || r != `{"status":201}` {
		t.Fatalf("a saved key: claimed %v, %s; want the response", ok, r)
	}
	// A claim whose request died is taken over once its lease ends.
	key = "idem:" + channelName(t) + ":lease"
	claim(a, 50*time.Millisecond)
	deadline := time.Now().Add(waitTimeout)
	for {
		if ok, _ := claim(b, time.Minute); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired claim was never taken over")
		}
		time.Sleep(10 * time.Millisecond) // waiting for the lease to end is the point
	}

	// A claim whose request still runs is renewed, and outlives its first
	// lease; renewing a saved response leaves it as it is.
	ext, ok := a.(interface {
		Extend(ctx context.Context, key string, ttl time.Duration) error
	})
	if !ok {
		t.Fatal("the store has no Extend method: a request running past its lease would run again")
	}
	key = "idem:" + channelName(t) + ":extend"
	claim(a, 100*time.Millisecond)
	if err := ext.Extend(ctx, key, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // past the first lease: the point
	if ok, r := claim(b, time.Minute); ok || r != "<running>" {
		t.Fatalf("a renewed claim after its first lease: claimed %v, %s; want it running", ok, r)
	}
	if err := a.Save(ctx, key, []byte(`{"status":200}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := ext.Extend(ctx, key, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ok, r := claim(b, time.Minute); ok || r != `{"status":200}` {
		t.Fatalf("a saved key after Extend: claimed %v, %s; want the response", ok, r)
	}
}

func testHookRetries(t *testing.T, b1, b2 live.Broker, st1, st2 live.IdempotencyStore) {
	channel := channelName(t)
	var runs atomic.Int32
	cut := make(chan struct{})
	var once sync.Once
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // so that net/http watches for the client leaving
		n := runs.Add(1)
		if r.Header.Get("X-Cut") != "" {
			once.Do(func() { close(cut) })
			<-r.Context().Done()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":"t1","run":%d}`, n)
	})
	nodes := make([]*httptest.Server, 2)
	var sub *servertest.Node
	for i, pair := range []struct {
		b  live.Broker
		st live.IdempotencyStore
	}{{b1, st1}, {b2, st2}} {
		n := servertest.NewNode(t, pair.b, &live.Options{Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: r.Header.Get("X-User")}, nil // who the application's own sign-in found
		}})
		if i == 1 {
			sub = n
		}
		hook := n.Hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return channel }, Idempotency: pair.st})
		nodes[i] = httptest.NewServer(hook(handler))
		t.Cleanup(nodes[i].Close)
	}
	events := servertest.OpenStream(t, sub.SSE+channel, "")
	post := func(ctx context.Context, node int, mid string, cutIt bool) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", nodes[node].URL+"/todos", strings.NewReader(`{"title":"milk"}`))
		req.Header.Set(live.MutationIDHeader, mid)
		req.Header.Set("X-User", "alice")
		if cutIt {
			req.Header.Set("X-Cut", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}

	// Lost, then retried three times on both nodes.
	mid := "m-" + channelName(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-cut
		cancel()
	}()
	if _, _, err := post(ctx, 0, mid, true); err == nil {
		t.Fatal("the first request got its response")
	}
	wait, stop := timeout(t)
	defer stop()
	for i, node := range []int{1, 0, 1} {
		for {
			status, body, err := post(wait, node, mid, false)
			if err != nil {
				t.Fatal(err)
			}
			if status == http.StatusConflict && strings.Contains(body, "in_progress") {
				continue // the first had not finished when this one gave up
			}
			if status != http.StatusCreated || body != `{"id":"t1","run":1}` {
				t.Fatalf("retry %d on node %d: %d %s; want the first response", i+1, node, status, body)
			}
			break
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times", n)
	}
	if ev := events.Next(t); !strings.Contains(ev.Data, mid) {
		t.Fatalf("event %+v", ev)
	}

	// A hundred copies at once, on both nodes.
	runs.Store(0)
	mid = "m-" + channelName(t) + "-copies"
	var wg sync.WaitGroup
	answers := make(chan string, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body, err := post(wait, i%2, mid, false)
			if err != nil {
				answers <- err.Error()
				return
			}
			answers <- fmt.Sprint(status, " ", body)
		}()
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		if a != `201 {"id":"t1","run":1}` {
			t.Errorf("a copy got %s", a)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("100 copies ran the handler %d times", n)
	}
	// Exactly one more event: the copies' one, then a sentinel.
	if ev := events.Next(t); !strings.Contains(ev.Data, mid) {
		t.Fatalf("event %+v", ev)
	}
	sub.Publish(t, channel, `"sentinel"`)
	if ev := events.Next(t); ev.Data != `"sentinel"` {
		t.Fatalf("after the copies' event: %+v; want nothing more", ev)
	}
}

// testRetryScope checks, across nodes, what a caller the hub cannot name
// gets for a key someone used: nobody's response. Nodes without
// Options.Identify, as in an application that signs users in with its
// own middleware: a mutation id copied from a broadcast to another node
// gets 409 already_applied with the same body, 422 with another, and
// runs nothing; a refusal that depends on the caller (403) is not kept.
func testRetryScope(t *testing.T, b1, b2 live.Broker, st1, st2 live.IdempotencyStore) {
	channel := channelName(t)
	var runs atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		runs.Add(1)
		if r.Header.Get("X-Refuse") != "" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"n1","private":"alice's"}`)
	})
	var urls []string
	for _, pair := range []struct {
		b  live.Broker
		st live.IdempotencyStore
	}{{b1, st1}, {b2, st2}} {
		n := servertest.NewNode(t, pair.b, nil)
		hook := n.Hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return channel }, Idempotency: pair.st})
		srv := httptest.NewServer(hook(handler))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	post := func(node int, mid, body string, refuse bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", urls[node]+"/notes", strings.NewReader(body))
		req.Header.Set(live.MutationIDHeader, mid)
		if refuse {
			req.Header.Set("X-Refuse", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	mid := "m-" + channelName(t)
	if status, body := post(0, mid, `{"text":"hi"}`, false); status != 201 {
		t.Fatalf("the first request: %d %s", status, body)
	}
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{{`{"text":"hi"}`, 409, "already_applied"}, {`{"text":"mine"}`, 422, "key_reused"}} {
		status, body := post(1, mid, c.body, false)
		if status != c.status || !strings.Contains(body, `"error":"`+c.code+`"`) || strings.Contains(body, "private") {
			t.Errorf("the key again on the other node with %s: %d %s; want %d %s", c.body, status, body, c.status, c.code)
		}
	}
	for node := range 2 {
		if status, _ := post(node, mid+"-refused", `{}`, true); status != 403 {
			t.Fatalf("a refused request: %d", status)
		}
	}
	if n := runs.Load(); n != 3 {
		t.Fatalf("the handler ran %d times; want 3 (the first, and the refused request twice)", n)
	}
}
