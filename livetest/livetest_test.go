package livetest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/liveclient"
	"github.com/go-live/live/livetest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// A CRUD handler wrapped by Hub.Hook, tested in a few lines.
func TestRecorderWithHook(t *testing.T) {
	rec := livetest.NewRecorder(t)
	hub := live.NewHub(&live.Options{Broker: rec})
	t.Cleanup(func() { hub.Close(context.Background()) })

	create := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.RawQuery, "fail") {
				http.Error(w, "nope", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"id":"t1","title":"milk"}`))
		}))

	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos", nil))
	rec.Published(t, "todos", map[string]any{"type": "add", "item": map[string]any{"id": "t1", "title": "milk"}})

	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos?fail", nil))
	rec.Nothing(t)
}

func TestConnect(t *testing.T) {
	hub := live.NewHub(nil)
	mux := http.NewServeMux()
	mux.Handle("/ws", hub.WebSocketHandler())
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	ws := livetest.Connect(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "a", "b")
	sse := livetest.Connect(t, srv.URL+"/live/", "a")
	hub.Publish(context.Background(), "a", map[string]int{"n": 1})
	hub.Publish(context.Background(), "b", json.RawMessage(`"two"`))
	for _, c := range []*livetest.Client{ws, sse} {
		if m := c.Next(t); m.Channel != "a" || string(m.Data) != `{"n":1}` {
			t.Errorf("got %+v", m)
		}
	}
	if m := ws.Next(t); m.Channel != "b" {
		t.Errorf("got %+v", m)
	}
}

func TestFaults(t *testing.T) {
	hub := live.NewHub(&live.Options{QueueMessages: 4, Broker: live.NewMemoryBroker(&live.MemoryOptions{HistorySize: 1000})})
	srv := httptest.NewServer(hub)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	ctx := context.Background()
	c := livetest.Connect(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/", "a")

	// Dropped: it comes back and resumes.
	c.Drop()
	hub.Publish(ctx, "a", 1)
	if m := c.Next(t); string(m.Data) != "1" {
		t.Fatalf("after Drop: %+v", m)
	}

	// Reset: the hub cannot honour the cursor.
	c.ForceReset("a")
	if m := c.Next(t); !m.Reset || m.Reason != "epoch" {
		t.Fatalf("after ForceReset: %+v", m)
	}

	// Slow: the hub disconnects it; it resumes and misses nothing.
	c.Pause()
	for i := 2; i <= 200; i++ {
		hub.Publish(ctx, "a", strings.Repeat("x", 4096))
	}
	c.Resume()
	got := 0
	for got < 199 {
		if m := c.Next(t); !m.Reset {
			got++
		} else {
			t.Fatalf("reset while catching up: %+v", m)
		}
	}
}

// fakeT records what a helper reports, so that tests can check failures
// livetest is meant to report. Fatal ends the goroutine it runs on, as
// testing.T's does; run the helper with fakeT.run.
type fakeT struct {
	*testing.T // for what fakeT does not override
	mu         sync.Mutex
	msgs       []string
	cleanups   []func()
	deadline   time.Time // the test's deadline, if set, instead of T's
}

func (f *fakeT) Deadline() (time.Time, bool) {
	if !f.deadline.IsZero() {
		return f.deadline, true
	}
	return f.T.Deadline()
}

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}
func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// run runs fn as a test body and its cleanups, and returns what it reported.
func (f *fakeT) run(fn func(testing.TB)) []string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	f.cleanups = nil
	f.mu.Lock()
	defer f.mu.Unlock()
	msgs := f.msgs
	f.msgs = nil
	return msgs
}

// TestConnectWithIdentity tests a hub whose Authorize reads the user from
// a cookie, as real apps do, and checks that refusals fail at once with
// the hub's answer instead of waiting for the test's deadline.
func TestConnectWithIdentity(t *testing.T) {
	var revoked atomic.Bool
	hub := live.NewHub(&live.Options{
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			c, err := r.Cookie("user")
			if err != nil || c.Value != "alice" || revoked.Load() {
				return live.Deny("sign in first")
			}
			return nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("GET /ws", hub.WebSocketHandler())
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	alice := &liveclient.Options{Header: http.Header{"Cookie": {"user=alice"}}}

	for _, url := range []string{wsURL, srv.URL + "/live/"} {
		c := livetest.ConnectWith(t, url, alice, "board")
		hub.Publish(context.Background(), "board", 1)
		if m := c.Next(t); string(m.Data) != "1" {
			t.Errorf("%s: got %+v", url, m)
		}
		c.Nothing(t, 10*time.Millisecond)

		// Without the cookie: refused, reported at once with the hub's words.
		f := &fakeT{T: t}
		msgs := f.run(func(t testing.TB) { livetest.Connect(t, url, "board") })
		if len(msgs) != 1 || !strings.Contains(msgs[0], "sign in first") && !strings.Contains(msgs[0], "403") {
			t.Errorf("%s: Connect without the cookie reported %q; want the refusal", url, msgs)
		}
	}

	// Refused after connecting: Next fails with the reason, not a timeout.
	c := livetest.ConnectWith(t, wsURL, alice, "board")
	revoked.Store(true)
	c.Drop()
	f := &fakeT{T: t}
	msgs := f.run(func(t testing.TB) { c.Next(t) })
	if len(msgs) != 1 || !strings.Contains(msgs[0], "stopped") {
		t.Errorf("Next after the hub refused the client reported %q", msgs)
	}
	revoked.Store(false)

	// Nothing reports what does arrive.
	c2 := livetest.ConnectWith(t, wsURL, alice, "board")
	hub.Publish(context.Background(), "board", 2)
	f = &fakeT{T: t}
	if msgs := f.run(func(t testing.TB) { c2.Nothing(t, waitLong) }); len(msgs) != 1 || !strings.Contains(msgs[0], "unexpected message") {
		t.Errorf("Nothing reported %q", msgs)
	}
}

// waitLong bounds a wait that ends as soon as the awaited thing happens.
const waitLong = 10 * time.Second

// TestRecorderPerChannel checks a handler that publishes on a list and
// updates a State: each channel is asserted on its own, ids and times
// the server makes up are left out.
func TestRecorderPerChannel(t *testing.T) {
	rec := livetest.NewRecorder(t)
	hub := live.NewHub(&live.Options{Broker: rec})
	t.Cleanup(func() { hub.Close(context.Background()) })
	stats, err := hub.State(context.Background(), "stats", &live.StateOptions{Initial: map[string]int{"todos": 0}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	create := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n++
			stats.Apply(r.Context(), map[string]int{"todos": n})
			fmt.Fprintf(w, `{"id":"t%d","title":"milk","createdAt":%q}`, n, time.Now().Format(time.RFC3339Nano))
		}))
	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos", nil))
	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos", nil))

	item := map[string]any{"type": "add", "item": map[string]any{"title": "milk"}}
	rec.Sequence(t, "todos", item, item, livetest.IgnoreFields("id", "createdAt"))
	rec.Nothing(t, "todos")
	// The State's publications as the broker has them: no version (it is
	// their position).
	rec.Published(t, "stats", map[string]any{"changes": []any{map[string]any{"op": "update", "path": "todos", "value": 1.0}}})
	all := rec.All()
	if last := all[len(all)-1]; last.Channel != "todos" || last.Pos.Seq != 2 {
		t.Errorf("last publication %+v", last)
	}

	// A failing check says which channel, and what differs.
	f := &fakeT{T: t}
	msgs := f.run(func(t testing.TB) { rec.Published(t, "stats", map[string]any{"changes": []any{}}) })
	if len(msgs) != 1 || !strings.Contains(msgs[0], `publications on "stats"`) {
		t.Errorf("a wrong expectation reported %q", msgs)
	}
	rec.Nothing(t)
}

// TestClientEnded checks Ended on both transports: a user the application
// disconnects ends with 4001, a channel it stops with that channel, a
// reconnection Identify refuses with 401; a client still connected fails
// the check instead of passing it.
func TestClientEnded(t *testing.T) {
	var mu sync.Mutex // guards banned and revoked
	banned, revoked := map[string]bool{}, map[string]bool{}
	hub := live.NewHub(&live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			c, err := r.Cookie("user")
			mu.Lock()
			defer mu.Unlock()
			if err != nil || banned[c.Value] {
				return live.Identity{}, live.Deny("sign in first")
			}
			return live.Identity{User: c.Value}, nil
		},
		Authorize: func(r *http.Request, channel string, _ live.Op) error {
			mu.Lock()
			defer mu.Unlock()
			if revoked[live.IdentityOf(r).User+"/"+channel] {
				return live.Deny("not yours any more")
			}
			return nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("GET /ws", hub.WebSocketHandler())
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	as := func(user string) *liveclient.Options {
		return &liveclient.Options{Header: http.Header{"Cookie": {"user=" + user}}}
	}
	for _, tc := range []struct{ name, url string }{
		{"websocket", "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"},
		{"sse", srv.URL + "/live/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := "u-" + tc.name
			ctx := context.Background()

			// Disconnect: 4001, whatever Identify says next.
			c := livetest.ConnectWith(t, tc.url, as(user), "board")
			if err := hub.Disconnect(ctx, user); err != nil {
				t.Fatal(err)
			}
			if end := c.Ended(t); end.Code != 4001 || end.Reason != "disconnected by the server" || end.Channel != "" {
				t.Errorf("after Disconnect: %+v; want 4001", end)
			}

			// Reauthorize: the channel, with the hub's code and message.
			c = livetest.ConnectWith(t, tc.url, as(user), "board")
			mu.Lock()
			revoked[user+"/board"] = true
			mu.Unlock()
			if err := hub.Reauthorize(ctx, "board", user); err != nil {
				t.Fatal(err)
			}
			if end := c.Ended(t); end.Code != 0 || end.Channel != "board" || end.Reason != "forbidden" || end.Message != "not yours any more" {
				t.Errorf("after Reauthorize: %+v; want the channel refused", end)
			}
			mu.Lock()
			delete(revoked, user+"/board")
			mu.Unlock()

			// Refused on the way back: 401, with Identify's words.
			c = livetest.ConnectWith(t, tc.url, as(user), "board")
			mu.Lock()
			banned[user] = true
			mu.Unlock()
			c.Drop()
			if end := c.Ended(t); end.Code != 401 || end.Reason != "unauthenticated" || end.Message != "sign in first" {
				t.Errorf("refused on reconnection: %+v; want 401", end)
			}
			mu.Lock()
			delete(banned, user)
			mu.Unlock()

			// A client nobody ended fails the check, after the test's wait.
			c = livetest.ConnectWith(t, tc.url, as(user), "board")
			f := &fakeT{T: t, deadline: time.Now().Add(2 * time.Second)} // a wait of 1 s
			if msgs := f.run(func(t testing.TB) { c.Ended(t) }); len(msgs) != 1 || !strings.Contains(msgs[0], "not ended") {
				t.Errorf("Ended of a connected client reported %q", msgs)
			}
		})
	}
}

// Text publications: recorded as text, and followed as JSON strings with
// their event names over WebSocket and SSE.
func TestText(t *testing.T) {
	rec := livetest.NewRecorder(t)
	hub := live.NewHub(&live.Options{Broker: rec})
	mux := http.NewServeMux()
	mux.Handle("/ws", hub.WebSocketHandler())
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	ws := livetest.Connect(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "feed")
	sse := livetest.Connect(t, srv.URL+"/live/", "feed")
	ctx := context.Background()
	pubs := []any{
		live.Text{Event: "row", Data: "<li>a</li>\n<li>b</li>"},
		live.Text{Data: "<p>x</p>"},
		"<p>JSON</p>",
	}
	for _, p := range pubs {
		if _, err := hub.Publish(ctx, "feed", p); err != nil {
			t.Fatal(err)
		}
	}
	rec.Sequence(t, "feed", pubs...)
	if all := rec.All(); len(all) != 3 || !all[0].Text || all[0].Event != "row" || !all[1].Text || all[1].Event != "" || all[2].Text {
		t.Errorf("recorded %+v", all)
	}
	for name, c := range map[string]*livetest.Client{"WebSocket": ws, "SSE": sse} {
		for _, want := range []liveclient.Message{
			{Data: json.RawMessage(`"<li>a</li>\n<li>b</li>"`), Event: "row"},
			{Data: json.RawMessage(`"<p>x</p>"`)},
			{Data: json.RawMessage(`"\u003cp\u003eJSON\u003c/p\u003e"`)},
		} {
			m := c.Next(t)
			var got, w string
			json.Unmarshal(m.Data, &got)
			json.Unmarshal(want.Data, &w)
			if got != w || m.Event != want.Event {
				t.Errorf("%s: got %+v (data %s); want data %s, event %q", name, m, m.Data, want.Data, want.Event)
			}
		}
	}
}
