package live_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// pathGuard is the ordinary net/http way for an app to protect a route by
// its path: only the channel "public" passes.
func pathGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("channel") != "public" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// lastSegmentGuard protects a prefix mount by the channel its path names,
// letting the prefix itself through (where Options.Authorize decides).
func lastSegmentGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seg := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		if seg != "" && seg != "public" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TestPathGuardedRoutes mounts the hub behind guards that read the
// channel from the path, as apps do, and tries to reach "secret" through
// them by query parameters and WebSocket upgrades. A URL that names a
// channel serves that channel only.
func TestPathGuardedRoutes(t *testing.T) {
	hub := live.NewHub(&live.Options{
		// The app relies on its path guards; the hub lets everything through.
		Authorize: func(*http.Request, string, live.Op) error { return nil },
	})
	mux := http.NewServeMux()
	mux.Handle("GET /guarded/{channel}", pathGuard(hub.SSEHandler()))
	mux.Handle("POST /guarded/{channel}", pathGuard(hub.PublishHandler()))
	mux.Handle("/whole/{channel}", pathGuard(hub))
	mux.Handle("/sockets/{channel}", pathGuard(hub.WebSocketHandler()))
	mux.Handle("/live/", lastSegmentGuard(hub))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})

	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/guarded/secret", "403"}, // the guard itself
		{"GET", "/guarded/public?channels=secret", "400"},
		{"GET", "/guarded/public?channels=public,secret", "400"},
		{"GET", "/guarded/public?channels=", "400"},
		{"GET", "/whole/public?channels=secret", "400"},
		{"GET", "/live/public?channels=secret", "400"},
		{"GET", "/live/?channel=secret", "400"},
		{"GET", "/live/public?channel=secret", "200"}, // streams "public": checked below
		{"POST", "/live/?channel=secret", "400"},
		{"POST", "/guarded/public?channel=secret", "200"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, tc.method, srv.URL+tc.path, strings.NewReader("1"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := fmt.Sprint(resp.StatusCode); got != tc.want {
				t.Fatalf("got %s; want %s", got, tc.want)
			}
		})
	}

	// WebSocket upgrades on a route that names a channel would multiplex
	// any channel: refused.
	for _, path := range []string{"/whole/public", "/sockets/public", "/live/public"} {
		t.Run("websocket "+path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+path, nil)
			if err == nil {
				c.CloseNow()
				t.Fatal("upgrade accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("got %v, %v; want 400", resp, err)
			}
		})
	}

	// What the guarded routes do stream is their own channel only.
	pub := openSSE(t, srv.URL+"/guarded/public", nil)
	prefixed := openSSE(t, srv.URL+"/live/public?channel=secret", nil)
	for _, ch := range []string{"secret", "public"} {
		if _, err := hub.Publish(context.Background(), ch, ch); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []*sseStream{pub, prefixed} {
		if ev := st.nextData(t); ev.Data != `"public"` {
			t.Fatalf("guarded stream got %q; want only public", ev.Data)
		}
	}

	// The prefix itself still multiplexes, under Options.Authorize.
	mx := openSSE(t, srv.URL+"/live/?channels=secret,public", nil)
	mx.expectMux(t, "subscribed", "secret")
	mx.expectMux(t, "subscribed", "public")
	ws := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/live/", nil)
	ws.subscribe(t, "secret")
}

// TestStateCrossSiteWrites sends state writes as a page on another site
// would, without a preflight: text/plain from a foreign Origin.
func TestStateCrossSiteWrites(t *testing.T) {
	s := newTestServer(t, &live.Options{OriginPatterns: []string{"friend.example"}})
	st, url := newState(t, s, "doc", &live.StateOptions{Initial: map[string]int{"n": 0}})
	host := strings.TrimPrefix(url, "http://")
	host = host[:strings.IndexByte(host, '/')]

	for _, tc := range []struct {
		name, method, origin, ctype string
		status                      int
		code                        string
	}{
		{"csrf post", "POST", "http://evil.example", "text/plain", 403, "bad_origin"},
		{"csrf patch", "PATCH", "http://evil.example", "text/plain;charset=UTF-8", 403, "bad_origin"},
		{"csrf put", "PUT", "http://evil.example", "application/x-www-form-urlencoded", 403, "bad_origin"},
		{"foreign json", "PATCH", "http://evil.example", "application/json", 403, "bad_origin"},
		{"null origin", "PATCH", "null", "application/json", 403, "bad_origin"},
		{"same origin text", "PATCH", "http://" + host, "text/plain", 415, "unsupported_media_type"},
		{"no origin form", "POST", "", "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
		{"no content type", "PUT", "", "", 415, "unsupported_media_type"},
		{"multipart", "POST", "", "multipart/form-data; boundary=x", 415, "unsupported_media_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.origin != "" {
				h["Origin"] = tc.origin
			}
			if tc.ctype != "" {
				h["Content-Type"] = tc.ctype
			}
			resp, body := doRequest(t, tc.method, url, `{"n":666}`, h)
			if resp.StatusCode != tc.status || body["error"] != tc.code {
				t.Fatalf("got %s %v; want %d %s", resp.Status, body, tc.status, tc.code)
			}
			if data, version := st.Get(); version != 0 || string(data) != `{"n":0}` {
				t.Fatalf("state changed to %s at version %d", data, version)
			}
		})
	}

	// Writes the hub should take: same origin, no origin (not a browser),
	// an allowed origin, with JSON media types.
	for i, tc := range []struct{ origin, ctype string }{
		{"http://" + host, "application/json"},
		{"", "application/json; charset=utf-8"},
		{"https://friend.example", "application/merge-patch+json"},
	} {
		resp, body := doRequest(t, "PATCH", url, fmt.Sprintf(`{"n":%d}`, i+1), map[string]string{"Origin": tc.origin, "Content-Type": tc.ctype})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%+v: got %s %v", tc, resp.Status, body)
		}
		if tc.origin == "https://friend.example" && resp.Header.Get("Access-Control-Allow-Origin") != tc.origin {
			t.Fatalf("allowed origin: no CORS header in %v", resp.Header)
		}
	}
	// An allowed origin's preflight is answered; a foreign one is not.
	for origin, want := range map[string]int{"https://friend.example": 204, "http://evil.example": 403} {
		resp, _ := doRequest(t, "OPTIONS", url, "", map[string]string{"Origin": origin, "Access-Control-Request-Method": "PATCH"})
		if resp.StatusCode != want {
			t.Fatalf("preflight from %s: %s; want %d", origin, resp.Status, want)
		}
		if want == 204 && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "If-Match") {
			t.Fatalf("preflight allows headers %q; want If-Match among them", resp.Header.Get("Access-Control-Allow-Headers"))
		}
	}
	// Reads follow the same origin rule as the streams.
	if resp, _ := doRequest(t, "GET", url, "", map[string]string{"Origin": "http://evil.example"}); resp.StatusCode != 403 {
		t.Fatalf("GET from a foreign origin: %s; want 403", resp.Status)
	}
}

// TestChannelChurnFreesMemory subscribes to and leaves 10,000 channels
// nobody publishes on: the hub and the broker must forget every one.
func TestChannelChurnFreesMemory(t *testing.T) {
	broker := live.NewMemoryBroker(nil)
	defer broker.Close()
	s := newTestServer(t, &live.Options{Broker: broker})
	c := dialWS(t, s.wsURL(), nil)

	churn := func(prefix string, n int) {
		t.Helper()
		// Frames go out from another goroutine while this one reads the
		// acknowledgements, so the client never waits for a round trip.
		sent := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
			defer cancel()
			for i := range n {
				ch := fmt.Sprintf("%s%d", prefix, i)
				for _, typ := range []string{"subscribe", "unsubscribe"} {
					if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"type":"`+typ+`","channel":"`+ch+`"}`)); err != nil {
						sent <- err
						return
					}
				}
			}
			sent <- nil
		}()
		for range n {
			c.expect(t, "subscribed")
			c.expect(t, "unsubscribed")
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}

	churn("warm", 2000) // the runtime's own structures (goroutines, threads) settle
	before := heap()
	churn("churn", 10000)
	after := heap()
	if n := live.MemoryChannels(broker); n != 1 {
		t.Errorf("the broker keeps %d channels; want 1, the hubs' control channel", n)
	}
	if n := live.HubChannels(s.hub); n != 0 {
		t.Errorf("the hub keeps %d channels", n)
	}
	// 10,000 forgotten channels must cost nothing per channel (they cost
	// 1.7 KiB each when the broker kept them). The runtime keeps the
	// records of goroutines that have ended for reuse, a few hundred
	// bytes each, and the channels' goroutines end while others start:
	// allow 512 KiB of that.
	grown := int64(after) - int64(before)
	t.Logf("heap %d → %d bytes (%+d) after 10,000 channels", before, after, grown)
	if grown > 512<<10 {
		t.Errorf("heap grew by %d bytes (%d per channel)", grown, grown/10000)
	}
}

// TestLargePublications checks that the size limits agree: a hooked
// response of exactly HookOptions.MaxBody's default is published and
// evicts nobody; a publication beyond half of QueueBytes is refused with
// a clear error and counted, whatever path it takes; and one that reaches
// the hub anyway (from a node configured otherwise) is delivered to
// clients that keep up.
func TestLargePublications(t *testing.T) {
	broker := live.NewMemoryBroker(nil)
	defer broker.Close()
	s := newHookServer(t, &live.Options{
		Broker:          broker,
		MaxMessageBytes: 4 << 20,
		Authorize:       func(*http.Request, string, live.Op) error { return nil },
	})
	s.handle("POST /todos", s.hub.Hook(live.HookOptions{Channel: toChannel("todos")}), echo)
	s.handle("POST /big", s.hub.Hook(live.HookOptions{Channel: toChannel("todos"), MaxBody: 1 << 20}), echo)
	sse := openSSE(t, s.srv.URL+"/live/todos", nil)
	ws := dialWS(t, "ws"+strings.TrimPrefix(s.srv.URL, "http")+"/ws", nil)
	ws.subscribe(t, "todos")
	jsonOf := func(n int) string { return `"` + strings.Repeat("x", n-2) + `"` }
	// arrives checks that both clients get a publication of at least
	// size bytes, or exactly data when it is not "".
	arrives := func(size int, data string) {
		t.Helper()
		if ev := sse.nextData(t); len(ev.Data) < size || data != "" && ev.Data != data {
			t.Fatalf("SSE got %.40q (%d bytes); want %d bytes %.40s", ev.Data, len(ev.Data), size, data)
		}
		if f := ws.expect(t, "data"); len(f.Data) < size || data != "" && string(f.Data) != data {
			t.Fatalf("WebSocket got %.40s (%d bytes); want %d bytes %.40s", f.Data, len(f.Data), size, data)
		}
	}
	publish := func(data string) {
		t.Helper()
		if _, err := s.hub.Publish(context.Background(), "todos", json.RawMessage(data)); err != nil {
			t.Fatal(err)
		}
	}

	// A response of exactly the default MaxBody, then another publication
	// at once: both arrive.
	const defaultMaxBody = 1<<20/2 - 1<<10
	body := jsonOf(defaultMaxBody)
	if rep := s.do(t, "POST", "/todos", nil, body); rep.status != http.StatusOK || len(rep.body) != len(body) {
		t.Fatalf("response %d, %d bytes", rep.status, len(rep.body))
	}
	publish(`"after"`)
	arrives(defaultMaxBody, "")
	arrives(0, `"after"`)
	if logs := s.logs.take(); logs != nil {
		t.Fatalf("logged %q", logs)
	}

	// A response over the hub's limit, allowed by the hook's MaxBody:
	// the client gets it, nothing is published, the loss is told.
	body = jsonOf(1 << 20)
	if rep := s.do(t, "POST", "/big", nil, body); rep.status != http.StatusOK || len(rep.body) != len(body) {
		t.Fatalf("response %d, %d bytes", rep.status, len(rep.body))
	}
	if logs := s.logs.take(); len(logs) != 1 || !strings.Contains(logs[0], "publish failed") {
		t.Fatalf("logs %q; want the failed publish", logs)
	}
	// Hub.Publish, HTTP publish and WebSocket publish refuse it the same way.
	if _, err := s.hub.Publish(context.Background(), "todos", json.RawMessage(body)); !errors.Is(err, live.ErrTooLarge) {
		t.Fatalf("Publish: %v; want ErrTooLarge", err)
	}
	if code := httpCode(t, "POST", s.srv.URL+"/live/todos", body); code != "413" {
		t.Fatalf("HTTP publish: %s; want 413", code)
	}
	ws.send(t, map[string]any{"type": "publish", "channel": "todos", "data": json.RawMessage(body)})
	if f := ws.expect(t, "error"); f.Code != "too_large" {
		t.Fatalf("WebSocket publish: %+v; want too_large", f)
	}
	st := s.hub.Stats()
	if st.TooLarge != 4 || st.HookDropped != 1 {
		t.Fatalf("TooLarge %d, HookDropped %d; want 4 and 1", st.TooLarge, st.HookDropped)
	}
	publish(`"still here"`)
	arrives(0, `"still here"`)

	// Beyond the queue's whole bound, from elsewhere: a client that keeps
	// up still gets it.
	huge := jsonOf(3 << 19)
	if _, err := broker.Publish(context.Background(), "todos", []byte(huge)); err != nil {
		t.Fatal(err)
	}
	arrives(3<<19, "")
	publish(`"huge done"`)
	arrives(0, `"huge done"`)
	if n := s.hub.Stats().SlowClients; n != 0 {
		t.Fatalf("%d clients taken for slow", n)
	}
}

// TestVersionNumbers holds ?version= and If-Match to the rule cursors
// follow: a version is a decimal number without leading zeros.
func TestVersionNumbers(t *testing.T) {
	s := newTestServer(t, nil)
	_, url := newState(t, s, "v", nil)
	s.publish(t, "plain", 1)
	for _, v := range []string{"01", "00", "+1", "1 ", "0x1"} {
		t.Run(v, func(t *testing.T) {
			stream := openSSE(t, s.srv.URL+"/live/plain?version="+neturl.QueryEscape(v), nil)
			if ev := stream.nextData(t); ev.Event != "reset" || !strings.Contains(ev.Data, `"malformed"`) {
				t.Fatalf("?version=%s: first event %+v; want a malformed reset", v, ev)
			}
			resp, body := doRequest(t, "PATCH", url, `{}`, map[string]string{"If-Match": `"` + v + `"`, "Content-Type": "application/json"})
			if resp.StatusCode != http.StatusBadRequest || body["error"] != "bad_version" {
				t.Fatalf("If-Match %q: %s %v; want 400 bad_version", v, resp.Status, body)
			}
		})
	}
	stream := openSSE(t, s.srv.URL+"/live/plain?version=0", nil)
	if ev := stream.nextData(t); ev.Data != "1" {
		t.Fatalf("?version=0: got %+v; want the publication", ev)
	}
}

// TestAuthorizeErrorsStayOnServer checks that what an Authorize error
// says reaches the log, not the client, on every path, unless it came
// from live.Deny.
func TestAuthorizeErrorsStayOnServer(t *testing.T) {
	var logs syncBuffer
	s := newTestServer(t, &live.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			switch channel {
			case "red":
				return fmt.Errorf(`"carol" not in team %q`, channel)
			case "blue":
				return live.Deny("ask a team admin to add you")
			case "ghost":
				return fmt.Errorf("tenant %q: %w", channel, live.ErrUnknownChannel)
			}
			return nil
		},
	})
	body := func(resp *http.Response) map[string]string {
		defer resp.Body.Close()
		var b map[string]string
		json.NewDecoder(resp.Body).Decode(&b)
		return b
	}
	ws := dialWS(t, s.wsURL(), nil)
	for _, tc := range []struct{ channel, code, message string }{
		{"red", "forbidden", "not allowed to subscribe to this channel"},
		{"blue", "forbidden", "ask a team admin to add you"},
		{"ghost", "unknown_channel", "no such channel"},
	} {
		t.Run(tc.channel, func(t *testing.T) {
			for _, path := range []string{"/live/" + tc.channel, "/api/live?channels=" + tc.channel} {
				resp, err := http.Get(s.srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				if b := body(resp); b["error"] != tc.code || b["message"] != tc.message {
					t.Errorf("GET %s: %v; want %s %q", path, b, tc.code, tc.message)
				}
			}
			ws.send(t, map[string]string{"type": "subscribe", "channel": tc.channel})
			if f := ws.expect(t, "error"); f.Code != tc.code || f.Message != tc.message {
				t.Errorf("WebSocket: %+v; want %s %q", f, tc.code, tc.message)
			}
		})
	}
	resp, err := http.Post(s.srv.URL+"/live/red", "application/json", strings.NewReader("1"))
	if err != nil {
		t.Fatal(err)
	}
	if b := body(resp); b["message"] != "not allowed to publish on this channel" {
		t.Errorf("publish: %v", b)
	}
	if !strings.Contains(logs.String(), `carol`) || !strings.Contains(logs.String(), `tenant`) {
		t.Errorf("the log lacks the errors' details:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "team admin") {
		t.Errorf("Deny's message, meant for the client, was logged as a failure:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
