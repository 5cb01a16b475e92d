package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

func TestSSEDeliversPublications(t *testing.T) {
	for _, path := range []string{"/live/metrics:dashboard", "/api/live/metrics:dashboard"} {
		t.Run(path, func(t *testing.T) {
			s := newTestServer(t, nil)
			stream := openSSE(t, s.srv.URL+path, nil)
			for name, want := range map[string]string{
				"Content-Type":      "text/event-stream",
				"Cache-Control":     "no-cache",
				"X-Accel-Buffering": "no",
			} {
				if got := stream.resp.Header.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			ack, _ := stream.next(t)
			if !ack.HasID || ack.Data != "" {
				t.Fatalf("first event = %+v, want an id-only event", ack)
			}

			pos := s.publish(t, "metrics:dashboard", map[string]int{"users": 42})
			ev := stream.nextData(t)
			want := sseEvent{ID: pos.String(), HasID: true, Data: `{"users":42}`}
			if diff := cmp.Diff(want, ev); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWebSocketSeedProtocol(t *testing.T) {
	s := newTestServer(t, nil)
	c := dialWS(t, s.wsURL(), nil)
	// A React LiveProvider sends exactly these frames and reads "data" frames.
	c.send(t, map[string]string{"type": "subscribe", "channel": "activity"})
	ack := c.expect(t, "subscribed")
	if ack.Channel != "activity" || ack.Cursor == "" {
		t.Fatalf("ack = %+v", ack)
	}

	pos := s.publish(t, "activity", map[string]any{"type": "add", "item": map[string]string{"id": "1"}})
	got := c.expect(t, "data")
	want := wsFrame{Type: "data", Channel: "activity", Data: json.RawMessage(`{"item":{"id":"1"},"type":"add"}`), Cursor: pos.String()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("data frame (-want +got):\n%s", diff)
	}

	c.send(t, map[string]string{"type": "unsubscribe", "channel": "activity"})
	c.expect(t, "unsubscribed")
	s.publish(t, "activity", 1)
	c.send(t, map[string]any{"type": "ping", "ref": 7})
	if f := c.expect(t, "pong"); string(f.Ref) != "7" {
		t.Errorf("pong ref = %s, want 7", f.Ref)
	}
}

func TestWebSocketMultiplexesChannels(t *testing.T) {
	s := newTestServer(t, nil)
	c := dialWS(t, s.wsURL(), nil)
	c.subscribe(t, "a")
	c.subscribe(t, "b")
	s.publish(t, "a", "to a")
	s.publish(t, "b", "to b")
	s.publish(t, "c", "to nobody")
	var got []string
	for range 2 {
		f := c.expect(t, "data")
		got = append(got, f.Channel+"="+string(f.Data))
	}
	if diff := cmp.Diff([]string{`a="to a"`, `b="to b"`}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func allowAll(*http.Request, string, live.Op) error { return nil }

func TestClientPublish(t *testing.T) {
	t.Run("refused by default", func(t *testing.T) {
		s := newTestServer(t, nil)
		c := dialWS(t, s.wsURL(), nil)
		c.send(t, map[string]any{"type": "publish", "channel": "chat", "data": "hi", "ref": "r1"})
		f := c.expect(t, "error")
		if f.Code != "forbidden" || f.Channel != "chat" || string(f.Ref) != `"r1"` {
			t.Errorf("error frame = %+v", f)
		}
		c.subscribe(t, "chat") // the connection stays up

		resp, err := http.Post(s.srv.URL+"/api/live/chat", "application/json", strings.NewReader(`"hi"`))
		if err != nil {
			t.Fatal(err)
		}
		checkErrorResponse(t, resp, http.StatusForbidden, "forbidden")
	})

	t.Run("allowed", func(t *testing.T) {
		s := newTestServer(t, &live.Options{Authorize: allowAll})
		sub := dialWS(t, s.wsURL(), nil)
		sub.subscribe(t, "chat")
		pub := dialWS(t, s.wsURL(), nil)
		pub.send(t, map[string]any{"type": "publish", "channel": "chat", "data": map[string]string{"text": "hi"}})
		ack := pub.expect(t, "published")
		got := sub.expect(t, "data")
		if got.Cursor != ack.Cursor || string(got.Data) != `{"text":"hi"}` {
			t.Errorf("data %+v after ack %+v", got, ack)
		}

		resp, err := http.Post(s.srv.URL+"/api/live/chat", "application/json", strings.NewReader("{\n  \"text\": \"over http\"\n}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var reply struct {
			Success bool
			Channel string
			Cursor  string
		}
		if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil || resp.StatusCode != 200 || !reply.Success {
			t.Fatalf("POST: %s %+v %v", resp.Status, reply, err)
		}
		got = sub.expect(t, "data")
		if got.Cursor != reply.Cursor || string(got.Data) != `{"text":"over http"}` {
			t.Errorf("data %+v after reply %+v", got, reply)
		}
	})
}

func checkErrorResponse(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	defer resp.Body.Close()
	var body struct{ Error, Message string }
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding error body: %v", err)
	}
	if resp.StatusCode != status || body.Error != code || body.Message == "" {
		t.Errorf("got %d %+v, want %d with error %q and a message", resp.StatusCode, body, status, code)
	}
}

func TestHTTPErrors(t *testing.T) {
	authorize := func(_ *http.Request, channel string, op live.Op) error {
		switch channel {
		case "secret":
			return live.ErrForbidden
		case "missing":
			return fmt.Errorf("no such thing: %w", live.ErrUnknownChannel)
		}
		return nil
	}
	s := newTestServer(t, &live.Options{Authorize: authorize, MaxMessageBytes: 1024})
	long := strings.Repeat("x", live.MaxChannelLen+1)
	tests := []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		code                     string
	}{
		{name: "bad json", method: "POST", path: "/api/live/c", body: `{"a":`, status: 400, code: "bad_json"},
		{name: "two values", method: "POST", path: "/api/live/c", body: `1 2`, status: 400, code: "bad_json"},
		{name: "empty body", method: "POST", path: "/api/live/c", body: ``, status: 400, code: "bad_json"},
		{name: "invalid utf-8", method: "POST", path: "/api/live/c", body: "\"\xff\"", status: 400, code: "bad_json"},
		{name: "oversize", method: "POST", path: "/api/live/c", body: `"` + strings.Repeat("x", 2000) + `"`, status: 413, code: "too_large"},
		{name: "bad channel publish", method: "POST", path: "/live/bad%20name", body: `1`, status: 400, code: "bad_channel"},
		{name: "long channel", method: "GET", path: "/live/" + long, status: 400, code: "bad_channel"},
		{name: "forbidden sse", method: "GET", path: "/api/live/secret", status: 403, code: "forbidden"},
		{name: "forbidden publish", method: "POST", path: "/live/secret", body: `1`, status: 403, code: "forbidden"},
		{name: "unknown channel", method: "GET", path: "/live/missing", status: 404, code: "unknown_channel"},
		{name: "method", method: "DELETE", path: "/live/c", status: 405, code: "method_not_allowed"},
		{name: "ws without upgrade", method: "GET", path: "/ws", status: 426, code: "upgrade_required"},
		{name: "cross-origin sse", method: "GET", path: "/live/c", header: map[string]string{"Origin": "https://evil.example"}, status: 403, code: "bad_origin"},
		{name: "cross-origin publish", method: "POST", path: "/live/c", body: `1`, header: map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"}, status: 403, code: "bad_origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, s.srv.URL+tt.path, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			checkErrorResponse(t, resp, tt.status, tt.code)
		})
	}
	if st := s.hub.Stats(); st.Published != 0 {
		t.Errorf("Published = %d after refused requests, want 0", st.Published)
	}
}

func TestCORS(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: allowAll, OriginPatterns: []string{"app.example"}})
	req, _ := http.NewRequest("OPTIONS", s.srv.URL+"/live/c", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %s %v", resp.Status, resp.Header)
	}

	stream := openSSE(t, s.srv.URL+"/live/c", http.Header{"Origin": {"https://app.example"}})
	if got := stream.resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("SSE Access-Control-Allow-Origin = %q", got)
	}
}

func TestWebSocketOrigins(t *testing.T) {
	s := newTestServer(t, &live.Options{OriginPatterns: []string{"app.example", "https://*.trusted.example"}})
	host := strings.TrimPrefix(s.srv.URL, "http://")
	tests := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://" + host, true},
		{"https://app.example", true},
		{"http://app.example", true},
		{"https://a.trusted.example", true},
		{"http://a.trusted.example", false},
		{"https://trusted.example", false},
		{"https://evil.example", false},
		{"https://app.example.evil.example", false},
		{"https://evilapp.example", false},
		{"https://app.example:8443", false},
		{"http://" + host + ".evil.example", false},
		{"http://127.0.0.1:1", false},
		{"null", false},
		{"file://", false},
		{"chrome-extension://" + host, false},
		{"ftp://" + host, false},
		{"https://user@app.example", false},
		{"http://" + host + "/path", false},
		{"%%", false},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			c, resp, err := websocket.Dial(ctx, s.wsURL(), &websocket.DialOptions{HTTPHeader: h})
			if tt.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				c.CloseNow()
				return
			}
			if err == nil {
				c.CloseNow()
				t.Fatal("dial succeeded, want 403")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial: %v, response %v; want 403", err, resp)
			}
		})
	}
}

func TestPublishAfterClose(t *testing.T) {
	hub := live.NewHub(nil)
	if err := hub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := hub.Publish(context.Background(), "c", 1)
	if !errors.Is(err, live.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := hub.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	s := newTestServer(t, nil)
	stream := openSSE(t, s.srv.URL+"/live/c", nil)
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "c")

	if err := s.hub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := stream.next(t); !ok {
			break
		}
	}
	for {
		if _, ok := ws.next(t); !ok {
			break
		}
	}
	if got := closeStatus(ws.closeErr()); got != websocket.StatusGoingAway {
		t.Errorf("WebSocket closed with %v, want %v", got, websocket.StatusGoingAway)
	}
	if st := s.hub.Stats(); st.Connections != 0 || st.Subscriptions != 0 {
		t.Errorf("after Close: %+v", st)
	}

	resp, err := http.Get(s.srv.URL + "/live/c")
	if err != nil {
		t.Fatal(err)
	}
	checkErrorResponse(t, resp, http.StatusServiceUnavailable, "closed")
}

func TestPublishRejectsBadValues(t *testing.T) {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		channel string
		v       any
	}{
		{"bad channel", "a/b", 1},
		{"empty channel", "", 1},
		{"unencodable", "c", func() {}},
		{"invalid raw json", "c", json.RawMessage(`{`)},
		{"invalid utf-8 in raw json", "c", json.RawMessage("\"\xff\"")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := hub.Publish(ctx, tt.channel, tt.v); err == nil {
				t.Error("Publish succeeded")
			}
		})
	}
	pos, err := hub.Publish(ctx, "c", json.RawMessage("{\n \"pretty\": true\n}"))
	if err != nil || pos.Seq != 1 {
		t.Errorf("Publish(raw) = %v, %v", pos, err)
	}
}

func TestHeadRequest(t *testing.T) {
	s := newTestServer(t, nil)
	resp, err := http.Head(s.srv.URL + "/live/c")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD: %s %v", resp.Status, resp.Header)
	}
}
