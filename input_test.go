package live_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// TestWebSocketBadInput sends frames a client should not send. Each gets
// its defined error frame, the connection stays usable, and a canary
// subscriber on the same hub misses nothing.
func TestWebSocketBadInput(t *testing.T) {
	s := newTestServer(t, &live.Options{MaxMessageBytes: 4096})
	canary := openSSE(t, s.srv.URL+"/live/canary", nil)
	c := dialWS(t, s.wsURL(), nil)
	long := strings.Repeat("c", live.MaxChannelLen+1)
	tests := []struct {
		name  string
		frame string
		code  string
	}{
		{"not json", `hello`, "bad_json"},
		{"truncated", `{"type":"subscribe"`, "bad_json"},
		{"array", `[1,2]`, "bad_frame"},
		{"string", `"subscribe"`, "bad_frame"},
		{"null", `null`, "unknown_type"},
		{"empty object", `{}`, "unknown_type"},
		{"unknown type", `{"type":"shout","channel":"c"}`, "unknown_type"},
		{"type wrong kind", `{"type":5}`, "bad_frame"},
		{"channel wrong kind", `{"type":"subscribe","channel":{"a":1}}`, "bad_frame"},
		{"cursor wrong kind", `{"type":"subscribe","channel":"c","cursor":12}`, "bad_frame"},
		{"missing channel", `{"type":"subscribe"}`, "bad_channel"},
		{"empty channel", `{"type":"subscribe","channel":""}`, "bad_channel"},
		{"slash in channel", `{"type":"subscribe","channel":"a/b"}`, "bad_channel"},
		{"space in channel", `{"type":"unsubscribe","channel":"a b"}`, "bad_channel"},
		{"unicode channel", `{"type":"subscribe","channel":"café"}`, "bad_channel"},
		{"long channel", `{"type":"subscribe","channel":"` + long + `"}`, "bad_channel"},
		{"publish refused", `{"type":"publish","channel":"c","data":1}`, "forbidden"},
		{"deep nesting", strings.Repeat(`[`, 2000) + strings.Repeat(`]`, 2000), "bad_frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.sendRaw(t, websocket.MessageText, []byte(tt.frame))
			f := c.expect(t, "error")
			if f.Code != tt.code || f.Message == "" {
				t.Errorf("error frame %+v, want code %q with a message", f, tt.code)
			}
			c.send(t, map[string]string{"type": "ping"})
			c.expect(t, "pong")
		})
	}
	t.Run("binary", func(t *testing.T) {
		c.sendRaw(t, websocket.MessageBinary, []byte(`{"type":"subscribe","channel":"c"}`))
		if f := c.expect(t, "error"); f.Code != "bad_frame" {
			t.Errorf("error frame %+v", f)
		}
	})

	pos := s.publish(t, "canary", "still here")
	if ev := canary.nextData(t); ev.ID != pos.String() {
		t.Errorf("canary got %+v", ev)
	}
}

func TestWebSocketBadPublishInput(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: allowAll})
	c := dialWS(t, s.wsURL(), nil)
	for _, tt := range []struct{ name, frame, code string }{
		{"no data", `{"type":"publish","channel":"c"}`, "bad_frame"},
		{"invalid utf-8", "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"\xff\"}", "bad_json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c.sendRaw(t, websocket.MessageText, []byte(tt.frame))
			if f := c.expect(t, "error"); f.Code != tt.code {
				t.Errorf("error frame %+v, want %q", f, tt.code)
			}
		})
	}
	c.send(t, map[string]any{"type": "publish", "channel": "c", "data": nil})
	c.expect(t, "published")
	if st := s.hub.Stats(); st.Published != 1 {
		t.Errorf("Published = %d, want 1", st.Published)
	}
}

func TestWebSocketOversizeFrame(t *testing.T) {
	s := newTestServer(t, &live.Options{MaxMessageBytes: 1024})
	canary := dialWS(t, s.wsURL(), nil)
	canary.subscribe(t, "c")
	c := dialWS(t, s.wsURL(), nil)
	c.sendRaw(t, websocket.MessageText, []byte(`{"type":"ping","ref":"`+strings.Repeat("x", 2000)+`"}`))
	if _, ok := c.next(t); ok {
		t.Fatal("connection survived an oversize frame")
	}
	if got := closeStatus(c.closeErr()); got != websocket.StatusMessageTooBig {
		t.Errorf("closed with %v, want %v", got, websocket.StatusMessageTooBig)
	}
	s.publish(t, "c", 1)
	canary.expect(t, "data")
}

func TestTooManySubscriptions(t *testing.T) {
	s := newTestServer(t, &live.Options{MaxSubscriptions: 3})
	c := dialWS(t, s.wsURL(), nil)
	for _, ch := range []string{"a", "b", "c"} {
		c.subscribe(t, ch)
	}
	c.subscribe(t, "a") // again: acknowledged, not counted twice
	c.send(t, map[string]string{"type": "subscribe", "channel": "d"})
	if f := c.expect(t, "error"); f.Code != "too_many_subscriptions" || f.Channel != "d" {
		t.Errorf("got %+v", f)
	}
	c.send(t, map[string]string{"type": "unsubscribe", "channel": "b"})
	c.expect(t, "unsubscribed")
	c.subscribe(t, "d")
	if st := s.hub.Stats(); st.Subscriptions != 3 {
		t.Errorf("Subscriptions = %d, want 3", st.Subscriptions)
	}
}

// TestAuthorizeSeesRequest checks the hook gets the request, the channel
// and the operation, so it can decide from cookies or headers.
func TestAuthorizeSeesRequest(t *testing.T) {
	authorize := func(r *http.Request, channel string, op live.Op) error {
		if r.Header.Get("X-User") == "alice" && (op == live.OpSubscribe || channel == "alice") {
			return nil
		}
		return live.ErrForbidden
	}
	s := newTestServer(t, &live.Options{Authorize: authorize})
	alice := dialWS(t, s.wsURL(), &websocket.DialOptions{HTTPHeader: http.Header{"X-User": {"alice"}}})
	alice.subscribe(t, "news")
	alice.send(t, map[string]any{"type": "publish", "channel": "alice", "data": 1})
	alice.expect(t, "published")
	alice.send(t, map[string]any{"type": "publish", "channel": "news", "data": 1})
	alice.expect(t, "error")

	bob := dialWS(t, s.wsURL(), nil)
	bob.send(t, map[string]string{"type": "subscribe", "channel": "news"})
	if f := bob.expect(t, "error"); f.Code != "forbidden" {
		t.Errorf("got %+v", f)
	}
	bob.send(t, map[string]string{"type": "ping"})
	bob.expect(t, "pong")
}

func TestConnectionsPerIP(t *testing.T) {
	s := newTestServer(t, &live.Options{MaxConnsPerIP: 2})
	openSSE(t, s.srv.URL+"/live/a", nil)
	dialWS(t, s.wsURL(), nil)
	resp, err := http.Get(s.srv.URL + "/live/a")
	if err != nil {
		t.Fatal(err)
	}
	checkErrorResponse(t, resp, http.StatusTooManyRequests, "too_many_connections")
	if _, resp, err := websocket.Dial(context.Background(), s.wsURL(), nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third WebSocket: %v", err)
	}
}

func TestPublishRate(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: allowAll, PublishRate: 5})
	c := dialWS(t, s.wsURL(), nil)
	published, limited := 0, 0
	for range 20 {
		c.send(t, map[string]any{"type": "publish", "channel": "c", "data": 1})
	}
	for range 20 {
		switch f, _ := c.next(t); f.Type {
		case "published":
			published++
		case "error":
			if f.Code != "rate_limited" {
				t.Fatalf("error %+v", f)
			}
			limited++
		}
	}
	// A burst of one second's worth passes, plus what refills meanwhile.
	if published < 5 || published > 10 || published+limited != 20 {
		t.Errorf("%d published, %d limited", published, limited)
	}
}

func TestQueryCredentials(t *testing.T) {
	s := newTestServer(t, nil)
	for _, path := range []string{"/live/c?access_token=x", "/live/c?TOKEN=x", "/ws?api_key=x"} {
		req, _ := http.NewRequest("GET", s.srv.URL+path, nil)
		if strings.HasPrefix(path, "/ws") {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		checkErrorResponse(t, resp, http.StatusBadRequest, "credentials_in_query")
	}
	openSSE(t, s.srv.URL+"/live/c?cursor=", nil) // other parameters are fine

	allowed := newTestServer(t, &live.Options{AllowQueryCredentials: true})
	openSSE(t, allowed.srv.URL+"/live/c?token=x", nil)
}

// TestCompressionBomb sends a small compressed frame that inflates past
// MaxMessageBytes: the hub refuses it without inflating it all.
func TestCompressionBomb(t *testing.T) {
	s := newTestServer(t, &live.Options{Compression: true, MaxMessageBytes: 64 << 10})
	canary := dialWS(t, s.wsURL(), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	canary.subscribe(t, "c")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	probe, resp, err := websocket.Dial(ctx, s.wsURL(), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	probe.CloseNow()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("compression not negotiated: %q", ext)
	}
	bomb := dialWS(t, s.wsURL(), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	bomb.sendRaw(t, websocket.MessageText, []byte(`{"type":"ping","ref":"`+strings.Repeat("a", 8<<20)+`"}`))
	if _, ok := bomb.next(t); ok {
		t.Fatal("the connection survived a decompression bomb")
	}
	if got := closeStatus(bomb.closeErr()); got != websocket.StatusMessageTooBig {
		t.Errorf("closed with %v, want %v", got, websocket.StatusMessageTooBig)
	}
	s.publish(t, "c", 1)
	canary.expect(t, "data")
}
