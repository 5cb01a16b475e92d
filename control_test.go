package live_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// teams is an app's notion of who may read which channel: a user may read
// the channels of the teams they belong to, and "public". Users are named
// by a "user" cookie.
type teams struct {
	mu      sync.Mutex                 // guards members and banned
	members map[string]map[string]bool // channel → users
	banned  map[string]bool
}

func newTeams() *teams {
	return &teams{members: map[string]map[string]bool{
		"red":  {"alice": true, "bob": true},
		"blue": {"alice": true},
	}, banned: map[string]bool{}}
}

func (tm *teams) identify(r *http.Request) (live.Identity, error) {
	c, err := r.Cookie("user")
	if err != nil {
		return live.Identity{}, errors.New("no user cookie")
	}
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.banned[c.Value] {
		return live.Identity{}, live.Deny("banned")
	}
	return live.Identity{User: c.Value, Info: map[string]string{"name": strings.ToUpper(c.Value[:1]) + c.Value[1:]}}, nil
}

func (tm *teams) authorize(r *http.Request, channel string, op live.Op) error {
	user := live.IdentityOf(r).User
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if op == live.OpPublish || tm.banned[user] || channel != "public" && !tm.members[channel][user] {
		return fmt.Errorf("%q may not %s %q", user, op, channel)
	}
	return nil
}

func (tm *teams) remove(channel, user string) {
	tm.mu.Lock()
	delete(tm.members[channel], user)
	tm.mu.Unlock()
}

func (tm *teams) ban(user string) {
	tm.mu.Lock()
	tm.banned[user] = true
	tm.mu.Unlock()
}

// newTeamServer is a test server whose hub identifies users by cookie and
// authorizes by team.
func newTeamServer(t *testing.T, tm *teams, broker live.Broker) *testServer {
	return newTestServer(t, &live.Options{Broker: broker, Identify: tm.identify, Authorize: tm.authorize})
}

func as(user string) http.Header { return http.Header{"Cookie": {"user=" + user}} }

func dialAs(t *testing.T, s *testServer, user string, channels ...string) *wsClient {
	t.Helper()
	c := dialWS(t, s.wsURL(), &websocket.DialOptions{HTTPHeader: as(user)})
	for _, ch := range channels {
		c.subscribe(t, ch)
	}
	return c
}

func TestIdentify(t *testing.T) {
	tm := newTeams()
	var seen []live.Identity
	var mu sync.Mutex
	s := newTestServer(t, &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			if r.URL.Query().Get("big") != "" {
				return live.Identity{User: "alice", Info: strings.Repeat("x", 1100)}, nil
			}
			return tm.identify(r)
		},
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			mu.Lock()
			seen = append(seen, live.IdentityOf(r))
			mu.Unlock()
			return tm.authorize(r, channel, op)
		},
	})
	tm.ban("mallory")

	for _, tc := range []struct {
		name, path string
		header     http.Header
		status     int
		code, msg  string
	}{
		{"no cookie", "/live/red", nil, 401, "unauthenticated", "sign in first"},
		{"denied", "/live/red", as("mallory"), 401, "unauthenticated", "banned"},
		{"not a member", "/live/blue", as("bob"), 403, "forbidden", "not allowed to subscribe to this channel"},
		{"info too large", "/live/red?big=1", as("alice"), 500, "identity_too_large", "the server's public record of you is too large"},
		{"multiplexed, no cookie", "/api/live?channels=red", nil, 401, "unauthenticated", "sign in first"},
		{"websocket, no cookie", "/ws", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, 401, "unauthenticated", "sign in first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.srv.URL+tc.path, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]string
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tc.status || body["error"] != tc.code || body["message"] != tc.msg {
				t.Fatalf("got %d %v; want %d %s %q", resp.StatusCode, body, tc.status, tc.code, tc.msg)
			}
		})
	}

	st := openSSE(t, s.srv.URL+"/live/red", as("alice"))
	s.publish(t, "red", 1)
	if ev := st.nextData(t); ev.Data != "1" {
		t.Fatalf("alice's stream: %+v", ev)
	}
	mu.Lock()
	last := seen[len(seen)-1]
	mu.Unlock()
	if info, _ := json.Marshal(last.Info); last.User != "alice" || string(info) != `{"name":"Alice"}` {
		t.Fatalf("Authorize saw %+v (info %s)", last, info)
	}
}

func TestDisconnect(t *testing.T) {
	tm := newTeams()
	s := newTeamServer(t, tm, nil)
	alice := dialAs(t, s, "alice", "red", "public")
	aliceSSE := openSSE(t, s.srv.URL+"/live/red", as("alice"))
	aliceMux := openSSE(t, s.srv.URL+"/api/live?channels=red,blue", as("alice"))
	aliceMux.expectMux(t, "subscribed", "red")
	aliceMux.expectMux(t, "subscribed", "blue")
	bob := dialAs(t, s, "bob", "red")
	// A long-poll of alice's, held: resumed from its cursor, it has
	// nothing to say until the server ends it.
	base := s.hub.Stats().Subscriptions
	cursor := pollAs(t, s, "alice", url.Values{"channels": {"red"}, "poll": {""}})[0].Cursor
	for deadline := time.Now().Add(waitFor); s.hub.Stats().Subscriptions != base; { // until that poll is gone
		if time.Now().After(deadline) {
			t.Fatal("the first poll's subscription stayed")
		}
		runtime.Gosched()
	}
	polled := make(chan []byte, 1)
	go func() {
		polled <- pollRaw(s, "alice", url.Values{"channels": {"red"}, "cursor.red": {cursor}, "poll": {"10"}})
	}()
	// Until the poll is in: admitted and subscribed, which counts it
	// among the subscriptions (its connection is counted before it is
	// authorized).
	for deadline := time.Now().Add(waitFor); s.hub.Stats().Subscriptions != base+1; {
		if time.Now().After(deadline) {
			t.Fatal("the long-poll never connected")
		}
		runtime.Gosched()
	}

	tm.ban("alice")
	if err := s.hub.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "red", 1)

	if _, ok := alice.next(t); ok {
		t.Fatal("alice's WebSocket still open")
	}
	if code := closeStatus(alice.closeErr()); code != 4001 {
		t.Errorf("alice's WebSocket closed with %d; want 4001", code)
	}
	if ev := aliceSSE.nextData(t); ev.Event != "refused" || !strings.Contains(ev.Data, `"code":"disconnected"`) {
		t.Errorf("alice's SSE stream: %+v; want a refused event", ev)
	}
	if f := aliceMux.muxFrame(t); f.Type != "error" || f.Code != "disconnected" {
		t.Errorf("alice's multiplexed stream: %+v; want an error frame", f)
	}
	// Then what the WebSocket's close frame says: the code and the reason.
	const closing = `{"type":"close","closeCode":4001,"reason":"disconnected by the server"}`
	if ev, ok := aliceMux.next(t); !ok || ev.Data != closing {
		t.Errorf("alice's multiplexed stream: %+v (open %v); want %s", ev, ok, closing)
	}
	if got, want := string(<-polled), `[{"type":"error","code":"disconnected","message":"disconnected by the server"},`+closing+`]`; got != want {
		t.Errorf("alice's long-poll answered %s; want %s", got, want)
	}
	for _, st := range []*sseStream{aliceSSE, aliceMux} {
		if ev, ok := st.next(t); ok {
			t.Errorf("alice's stream goes on: %+v", ev)
		}
	}
	if f := bob.expect(t, "data"); string(f.Data) != "1" {
		t.Errorf("bob got %+v", f)
	}
	// Alice comes back: banned, she is refused.
	if code := httpCodeWith(t, "GET", s.srv.URL+"/live/red", as("alice")); code != "401" {
		t.Errorf("alice back: %s; want 401", code)
	}
	if err := s.hub.Disconnect(context.Background(), ""); err == nil {
		t.Error("Disconnect of no user succeeded")
	}
}

func TestReauthorize(t *testing.T) {
	tm := newTeams()
	s := newTeamServer(t, tm, nil)
	alice := dialAs(t, s, "alice", "red", "blue")
	aliceSSE := openSSE(t, s.srv.URL+"/live/red", as("alice"))
	aliceBlue := openSSE(t, s.srv.URL+"/live/blue", as("alice"))
	aliceMux := openSSE(t, s.srv.URL+"/api/live?channels=red,blue", as("alice"))
	aliceMux.expectMux(t, "subscribed", "red")
	aliceMux.expectMux(t, "subscribed", "blue")
	bob := dialAs(t, s, "bob", "red")

	tm.remove("red", "alice")
	if err := s.hub.Reauthorize(context.Background(), "red", ""); err != nil {
		t.Fatal(err)
	}
	red := s.publish(t, "red", "r")
	s.publish(t, "blue", "b")

	if f := alice.expect(t, "error"); f.Channel != "red" || f.Code != "forbidden" {
		t.Errorf("alice's WebSocket: %+v; want forbidden on red", f)
	}
	if f := alice.expect(t, "data"); f.Channel != "blue" {
		t.Errorf("alice's WebSocket got %+v; want only blue", f)
	}
	if ev := aliceSSE.nextData(t); ev.Event != "refused" || !strings.Contains(ev.Data, `"channel":"red"`) {
		t.Errorf("alice's red stream: %+v; want a refused event", ev)
	}
	if ev, ok := aliceSSE.next(t); ok {
		t.Errorf("alice's red stream goes on: %+v", ev)
	}
	if ev := aliceBlue.nextData(t); ev.Data != `"b"` {
		t.Errorf("alice's blue stream: %+v", ev)
	}
	if f := aliceMux.muxFrame(t); f.Type != "error" || f.Channel != "red" {
		t.Errorf("alice's multiplexed stream: %+v; want an error on red", f)
	}
	if f := aliceMux.muxFrame(t); f.Type != "data" || f.Channel != "blue" {
		t.Errorf("alice's multiplexed stream: %+v; want blue only", f)
	}
	if f := bob.expect(t, "data"); string(f.Data) != `"r"` {
		t.Errorf("bob got %+v", f)
	}
	// Resubscribing, or resuming with a cursor, is refused too.
	alice.send(t, map[string]string{"type": "subscribe", "channel": "red", "cursor": "0." + red.Epoch})
	if f := alice.expect(t, "error"); f.Channel != "red" || f.Code != "forbidden" {
		t.Errorf("alice resubscribing: %+v", f)
	}
}

// TestControlAcrossNodes runs two hubs on one broker: what one decides,
// the other does to its own connections.
func TestControlAcrossNodes(t *testing.T) {
	tm := newTeams()
	broker := newMemoryBroker(t, 1024)
	a := newTeamServer(t, tm, broker)
	b := newTeamServer(t, tm, broker)
	aliceOnB := dialAs(t, b, "alice", "red", "blue")
	bobOnB := dialAs(t, b, "bob", "red")

	tm.remove("red", "alice")
	if err := a.hub.Reauthorize(context.Background(), "", "alice"); err != nil {
		t.Fatal(err)
	}
	if f := aliceOnB.expect(t, "error"); f.Channel != "red" {
		t.Fatalf("alice on B: %+v; want her red subscription ended", f)
	}
	a.publish(t, "blue", 1)
	if f := aliceOnB.expect(t, "data"); f.Channel != "blue" {
		t.Fatalf("alice on B: %+v", f)
	}

	if err := a.hub.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok := aliceOnB.next(t); ok || closeStatus(aliceOnB.closeErr()) != 4001 {
		t.Fatalf("alice on B still open, or closed with %v", aliceOnB.closeErr())
	}
	a.publish(t, "red", 2)
	if f := bobOnB.expect(t, "data"); string(f.Data) != "2" {
		t.Fatalf("bob on B: %+v", f)
	}
}

// TestControlHoleRevokes loses a control message on its way to a hub
// that cannot read it back from history: that hub checks every
// subscription again, since the lost message may have revoked any.
func TestControlHoleRevokes(t *testing.T) {
	tm := newTeams()
	broker := newFaultBroker(t, -1) // no history to fill holes from
	a := newTeamServer(t, tm, broker)
	b := newTeamServer(t, tm, broker)
	aliceOnB := dialAs(t, b, "alice", "red")
	bobOnB := dialAs(t, b, "bob", "red")

	tm.remove("red", "alice")
	broker.setDrop(true)
	// Nobody, A included, reads the message back: A cannot vouch for B.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.hub.Reauthorize(ctx, "red", "alice"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reauthorize while the broker drops its message = %v; want the deadline", err)
	}
	broker.setDrop(false)
	if err := a.hub.Reauthorize(context.Background(), "nothing", "nobody"); err != nil { // B sees the hole
		t.Fatal(err)
	}
	if f := aliceOnB.expect(t, "error"); f.Channel != "red" {
		t.Fatalf("alice on B: %+v; want her red subscription ended", f)
	}
	a.publish(t, "red", 1)
	if f := bobOnB.expect(t, "data"); string(f.Data) != "1" {
		t.Fatalf("bob on B: %+v", f)
	}
}

func TestReservedChannels(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: func(*http.Request, string, live.Op) error { return nil }})
	c := dialWS(t, s.wsURL(), nil)
	for _, typ := range []string{"subscribe", "publish"} {
		c.send(t, map[string]any{"type": typ, "channel": "@live:control", "data": 1})
		if f := c.expect(t, "error"); f.Code != "reserved" {
			t.Errorf("%s: %+v", typ, f)
		}
	}
	for _, path := range []string{"/live/@live:control", "/api/live?channels=a,@live:control"} {
		if code := httpCode(t, "GET", s.srv.URL+path, ""); code != "403" {
			t.Errorf("GET %s: %s", path, code)
		}
	}
	if code := httpCode(t, "POST", s.srv.URL+"/live/@live:control", `{"op":"disconnect","user":"bob"}`); code != "403" {
		t.Errorf("POST: %s", code)
	}
	if _, err := s.hub.Publish(context.Background(), "@live:control", 1); err == nil {
		t.Error("Publish on a reserved channel succeeded")
	}
}

func httpCodeWith(t *testing.T, method, url string, header http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	return doCode(t, req)
}

// TestControlOverHTTP2 ends streams that net/http keeps (HTTP/2), which
// their handlers write.
func TestControlOverHTTP2(t *testing.T) {
	tm := newTeams()
	hub := live.NewHub(&live.Options{Identify: tm.identify, Authorize: tm.authorize})
	srv := httptest.NewUnstartedServer(hub)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	open := func(path string) *bufio.Reader {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		req.Header.Set("Cookie", "user=alice")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s %s; want HTTP/2 200", resp.Proto, resp.Status)
		}
		return bufio.NewReader(resp.Body)
	}
	red, blue := open("/red"), open("/blue")
	tm.remove("red", "alice")
	if err := hub.Reauthorize(context.Background(), "red", ""); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(red) // the stream ends
	if !strings.Contains(string(rest), "event: refused\n") {
		t.Fatalf("red stream ended with %q; want a refused event", rest)
	}
	if err := hub.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	rest, _ = io.ReadAll(blue)
	if !strings.Contains(string(rest), `"code":"disconnected"`) {
		t.Fatalf("blue stream ended with %q; want the disconnection", rest)
	}
}

// pollAs sends one long-poll as user and returns its frames.
func pollAs(t *testing.T, s *testServer, user string, q url.Values) []wsFrame {
	t.Helper()
	var frames []wsFrame
	if b := pollRaw(s, user, q); json.Unmarshal(b, &frames) != nil || len(frames) == 0 {
		t.Fatalf("poll as %s: %s", user, b)
	}
	return frames
}

// pollRaw sends one long-poll as user and returns its answer's body.
func pollRaw(s *testServer, user string, q url.Values) []byte {
	req, _ := http.NewRequest("GET", s.srv.URL+"/api/live?"+q.Encode(), nil)
	req.Header = as(user)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return bytes.TrimSpace(b)
}
