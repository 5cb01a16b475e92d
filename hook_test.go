package live_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/google/go-cmp/cmp"
)

// hookServer is a hub and an application API mounted on one mux, the way
// an application wraps its CRUD handlers with Hub.Hook.
type hookServer struct {
	hub  *live.Hub
	srv  *httptest.Server
	mux  *http.ServeMux
	logs *hookLogs
	// done receives, after each API request, what its handler panicked
	// with (nil if it returned). Once it has, whatever the hook publishes
	// for the request has been published.
	done chan any
}

func newHookServer(t *testing.T, opts *live.Options) *hookServer {
	t.Helper()
	logs := &hookLogs{records: make(chan slog.Record, 100)}
	var o live.Options
	if opts != nil {
		o = *opts
	}
	o.Logger = slog.New(logs)
	hub := live.NewHub(&o)
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	mux.Handle("/ws", hub.WebSocketHandler())
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic tests' "http: panic serving"
	srv.Start()
	t.Cleanup(func() {
		servertest.CloseHub(t, hub)
		srv.Close()
	})
	return &hookServer{hub: hub, srv: srv, mux: mux, logs: logs, done: make(chan any, 1)}
}

// handle mounts h, wrapped with hook, at pattern.
func (s *hookServer) handle(pattern string, hook func(http.Handler) http.Handler, h http.HandlerFunc) {
	wrapped := hook(h)
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			s.done <- v
			if v != nil {
				panic(v)
			}
		}()
		wrapped.ServeHTTP(w, r)
	}))
}

// hookReply is an API response, read after its handler returned.
type hookReply struct {
	status   int
	header   http.Header
	body     string
	err      error // the transport's error, as after a panic
	panicked any   // what the handler panicked with
}

// do sends a request to the API, reads the whole response and waits for
// the handler to return.
func (s *hookServer) do(t *testing.T, method, path string, header http.Header, body string) hookReply {
	t.Helper()
	req, err := http.NewRequest(method, s.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	var rep hookReply
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		rep.status, rep.header, rep.body = resp.StatusCode, resp.Header, string(b)
	}
	rep.err = err
	select {
	case rep.panicked = <-s.done:
	case <-time.After(waitFor):
		t.Fatalf("%s %s: the handler did not return within %v", method, path, waitFor)
	}
	return rep
}

// expectNothing publishes a sentinel on each channel and fails unless the
// sentinels are the next events the subscriber sees: the requests before
// published nothing there.
func (s *hookServer) expectNothing(t *testing.T, stream *sseStream, channel string) {
	t.Helper()
	s.hub.Publish(context.Background(), channel, "sentinel")
	if ev := stream.nextData(t); ev.Data != `"sentinel"` {
		t.Errorf("published %s, want nothing", ev.Data)
	}
}

// hookLogs is a slog.Handler that keeps warnings and errors.
type hookLogs struct{ records chan slog.Record }

func (l *hookLogs) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }
func (l *hookLogs) WithAttrs([]slog.Attr) slog.Handler             { return l }
func (l *hookLogs) WithGroup(string) slog.Handler                  { return l }
func (l *hookLogs) Handle(_ context.Context, r slog.Record) error {
	select {
	case l.records <- r.Clone():
	default:
	}
	return nil
}

// take returns the records logged so far, as "message: reason" lines.
func (l *hookLogs) take() []string {
	var out []string
	for {
		select {
		case r := <-l.records:
			line := r.Message
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "reason" || a.Key == "err" {
					line += ": " + a.Value.String()
				}
				return true
			})
			out = append(out, line)
		default:
			return out
		}
	}
}

// echo answers with the status in the X-Status request header (default
// 200) and the request body.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	status := http.StatusOK
	if v := r.Header.Get("X-Status"); v != "" {
		status, _ = strconv.Atoi(v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func toChannel(name string) func(*http.Request) string {
	return func(*http.Request) string { return name }
}

// byUserHeader is an Options.Identify that names the user of the
// request's X-User header, and lets requests without one in anonymously.
func byUserHeader(r *http.Request) (live.Identity, error) {
	return live.Identity{User: r.Header.Get("X-User")}, nil
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestHookDefaultEvents(t *testing.T) {
	s := newHookServer(t, nil)
	hook := s.hub.Hook(live.HookOptions{Channel: toChannel("todos")})
	s.handle("/todos", hook, echo)
	s.handle("/todos/{id}", hook, echo)
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	for _, tc := range []struct {
		name, method, path, body string
		header                   http.Header
		want                     string
	}{
		{
			name: "POST adds", method: "POST", path: "/todos",
			header: hdr("X-Status", "201"), body: `{"id":"t1","title":"milk"}`,
			want: `{"type":"add","item":{"id":"t1","title":"milk"}}`,
		},
		{
			name: "item is compacted", method: "POST", path: "/todos",
			body: "{\n  \"id\": \"t2\"\n}\n",
			want: `{"type":"add","item":{"id":"t2"}}`,
		},
		{
			name: "PUT updates", method: "PUT", path: "/todos/t1",
			body: `{"id":"t1","title":"oat milk"}`,
			want: `{"type":"update","item":{"id":"t1","title":"oat milk"}}`,
		},
		{
			name: "PATCH updates", method: "PATCH", path: "/todos/t1",
			header: hdr("X-Status", "202"), body: `{"id":"t1","done":true}`,
			want: `{"type":"update","item":{"id":"t1","done":true}}`,
		},
		{
			name: "DELETE removes the route's id", method: "DELETE", path: "/todos/t1",
			header: hdr("X-Status", "204"),
			want:   `{"type":"remove","id":"t1"}`,
		},
		{
			name: "DELETE removes the body's id", method: "DELETE", path: "/todos",
			body: `{"id":42,"title":"gone"}`,
			want: `{"type":"remove","id":42}`,
		},
		{
			name: "mutation id", method: "POST", path: "/todos",
			header: hdr(live.MutationIDHeader, "temp-1700000000000"), body: `{"id":"t3"}`,
			want: `{"type":"add","item":{"id":"t3"},"mutationId":"temp-1700000000000"}`,
		},
		{
			name: "mutation id on remove", method: "DELETE", path: "/todos/t3",
			header: hdr(live.MutationIDHeader, "rm 1"),
			want:   `{"type":"remove","id":"t3","mutationId":"rm 1"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := s.do(t, tc.method, tc.path, tc.header, tc.body)
			if rep.status < 200 || rep.status > 299 || rep.body != tc.body {
				t.Fatalf("response %d %q, want 2xx %q", rep.status, rep.body, tc.body)
			}
			if got, want := rep.header.Get(live.MutationIDHeader), tc.header.Get(live.MutationIDHeader); got != want {
				t.Errorf("%s echoed as %q, want %q", live.MutationIDHeader, got, want)
			}
			if diff := cmp.Diff(tc.want, stream.nextData(t).Data); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
			if logs := s.logs.take(); logs != nil {
				t.Errorf("logged %q", logs)
			}
		})
	}
}

func TestHookDeleteID(t *testing.T) {
	s := newHookServer(t, nil)
	stream := openSSE(t, s.srv.URL+"/live/items", nil)

	for i, tc := range []struct {
		name    string
		opts    live.HookOptions
		pattern string // mounted under /<case number>
		path    string
		body    string // the handler's response
		want    string
	}{
		{name: "route id", pattern: "/items/{id}", path: "/items/a1", want: `"a1"`},
		{name: "route id over body", pattern: "/items/{id}", path: "/items/a1", body: `{"id":"b1"}`, want: `"a1"`},
		{name: "body id keeps its type", pattern: "/items", path: "/items", body: `{"id":7,"x":1}`, want: `7`},
		{name: "last wildcard", pattern: "/lists/{list}/items/{item}", path: "/lists/l1/items/i1", want: `"i1"`},
		{name: "rest wildcard", pattern: "/files/{path...}", path: "/files/a/b", want: `"a/b"`},
		{
			name: "IDField names the route wildcard", opts: live.HookOptions{IDField: "uuid"},
			pattern: "/items/{list}/{uuid}/x", path: "/items/l1/u1/x", want: `"u1"`,
		},
		{
			name: "IDField names the body member", opts: live.HookOptions{IDField: "uuid"},
			pattern: "/items", path: "/items", body: `{"id":1,"uuid":"u2"}`, want: `"u2"`,
		},
		{
			name: "ID option", opts: live.HookOptions{ID: func(r *http.Request, _ []byte) any {
				n, _ := strconv.Atoi(r.PathValue("id"))
				return n
			}},
			pattern: "/items/{id}", path: "/items/12", want: `12`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Channel = toChannel("items")
			prefix := "/" + strconv.Itoa(i)
			s.handle("DELETE "+prefix+tc.pattern, s.hub.Hook(tc.opts), func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, tc.body)
			})
			if rep := s.do(t, "DELETE", prefix+tc.path, nil, ""); rep.status != http.StatusOK {
				t.Fatalf("status %d", rep.status)
			}
			want := `{"type":"remove","id":` + tc.want + `}`
			if diff := cmp.Diff(want, stream.nextData(t).Data); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("not routed by ServeMux: last path segment", func(t *testing.T) {
		h := s.hub.Hook(live.HookOptions{Channel: toChannel("items")})(http.HandlerFunc(echo))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("DELETE", "/things/abc", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if diff := cmp.Diff(`{"type":"remove","id":"abc"}`, stream.nextData(t).Data); diff != "" {
			t.Errorf("event (-want +got):\n%s", diff)
		}
	})
}

func TestHookNothingOnFailure(t *testing.T) {
	s := newHookServer(t, nil)
	called := 0
	s.handle("/todos/{id}", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		called++
		w.Header().Set("Content-Type", "application/json")
		switch r.Header.Get("X-Panic") {
		case "abort":
			w.Write([]byte(`{"id":"t1"}`))
			panic(http.ErrAbortHandler)
		case "boom":
			w.Write([]byte(`{"id":"t1"}`))
			panic("boom")
		}
		echo(w, r)
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		status int // 0: the connection breaks
		panic  any
	}{
		{name: "400", method: "POST", header: hdr("X-Status", "400"), status: 400},
		{name: "404 on DELETE", method: "DELETE", header: hdr("X-Status", "404"), status: 404},
		{name: "409", method: "PUT", header: hdr("X-Status", "409"), status: 409},
		{name: "500", method: "PATCH", header: hdr("X-Status", "500"), status: 500},
		{name: "304", method: "PUT", header: hdr("X-Status", "304"), status: 304},
		{name: "panic", method: "POST", header: hdr("X-Panic", "boom"), panic: "boom"},
		{name: "ErrAbortHandler", method: "DELETE", header: hdr("X-Panic", "abort"), panic: http.ErrAbortHandler},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := called
			rep := s.do(t, tc.method, "/todos/t1", tc.header, `{"id":"t1"}`)
			if called != before+1 {
				t.Fatalf("handler called %d times, want 1", called-before)
			}
			if rep.status != tc.status {
				t.Errorf("status %d (%v), want %d", rep.status, rep.err, tc.status)
			}
			if rep.panicked != tc.panic {
				t.Errorf("the panic reaching net/http is %v, want %v", rep.panicked, tc.panic)
			}
			s.expectNothing(t, stream, "todos")
		})
	}
}

// hookBroker is a MemoryBroker whose Publish first asks before.
type hookBroker struct {
	*live.MemoryBroker
	before func(ctx context.Context, channel string) error
}

func newHookBroker(t *testing.T, before func(ctx context.Context, channel string) error) *hookBroker {
	b := &hookBroker{MemoryBroker: live.NewMemoryBroker(nil), before: before}
	t.Cleanup(func() { b.Close() }) // registered first, so it runs after the hub closes
	return b
}

func (b *hookBroker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	if err := b.before(ctx, channel); err != nil {
		return live.Position{}, err
	}
	return b.MemoryBroker.Publish(ctx, channel, data)
}

func TestHookResponseBeforeBroadcast(t *testing.T) {
	// The broker takes the hook's publication only once the client has
	// read the whole response. Were the response not complete before the
	// hook publishes, neither would ever happen.
	gate := make(chan struct{})
	broker := newHookBroker(t, func(ctx context.Context, channel string) error {
		if channel != "todos" {
			return nil
		}
		select {
		case <-gate:
			return nil
		case <-time.After(waitFor):
			return errors.New("the client did not get the response before the publication")
		}
	})
	s := newHookServer(t, &live.Options{Broker: broker})
	item := `{"id":"t1","title":"` + strings.Repeat("long ", 1000) + `"}` // beyond net/http's own buffer
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, item[:10])
		io.WriteString(w, item[10:])
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	resp, err := http.Post(s.srv.URL+"/todos", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != item {
		t.Fatalf("response %q, %v", body, err)
	}
	if resp.ContentLength != int64(len(item)) {
		t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(item))
	}
	close(gate)

	if diff := cmp.Diff(`{"type":"add","item":`+item+`}`, stream.nextData(t).Data); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	<-s.done
	if logs := s.logs.take(); logs != nil {
		t.Errorf("logged %q", logs)
	}
}

// TestHookPublishWaitsForBroker answers requests 201 while the broker
// refuses every publication: the events wait in the hub, a later
// Hub.Publish on the channel waits behind them, and once the broker takes
// publications again subscribers get all of them, once, in order.
func TestHookPublishWaitsForBroker(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	broker := newHookBroker(t, func(_ context.Context, channel string) error {
		if channel == "todos" && down.Load() {
			return errors.New("broker down")
		}
		return nil
	})
	s := newHookServer(t, &live.Options{Broker: broker})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), echo)
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	for _, id := range []string{"t1", "t2"} {
		rep := s.do(t, "POST", "/todos", hdr("X-Status", "201"), `{"id":"`+id+`"}`)
		if rep.status != http.StatusCreated || rep.body != `{"id":"`+id+`"}` {
			t.Errorf("response %d %q, want the handler's 201", rep.status, rep.body)
		}
	}
	if st := s.hub.Stats(); st.Pending != 2 || st.HookDropped != 0 {
		t.Errorf("Stats() Pending %d, HookDropped %d; want 2 and 0", st.Pending, st.HookDropped)
	}
	if logs := s.logs.take(); len(logs) != 1 || !strings.Contains(logs[0], "waits to be sent again: broker down") {
		t.Errorf("logged %q, want one warning", logs)
	}
	published := make(chan error, 1)
	go func() {
		_, err := s.hub.Publish(context.Background(), "todos", map[string]string{"type": "reset"})
		published <- err
	}()

	down.Store(false)
	for _, want := range []string{
		`{"type":"add","item":{"id":"t1"}}`,
		`{"type":"add","item":{"id":"t2"}}`,
		`{"type":"reset"}`,
	} {
		if got := stream.nextData(t).Data; got != want {
			t.Errorf("event %s, want %s", got, want)
		}
	}
	if err := <-published; err != nil {
		t.Errorf("Publish behind the waiting events: %v", err)
	}
	if st := s.hub.Stats(); st.Pending != 0 || st.PendingDropped != 0 || st.HookDropped != 0 {
		t.Errorf("Stats() %+v, want nothing pending or dropped", st)
	}
}

// TestHookPublishAnswerLost has the broker take each publication and
// lose its answer, then fail outright: the hub sends it again under the
// key of its first attempt, the broker takes none of the repeats, and
// subscribers receive each event, and a Publish behind them, once, in
// order.
func TestHookPublishAnswerLost(t *testing.T) {
	broker := &lossyBroker{MemoryBroker: live.NewMemoryBroker(nil), attempts: make(map[string]int)}
	t.Cleanup(func() { broker.Close() })
	s := newHookServer(t, &live.Options{Broker: broker})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), echo)
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)
	var want []string
	for _, id := range []string{"t1", "t2", "t3"} {
		if rep := s.do(t, "POST", "/todos", hdr("X-Status", "201"), `{"id":"`+id+`"}`); rep.status != http.StatusCreated {
			t.Fatalf("response %d %q, want the handler's 201", rep.status, rep.body)
		}
		want = append(want, `{"type":"add","item":{"id":"`+id+`"}}`)
	}
	if _, err := s.hub.Publish(context.Background(), "todos", map[string]string{"type": "after"}); err != nil {
		t.Fatal(err)
	}
	want = append(want, `{"type":"after"}`)
	var got []string
	for len(got) < len(want) {
		got = append(got, stream.nextData(t).Data)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	broker.mu.Lock()
	// One key per event; the Publish has one too if it waited behind them.
	if n := len(broker.attempts); n != 3 && n != 4 {
		t.Errorf("%d keys, want one per publication: %v", n, broker.attempts)
	}
	for key, n := range broker.attempts {
		if n < 3 {
			t.Errorf("key %q sent %d times, want at least 3", key, n)
		}
	}
	broker.mu.Unlock()
	if st := s.hub.Stats(); st.Pending != 0 || st.PendingDropped != 0 || st.HookDropped != 0 {
		t.Errorf("Stats() %+v, want nothing pending or dropped", st)
	}
}

// TestHookEventsInOrder has a client send its next write without
// waiting for the previous request to end, while the hook is still
// publishing the previous one's event, which the broker is slow to
// refuse: the later event waits its turn behind the earlier one, and
// subscribers see the events in the order they were made.
func TestHookEventsInOrder(t *testing.T) {
	started := make(chan struct{}) // closed when the first event's first attempt reaches the broker
	second := make(chan struct{})  // closed when the second event reaches the broker
	var once sync.Once
	var first atomic.Bool
	broker := newHookBroker(t, func(ctx context.Context, channel string) error {
		if channel != "todos" {
			return nil
		}
		if first.CompareAndSwap(false, true) {
			// The first event's first attempt: slow, then refused.
			close(started)
			select {
			case <-second:
			case <-time.After(time.Second):
			}
			return errors.New("broker: i/o timeout")
		}
		once.Do(func() { close(second) })
		return nil
	})
	s := newHookServer(t, &live.Options{Broker: broker})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), echo)
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)
	for _, id := range []string{"t1", "t2"} {
		req, _ := http.NewRequest("POST", s.srv.URL+"/todos", strings.NewReader(`{"id":"`+id+`"}`))
		req.Header.Set("X-Status", "201")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // not waiting for the handler to return
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s: %s", id, resp.Status)
		}
		if id == "t1" {
			select { // t1's event is on its way: t2's is made after it
			case <-started:
			case <-time.After(waitFor):
				t.Fatal("the first event did not reach the broker")
			}
		}
	}
	for _, id := range []string{"t1", "t2"} {
		if got, want := stream.nextData(t).Data, `{"type":"add","item":{"id":"`+id+`"}}`; got != want {
			t.Errorf("event %s, want %s", got, want)
		}
	}
	<-s.done
	<-s.done
}

// A lossyBroker takes a keyed publication on "todos" on its first
// attempt but answers with an error, as a timeout after the broker acted
// would, and fails the second attempt outright.
type lossyBroker struct {
	*live.MemoryBroker
	mu       sync.Mutex // guards attempts
	attempts map[string]int
}

func (b *lossyBroker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	key := live.PublishKey(ctx)
	if channel != "todos" || key == "" {
		return b.MemoryBroker.Publish(ctx, channel, data)
	}
	b.mu.Lock()
	b.attempts[key]++
	n := b.attempts[key]
	b.mu.Unlock()
	switch n {
	case 1:
		if _, err := b.MemoryBroker.Publish(ctx, channel, data); err != nil {
			return live.Position{}, err
		}
		return live.Position{}, errors.New("broker: i/o timeout")
	case 2:
		return live.Position{}, errors.New("broker down")
	}
	return b.MemoryBroker.Publish(ctx, channel, data)
}

// TestHookPublishPendingBounds fills the hub's waiting room while the
// broker is down: past PendingBytes an event is dropped loudly, a Publish
// behind the waiting ones gives up with its context, and what waited
// longer than PendingAge is dropped loudly too.
func TestHookPublishPendingBounds(t *testing.T) {
	broker := newHookBroker(t, func(_ context.Context, channel string) error {
		if channel == "todos" {
			return errors.New("broker down")
		}
		return nil
	})
	s := newHookServer(t, &live.Options{Broker: broker, PendingBytes: 100, PendingAge: time.Hour})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), echo)

	s.do(t, "POST", "/todos", hdr("X-Status", "201"), `{"id":"t1","text":"`+strings.Repeat("x", 40)+`"}`)
	s.do(t, "POST", "/todos", hdr("X-Status", "201"), `{"id":"t2","text":"`+strings.Repeat("x", 40)+`"}`)
	st := s.hub.Stats()
	if st.Pending != 1 || st.PendingDropped != 1 || st.HookDropped != 1 {
		t.Errorf("Stats() Pending %d, PendingDropped %d, HookDropped %d; want 1, 1, 1", st.Pending, st.PendingDropped, st.HookDropped)
	}
	logs := s.logs.take()
	if len(logs) != 2 || !strings.Contains(logs[1], "hook publish failed") || !strings.Contains(logs[1], "PendingBytes") {
		t.Errorf("logged %q, want a warning, then an error naming PendingBytes", logs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.hub.Publish(ctx, "todos", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish behind the waiting event = %v, want its context's error", err)
	}
	if st := s.hub.Stats(); st.Pending != 1 {
		t.Errorf("Stats().Pending = %d after the Publish gave up, want 1", st.Pending)
	}

	// Past PendingAge, the waiting event and a Publish behind it are
	// given up, loudly.
	s = newHookServer(t, &live.Options{Broker: broker, PendingAge: 20 * time.Millisecond})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), echo)
	s.do(t, "POST", "/todos", hdr("X-Status", "201"), `{"id":"t3"}`)
	if _, err := s.hub.Publish(context.Background(), "todos", 2); err == nil || !strings.Contains(err.Error(), "PendingAge") {
		t.Errorf("Publish behind an event that waited too long = %v, want an error naming PendingAge", err)
	}
	if st := s.hub.Stats(); st.Pending != 0 || st.PendingDropped != 2 {
		t.Errorf("Stats() Pending %d, PendingDropped %d; want 0 and 2", st.Pending, st.PendingDropped)
	}
}

func TestHookStreaming(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flush func(w http.ResponseWriter) error
	}{
		{"ResponseController", func(w http.ResponseWriter) error { return http.NewResponseController(w).Flush() }},
		{"http.Flusher", func(w http.ResponseWriter) error { w.(http.Flusher).Flush(); return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHookServer(t, nil)
			seen := make(chan struct{})
			s.handle("POST /stream", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `[1,`)
				if err := tc.flush(w); err != nil {
					t.Errorf("flush: %v", err)
				}
				select {
				case <-seen:
				case <-time.After(waitFor):
					t.Error("the client did not see the flushed part")
				}
				io.WriteString(w, `2]`)
			})
			stream := openSSE(t, s.srv.URL+"/live/todos", nil)

			resp, err := http.Post(s.srv.URL+"/stream", "application/json", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, 3)
			if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != `[1,` {
				t.Fatalf("first part %q, %v", first, err)
			}
			close(seen)
			rest, _ := io.ReadAll(resp.Body)
			if string(rest) != `2]` {
				t.Errorf("rest %q", rest)
			}
			if diff := cmp.Diff(`{"type":"add","item":[1,2]}`, stream.nextData(t).Data); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
			<-s.done
		})
	}
}

func TestHookHijack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hijack func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error)
	}{
		{"ResponseController", func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
			return http.NewResponseController(w).Hijack()
		}},
		{"http.Hijacker", func(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
			return w.(http.Hijacker).Hijack()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHookServer(t, nil)
			s.handle("POST /raw", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
				c, rw, err := tc.hijack(w)
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				defer c.Close()
				io.WriteString(rw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"id\":1}")
				rw.Flush()
			})
			stream := openSSE(t, s.srv.URL+"/live/todos", nil)

			rep := s.do(t, "POST", "/raw", nil, "")
			if rep.status != http.StatusOK || rep.body != `{"id":1}` {
				t.Errorf("response %d %q (%v)", rep.status, rep.body, rep.err)
			}
			s.expectNothing(t, stream, "todos")
		})
	}
}

func TestHookMaxBody(t *testing.T) {
	s := newHookServer(t, nil)
	const max = 32
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos"), MaxBody: max}), func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		for len(b) > 0 { // in writes of 10 bytes
			n := min(10, len(b))
			w.Write(b[:n])
			b = b[n:]
		}
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	// jsonOf returns a JSON value n bytes long.
	jsonOf := func(n int) string { return `"` + strings.Repeat("x", n-2) + `"` }
	for _, tc := range []struct {
		name    string
		size    int
		publish bool
	}{
		{"under", max - 1, true},
		{"at", max, true},
		{"over", max + 1, false},
		{"far over", 100 * max, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := jsonOf(tc.size)
			rep := s.do(t, "POST", "/todos", nil, body)
			if rep.status != http.StatusOK || rep.body != body {
				t.Fatalf("response %d, %d bytes, want 200 with the %d bytes intact", rep.status, len(rep.body), len(body))
			}
			logs := s.logs.take()
			if tc.publish {
				if diff := cmp.Diff(`{"type":"add","item":`+body+`}`, stream.nextData(t).Data); diff != "" {
					t.Errorf("event (-want +got):\n%s", diff)
				}
				if logs != nil {
					t.Errorf("logged %q", logs)
				}
				return
			}
			s.expectNothing(t, stream, "todos")
			want := []string{"live: hook published nothing; subscribers missed a change: response body exceeds HookOptions.MaxBody (32 bytes)"}
			if diff := cmp.Diff(want, logs); diff != "" {
				t.Errorf("logs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHookNotPublishable(t *testing.T) {
	s := newHookServer(t, nil)
	hook := s.hub.Hook(live.HookOptions{Channel: toChannel("todos")})
	s.handle("/todos", hook, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.Header.Get("X-Type"))
		echo(w, r)
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	for _, tc := range []struct {
		name, method, body, reason string
		header                     http.Header
	}{
		{name: "text", method: "POST", header: hdr("X-Type", "text/plain"), body: "ok", reason: "response body is not one JSON value in UTF-8"},
		{name: "two values", method: "PUT", body: `{"id":1}{"id":2}`, reason: "response body is not one JSON value in UTF-8"},
		{name: "empty", method: "POST", header: hdr("X-Status", "201"), reason: "response body is not one JSON value in UTF-8"},
		{name: "bad UTF-8", method: "PATCH", body: "\"\xff\"", reason: "response body is not one JSON value in UTF-8"},
		{name: "DELETE without id", method: "DELETE", header: hdr("X-Status", "204"), reason: "no id for the removed item (set HookOptions.ID)"},
		{name: "DELETE with null id", method: "DELETE", body: `{"id":null}`, reason: "no id for the removed item (set HookOptions.ID)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := s.do(t, tc.method, "/todos", tc.header, tc.body)
			if rep.status < 200 || rep.status > 299 || rep.body != tc.body {
				t.Fatalf("response %d %q, want the handler's", rep.status, rep.body)
			}
			s.expectNothing(t, stream, "todos")
			want := []string{"live: hook published nothing; subscribers missed a change: " + tc.reason}
			if diff := cmp.Diff(want, s.logs.take()); diff != "" {
				t.Errorf("logs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHookSetEvent(t *testing.T) {
	s := newHookServer(t, nil)
	var stored atomic.Int64
	s.handle("POST /todos/import", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		var rows []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&rows); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for range rows {
			stored.Add(1)
		}
		for _, ch := range r.Header.Values("X-Set") {
			live.SetEvent(r, ch, map[string]any{"type": "refetch", "count": len(rows)})
		}
		if r.Header.Get("X-Skip") != "" {
			live.SkipEvent(r)
		}
		status := http.StatusOK
		if v := r.Header.Get("X-Status"); v != "" {
			status, _ = strconv.Atoi(v)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"imported":%d}`, len(rows))
	})
	todos := openSSE(t, s.srv.URL+"/live/todos", nil)
	stats := openSSE(t, s.srv.URL+"/live/stats", nil)

	rows := "[" + strings.Repeat(`{"title":"row"},`, 999) + `{"title":"row"}]`
	for _, tc := range []struct {
		name   string
		header http.Header
		todos  []string // events on todos, then the sentinel
		stats  []string // events on stats, then the sentinel
	}{
		{
			name:   "bulk import publishes one event",
			header: hdr("X-Set", "todos"),
			todos:  []string{`{"count":1000,"type":"refetch"}`},
		},
		{
			name:   "each call adds an event",
			header: hdr("X-Set", "todos", "X-Set", "stats"),
			todos:  []string{`{"count":1000,"type":"refetch"}`},
			stats:  []string{`{"count":1000,"type":"refetch"}`},
		},
		{
			name:   "SkipEvent",
			header: hdr("X-Skip", "1"),
		},
		{
			name:   "SkipEvent wins over SetEvent",
			header: hdr("X-Set", "todos", "X-Skip", "1"),
		},
		{
			name:   "nothing on failure",
			header: hdr("X-Set", "todos", "X-Status", "500"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.hub.Stats().Published
			stored.Store(0)
			rep := s.do(t, "POST", "/todos/import", tc.header, rows)
			if rep.body != `{"imported":1000}` || stored.Load() != 1000 {
				t.Fatalf("response %d %q, stored %d", rep.status, rep.body, stored.Load())
			}
			if got, want := s.hub.Stats().Published-before, int64(len(tc.todos)+len(tc.stats)); got != want {
				t.Errorf("published %d events, want %d", got, want)
			}
			for _, c := range []struct {
				name   string
				stream *sseStream
				want   []string
			}{{"todos", todos, tc.todos}, {"stats", stats, tc.stats}} {
				for _, want := range c.want {
					if diff := cmp.Diff(want, c.stream.nextData(t).Data); diff != "" {
						t.Errorf("%s event (-want +got):\n%s", c.name, diff)
					}
				}
				s.expectNothing(t, c.stream, c.name)
			}
		})
	}

	t.Run("outside a Hook", func(t *testing.T) {
		r := httptest.NewRequest("POST", "/", nil)
		live.SetEvent(r, "todos", 1) // does nothing, does not panic
		live.SkipEvent(r)
	})
}

func TestHookMutationID(t *testing.T) {
	s := newHookServer(t, nil)
	var called atomic.Int64
	s.handle("/todos/{id}", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		echo(w, r)
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)

	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		want   string // the event; "" for a 400
	}{
		{name: "128 bytes", method: "PUT", header: hdr(live.MutationIDHeader, strings.Repeat("m", 128)),
			want: `{"type":"update","item":{"id":"t1"},"mutationId":"` + strings.Repeat("m", 128) + `"}`},
		{name: "printable punctuation", method: "PUT", header: hdr(live.MutationIDHeader, `temp-1 {"x"}~`),
			want: `{"type":"update","item":{"id":"t1"},"mutationId":"temp-1 {\"x\"}~"}`},
		{name: "empty means none", method: "PUT", header: hdr(live.MutationIDHeader, ""),
			want: `{"type":"update","item":{"id":"t1"}}`},
		{name: "129 bytes", method: "PUT", header: hdr(live.MutationIDHeader, strings.Repeat("m", 129))},
		{name: "tab", method: "DELETE", header: hdr(live.MutationIDHeader, "a\tb")},
		{name: "not ASCII", method: "POST", header: hdr(live.MutationIDHeader, "café")},
		{name: "two headers", method: "PATCH", header: hdr(live.MutationIDHeader, "a", live.MutationIDHeader, "b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := called.Load()
			rep := s.do(t, tc.method, "/todos/t1", tc.header, `{"id":"t1"}`)
			if tc.want != "" {
				if rep.status != http.StatusOK {
					t.Fatalf("status %d: %s", rep.status, rep.body)
				}
				if got, want := rep.header.Get(live.MutationIDHeader), tc.header.Get(live.MutationIDHeader); got != want {
					t.Errorf("echoed %q, want %q", got, want)
				}
				if diff := cmp.Diff(tc.want, stream.nextData(t).Data); diff != "" {
					t.Errorf("event (-want +got):\n%s", diff)
				}
				return
			}
			if called.Load() != before {
				t.Error("the handler ran")
			}
			checkHookError(t, rep, http.StatusBadRequest, "bad_mutation_id")
			if got := rep.header.Get(live.MutationIDHeader); got != "" {
				t.Errorf("echoed the invalid id %q", got)
			}
			s.expectNothing(t, stream, "todos")
		})
	}
}

// checkHookError fails unless rep is a JSON error response.
func checkHookError(t *testing.T, rep hookReply, status int, code string) map[string]string {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal([]byte(rep.body), &body); err != nil {
		t.Fatalf("body %q: %v", rep.body, err)
	}
	if rep.status != status || body["error"] != code || body["message"] == "" {
		t.Errorf("got %d %s, want %d with error %q and a message", rep.status, rep.body, status, code)
	}
	if ct := rep.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return body
}

func TestHookIfMatch(t *testing.T) {
	s := newHookServer(t, nil)
	versions := map[string]string{"d1": "v2", "gone": "", "comma": "a,b", "weak": `W/"v2"`}
	var mu sync.Mutex // guards asked
	var asked int
	var called atomic.Int64
	hook := s.hub.Hook(live.HookOptions{
		Channel: toChannel("docs"),
		Version: func(r *http.Request) (string, error) {
			mu.Lock()
			asked++
			mu.Unlock()
			if r.PathValue("id") == "broken" {
				return "", errors.New("db down")
			}
			return versions[r.PathValue("id")], nil
		},
	})
	s.handle("/docs/{id}", hook, func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		echo(w, r)
	})
	stream := openSSE(t, s.srv.URL+"/live/docs", nil)

	for _, tc := range []struct {
		name    string
		doc     string
		ifMatch []string
		status  int    // 200: the handler ran
		version string // in the 412 body
	}{
		{name: "no If-Match", doc: "d1", status: 200},
		{name: "current", doc: "d1", ifMatch: []string{`"v2"`}, status: 200},
		{name: "stale", doc: "d1", ifMatch: []string{`"v1"`}, status: 412, version: "v2"},
		{name: "list", doc: "d1", ifMatch: []string{`"v0", "v1"`, `"v2"`}, status: 200},
		{name: "bare version", doc: "d1", ifMatch: []string{`v2`}, status: 200},
		{name: "weak tag never matches", doc: "d1", ifMatch: []string{`W/"v2"`}, status: 412, version: "v2"},
		{name: "weak version never matches", doc: "weak", ifMatch: []string{`W/"v2"`}, status: 412, version: `W/"v2"`},
		{name: "comma inside a tag", doc: "comma", ifMatch: []string{`"a", "a,b"`}, status: 200},
		{name: "star", doc: "d1", ifMatch: []string{`*`}, status: 200},
		{name: "star on a missing resource", doc: "gone", ifMatch: []string{`*`}, status: 412, version: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := called.Load()
			h := http.Header{}
			for _, v := range tc.ifMatch {
				h.Add("If-Match", v)
			}
			rep := s.do(t, "PATCH", "/docs/"+tc.doc, h, `{"id":"`+tc.doc+`"}`)
			if tc.status == http.StatusOK {
				if rep.status != http.StatusOK || called.Load() != before+1 {
					t.Fatalf("status %d (%s), handler ran %d times", rep.status, rep.body, called.Load()-before)
				}
				if diff := cmp.Diff(`{"type":"update","item":{"id":"`+tc.doc+`"}}`, stream.nextData(t).Data); diff != "" {
					t.Errorf("event (-want +got):\n%s", diff)
				}
				return
			}
			if called.Load() != before {
				t.Error("the handler ran")
			}
			body := checkHookError(t, rep, tc.status, "conflict")
			if v, ok := body["version"]; !ok || v != tc.version {
				t.Errorf("version %q (present %v), want %q", v, ok, tc.version)
			}
			s.expectNothing(t, stream, "docs")
		})
	}

	t.Run("Version asked only with If-Match", func(t *testing.T) {
		mu.Lock()
		asked = 0
		mu.Unlock()
		s.do(t, "PATCH", "/docs/d1", nil, `{"id":"d1"}`)
		stream.nextData(t)
		mu.Lock()
		defer mu.Unlock()
		if asked != 0 {
			t.Errorf("Version called %d times", asked)
		}
	})

	t.Run("Version fails", func(t *testing.T) {
		before := called.Load()
		rep := s.do(t, "PATCH", "/docs/broken", hdr("If-Match", `"v1"`), `{}`)
		checkHookError(t, rep, http.StatusInternalServerError, "version_unavailable")
		if called.Load() != before {
			t.Error("the handler ran")
		}
		want := []string{"live: hook: HookOptions.Version failed: db down"}
		if diff := cmp.Diff(want, s.logs.take()); diff != "" {
			t.Errorf("logs (-want +got):\n%s", diff)
		}
		s.expectNothing(t, stream, "docs")
	})
}

func TestWriteConflict(t *testing.T) {
	s := newHookServer(t, nil)
	// A store whose handler compares and writes atomically, as the hook's
	// own If-Match check cannot.
	var mu sync.Mutex // guards version
	version := 3
	s.handle("PUT /docs/{id}", s.hub.Hook(live.HookOptions{Channel: toChannel("docs")}), func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Version int }
		json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		defer mu.Unlock()
		if r.PathValue("id") == "gone" {
			live.WriteConflict(w, http.StatusPreconditionFailed, "")
			return
		}
		if in.Version != version {
			live.WriteConflict(w, http.StatusConflict, strconv.Itoa(version))
			return
		}
		version++
		fmt.Fprintf(w, `{"id":"d1","version":%d}`, version)
	})
	stream := openSSE(t, s.srv.URL+"/live/docs", nil)

	for _, tc := range []struct {
		name, path, body string
		want             hookReply
	}{
		{
			name: "stale", path: "/docs/d1", body: `{"version":2}`,
			want: hookReply{status: 409, body: `{"error":"conflict","message":"the resource has changed; merge onto the current version and retry","version":3}` + "\n"},
		},
		{
			name: "gone", path: "/docs/gone", body: `{"version":3}`,
			want: hookReply{status: 412, body: `{"error":"conflict","message":"the resource no longer exists","version":""}` + "\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := s.do(t, "PUT", tc.path, nil, tc.body)
			got := hookReply{status: rep.status, body: rep.body}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(hookReply{})); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			for k, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
				if got := rep.header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			s.expectNothing(t, stream, "docs")
		})
	}

	t.Run("current", func(t *testing.T) {
		rep := s.do(t, "PUT", "/docs/d1", nil, `{"version":3}`)
		if rep.status != http.StatusOK {
			t.Fatalf("status %d %s", rep.status, rep.body)
		}
		if diff := cmp.Diff(`{"type":"update","item":{"id":"d1","version":4}}`, stream.nextData(t).Data); diff != "" {
			t.Errorf("event (-want +got):\n%s", diff)
		}
	})
}

func TestHookChannelPerRequest(t *testing.T) {
	s := newHookServer(t, nil)
	hook := s.hub.Hook(live.HookOptions{Channel: func(r *http.Request) string {
		return "todos:" + r.PathValue("tenant")
	}})
	s.handle("POST /t/{tenant}/todos", hook, echo)
	acme := openSSE(t, s.srv.URL+"/live/todos:acme", nil)
	globex := openSSE(t, s.srv.URL+"/live/todos:globex", nil)

	s.do(t, "POST", "/t/acme/todos", nil, `{"id":"a1"}`)
	s.do(t, "POST", "/t/globex/todos", nil, `{"id":"g1"}`)
	if diff := cmp.Diff(`{"type":"add","item":{"id":"a1"}}`, acme.nextData(t).Data); diff != "" {
		t.Errorf("acme event (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(`{"type":"add","item":{"id":"g1"}}`, globex.nextData(t).Data); diff != "" {
		t.Errorf("globex event (-want +got):\n%s", diff)
	}
	s.expectNothing(t, acme, "todos:acme")
	s.expectNothing(t, globex, "todos:globex")
}

func TestHookCustomEvent(t *testing.T) {
	s := newHookServer(t, nil)
	hook := s.hub.Hook(live.HookOptions{
		// The list and the item's own channel; nothing for DELETE.
		Event: func(r *http.Request, status int, body []byte) []live.Event {
			if r.Method == http.MethodDelete {
				return nil
			}
			id := r.PathValue("id")
			return []live.Event{
				{Channel: "todos", Data: live.ListUpdate{Type: "update", Item: body, MutationID: r.Header.Get(live.MutationIDHeader)}},
				{Channel: "todo:" + id, Data: map[string]any{"status": status, "todo": json.RawMessage(body)}},
			}
		},
	})
	s.handle("/todos/{id}", hook, echo)
	ws := dialWS(t, "ws"+strings.TrimPrefix(s.srv.URL, "http")+"/ws", nil)
	ws.subscribe(t, "todos")
	ws.subscribe(t, "todo:t1")

	// next returns the next n data frames as "channel data" lines, sorted:
	// order holds within a channel, not across channels.
	next := func(n int) map[string]string {
		got := map[string]string{}
		for range n {
			f := ws.expect(t, "data")
			got[f.Channel] = string(f.Data)
		}
		return got
	}

	rep := s.do(t, "PATCH", "/todos/t1", hdr("X-Status", "202", live.MutationIDHeader, "m1"), `{"id":"t1","done":true}`)
	if rep.status != http.StatusAccepted {
		t.Fatalf("status %d", rep.status)
	}
	want := map[string]string{
		"todos":   `{"type":"update","item":{"id":"t1","done":true},"mutationId":"m1"}`,
		"todo:t1": `{"status":202,"todo":{"id":"t1","done":true}}`,
	}
	if diff := cmp.Diff(want, next(2)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	s.do(t, "DELETE", "/todos/t1", nil, "")
	s.hub.Publish(context.Background(), "todos", "sentinel")
	s.hub.Publish(context.Background(), "todo:t1", "sentinel")
	want = map[string]string{"todos": `"sentinel"`, "todo:t1": `"sentinel"`}
	if diff := cmp.Diff(want, next(2)); diff != "" {
		t.Errorf("after DELETE (-want +got):\n%s", diff)
	}
}

func TestHookPassesSafeMethods(t *testing.T) {
	s := newHookServer(t, nil)
	s.handle("/todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(interface{ Unwrap() http.ResponseWriter }); ok {
			t.Errorf("%s: the hook wrapped the ResponseWriter", r.Method)
		}
		io.WriteString(w, `{"id":"t1"}`)
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)
	for _, method := range []string{"GET", "HEAD", "OPTIONS"} {
		// Not a mutation, so not even the mutation id is checked.
		rep := s.do(t, method, "/todos", hdr(live.MutationIDHeader, "a\tb"), "")
		if rep.status != http.StatusOK {
			t.Errorf("%s: status %d", method, rep.status)
		}
	}
	s.expectNothing(t, stream, "todos")
}

func TestHookNeedsChannelOrEvent(t *testing.T) {
	defer func() {
		if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "HookOptions.Channel") {
			t.Errorf("recovered %v, want a panic naming HookOptions.Channel", v)
		}
	}()
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	hub.Hook(live.HookOptions{})
}

// TestHookRetries sends retries as clients whose responses were lost
// do: the handler runs once, one event is published, every retry gets
// the first response.
func TestHookRetries(t *testing.T) {
	s := newHookServer(t, &live.Options{Identify: byUserHeader})
	var mu sync.Mutex
	runs := map[string]int{}
	fail := map[string]int{} // status to answer with, per path
	s.handle("/todos/{name}", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		runs[r.URL.Path]++
		n, status := runs[r.URL.Path], fail[r.URL.Path]
		mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":"no","run":%d}`, n)
			return
		}
		w.Header().Set("Location", "/todos/t1")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":"t1","run":%d}`, n)
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)
	post := func(path string, header http.Header) hookReply {
		t.Helper()
		return s.do(t, "POST", path, header, `{}`)
	}
	mid := func(v string) http.Header { return http.Header{live.MutationIDHeader: {v}, "X-User": {"alice"}} }
	key := func(v string) http.Header { return http.Header{live.IdempotencyKeyHeader: {v}, "X-User": {"alice"}} }

	// A mutation id and an Idempotency-Key each make a retry safe.
	for _, h := range []http.Header{mid("m1"), key("k1")} {
		path := "/todos/" + strings.ToLower(fmt.Sprint(len(h[live.MutationIDHeader])))
		first := post(path, h)
		for range 3 {
			again := post(path, h)
			if again.status != 201 || again.body != first.body || again.header.Get("Location") != "/todos/t1" || again.header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("retry: %d %q %v; want the first response, %d %q", again.status, again.body, again.header, first.status, first.body)
			}
		}
		if runs[path] != 1 {
			t.Fatalf("%s ran %d times", path, runs[path])
		}
		stream.nextData(t)
	}
	s.expectNothing(t, stream, "todos") // one event per mutation, none for the retries

	// Keys are scoped by path: the same key elsewhere is another request.
	if rep := post("/todos/other", mid("m1")); rep.header.Get("Idempotent-Replayed") != "" || runs["/todos/other"] != 1 {
		t.Fatalf("the same key on another path was replayed: %+v", rep)
	}
	stream.nextData(t)

	// A refusal of the request itself is kept; one that depends on who
	// asks or when, and a 5xx, are not: a retry asks again.
	for _, c := range []struct {
		status, runs int
	}{{400, 1}, {404, 1}, {422, 1}, {401, 2}, {403, 2}, {409, 2}, {412, 2}, {429, 2}, {500, 2}, {503, 2}} {
		path := fmt.Sprintf("/todos/s%d", c.status)
		mu.Lock()
		fail[path] = c.status
		mu.Unlock()
		for range 2 {
			if rep := post(path, mid("m2")); rep.status != c.status {
				t.Fatalf("%d: a retry got %d %s", c.status, rep.status, rep.body)
			}
		}
		mu.Lock()
		n := runs[path]
		mu.Unlock()
		if n != c.runs {
			t.Errorf("a %d ran %d times; want %d", c.status, n, c.runs)
		}
	}

	// Malformed keys are refused.
	if rep := post("/todos/x", key(strings.Repeat("k", 256))); rep.status != 400 {
		t.Fatalf("a 256-byte key: %d", rep.status)
	}
}

// TestHookConcurrentDuplicates sends 100 copies of one request at once:
// one runs, the others wait for it and repeat its response.
func TestHookConcurrentDuplicates(t *testing.T) {
	hub := live.NewHub(&live.Options{Identify: byUserHeader})
	t.Cleanup(func() { hub.Close(context.Background()) })
	var runs atomic.Int32
	release := make(chan struct{})
	h := hub.Hook(live.HookOptions{Channel: toChannel("todos")})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		<-release // the first is still running while the copies arrive
		fmt.Fprint(w, `{"id":"t1"}`)
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var wg sync.WaitGroup
	bodies := make(chan string, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", srv.URL+"/todos", strings.NewReader(`{}`))
			req.Header.Set(live.MutationIDHeader, "same")
			req.Header.Set("X-User", "alice")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				bodies <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies <- fmt.Sprint(resp.StatusCode, " ", string(b))
		}()
	}
	for runs.Load() == 0 {
		runtime.Gosched() // the first has started
	}
	close(release)
	wg.Wait()
	close(bodies)
	for b := range bodies {
		if b != `200 {"id":"t1"}` {
			t.Errorf("a copy got %q", b)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times", n)
	}
}

// TestHookRetryAfterLostResponse cuts the response of a request after its
// handler ran, as a dropped connection does, and retries it.
func TestHookRetryAfterLostResponse(t *testing.T) {
	s := newHookServer(t, &live.Options{Identify: byUserHeader})
	var runs atomic.Int32
	cut := make(chan struct{})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // so that net/http watches for the client leaving
		if runs.Add(1) == 1 {
			close(cut)
			<-r.Context().Done() // the client has gone
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"t1"}`)
	})
	stream := openSSE(t, s.srv.URL+"/live/todos", nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", s.srv.URL+"/todos", strings.NewReader(`{}`))
	req.Header.Set(live.MutationIDHeader, "lost")
	req.Header.Set("X-User", "alice")
	go func() {
		<-cut
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the first request got its response")
	}
	<-s.done // its handler has returned
	if ev := stream.nextData(t); !strings.Contains(ev.Data, `"mutationId":"lost"`) {
		t.Fatalf("event %+v", ev)
	}
	for range 3 {
		rep := s.do(t, "POST", "/todos", hdr(live.MutationIDHeader, "lost", "X-User", "alice"), `{}`)
		if rep.status != 201 || rep.body != `{"id":"t1"}` {
			t.Fatalf("retry: %d %q", rep.status, rep.body)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times", n)
	}
	s.expectNothing(t, stream, "todos")
}

// TestHookRetryScopes checks that keys are per user (Options.Identify),
// and that RetryWindow < 0 turns retries off.
func TestHookRetryScopes(t *testing.T) {
	tm := newTeams()
	hub := live.NewHub(&live.Options{Identify: tm.identify})
	t.Cleanup(func() { hub.Close(context.Background()) })
	var runs atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"run":%d}`, runs.Add(1))
	})
	mux := http.NewServeMux()
	mux.Handle("POST /scoped", hub.Hook(live.HookOptions{Channel: toChannel("a")})(handler))
	mux.Handle("POST /off", hub.Hook(live.HookOptions{Channel: toChannel("a"), RetryWindow: -1})(handler))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	post := func(path, user string) string {
		req, _ := http.NewRequest("POST", srv.URL+path, nil)
		req.Header.Set("Cookie", "user="+user)
		req.Header.Set(live.IdempotencyKeyHeader, "k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if a, b := post("/scoped", "alice"), post("/scoped", "bob"); a == b {
		t.Fatalf("bob got alice's response %s", a)
	}
	if a := post("/scoped", "alice"); a != `{"run":1}` {
		t.Fatalf("alice's retry: %s", a)
	}
	if x, y := post("/off", "alice"), post("/off", "alice"); x == y {
		t.Fatalf("with RetryWindow < 0 a retry was replayed: %s", y)
	}
}
