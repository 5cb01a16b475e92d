package live_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/go-live/live"
)

// expiringIdentify names the user of the "user" header, whose credential
// expires after the duration in the "ttl" header.
func expiringIdentify(r *http.Request) (live.Identity, error) {
	id := live.Identity{User: r.Header.Get("user")}
	if d, err := time.ParseDuration(r.Header.Get("ttl")); err == nil {
		id.Expires = time.Now().Add(d)
	}
	return id, nil
}

func expiring(user, ttl string) http.Header { return http.Header{"User": {user}, "Ttl": {ttl}} }

// answer requests url and returns the status and the error code of the
// JSON body.
func answer(t *testing.T, method, u string, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error
}

func TestCredentialsExpire(t *testing.T) {
	s := newTestServer(t, &live.Options{Identify: expiringIdentify})
	const ttl = "600ms"
	start := time.Now()
	ws := dialWS(t, s.wsURL(), &websocket.DialOptions{HTTPHeader: expiring("alice", ttl)})
	ws.subscribe(t, "red")
	one := openSSE(t, s.srv.URL+"/live/red", expiring("alice", ttl))
	mux := openSSE(t, s.srv.URL+"/api/live?channels=red", expiring("alice", ttl))
	mux.expectMux(t, "subscribed", "red")
	forever := dialWS(t, s.wsURL(), &websocket.DialOptions{HTTPHeader: expiring("bob", "")})
	forever.subscribe(t, "red")

	// First the refresh frame, about half way.
	if f := ws.expect(t, "refresh"); time.Since(start) > 600*time.Millisecond {
		t.Errorf("refresh %+v came after the expiry", f)
	}
	if f := mux.muxFrame(t); f.Type != "refresh" {
		t.Errorf("multiplexed stream: %+v; want refresh", f)
	}
	if ev := one.nextData(t); ev.Event != "refresh" || !strings.Contains(ev.Data, `"expires":`) {
		t.Errorf("one-channel stream: %+v; want a refresh event", ev)
	}

	// Then the ending, not before the expiry.
	if _, ok := ws.next(t); ok {
		t.Fatal("the WebSocket goes on")
	}
	if time.Since(start) < 550*time.Millisecond {
		t.Errorf("ended after %v, before the credential expired", time.Since(start))
	}
	if code := closeStatus(ws.closeErr()); code != 4003 {
		t.Errorf("WebSocket closed with %d; want 4003", code)
	}
	if ev := one.nextData(t); ev.Event != "refused" || !strings.Contains(ev.Data, `"code":"credentials_expired"`) {
		t.Errorf("one-channel stream: %+v; want a refused event", ev)
	}
	if f := mux.muxFrame(t); f.Type != "error" || f.Code != "credentials_expired" {
		t.Errorf("multiplexed stream: %+v; want an error frame", f)
	}
	const closing = `{"type":"close","closeCode":4003,"reason":"credentials expired"}`
	if ev, ok := mux.next(t); !ok || ev.Data != closing {
		t.Errorf("multiplexed stream: %+v (open %v); want %s", ev, ok, closing)
	}
	for _, st := range []*sseStream{one, mux} {
		if ev, ok := st.next(t); ok {
			t.Errorf("the stream goes on: %+v", ev)
		}
	}

	// A credential without expiry is untouched.
	s.publish(t, "red", 1)
	if f := forever.expect(t, "data"); string(f.Data) != "1" {
		t.Errorf("bob got %+v", f)
	}
	// A held poll is answered with the refresh frame.
	var first []wsFrame
	json.Unmarshal([]byte(pollRawHeader(t, s.srv.URL+"/api/live?channels=red&poll", expiring("alice", "1h"))), &first)
	if len(first) == 0 {
		t.Fatal("the first poll answered nothing")
	}
	got := pollRawHeader(t, s.srv.URL+"/api/live?channels=red&poll=10&cursor.red="+first[0].Cursor, expiring("alice", "300ms"))
	if !strings.Contains(got, `"type":"refresh"`) {
		t.Errorf("long-poll answered %s; want the refresh frame", got)
	}
	// A credential expired already is refused.
	if status, code := answer(t, "GET", s.srv.URL+"/live/red", expiring("alice", "-1s")); status != 401 || code != "credentials_expired" {
		t.Errorf("expired credential: %d %q; want 401 credentials_expired", status, code)
	}
}

func pollRawHeader(t *testing.T, u string, header http.Header) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header = header
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// sharedStore is an IdempotencyStore two hubs share, as the broker
// modules' stores are shared by nodes.
type sharedStore struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (s *sharedStore) Claim(_ context.Context, key string, _ time.Duration) (bool, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys[key] {
		return false, nil, nil
	}
	s.keys[key] = true
	return true, nil, nil
}
func (s *sharedStore) Save(context.Context, string, []byte, time.Duration) error { return nil }
func (s *sharedStore) Release(context.Context, string) error                     { return nil }

func TestTickets(t *testing.T) {
	key := []byte("a key the nodes share, 32 bytes!")
	store := &sharedStore{keys: map[string]bool{}}
	var mu sync.Mutex
	var seen []live.Identity
	opts := func() *live.Options {
		return &live.Options{
			TicketKey:   key,
			TicketStore: store,
			// Identify refuses everyone: only tickets admit.
			Identify: func(*http.Request) (live.Identity, error) { return live.Identity{}, live.Deny("sign in") },
			Authorize: func(r *http.Request, channel string, op live.Op) error {
				mu.Lock()
				seen = append(seen, live.IdentityOf(r))
				mu.Unlock()
				return nil
			},
		}
	}
	a := newTestServer(t, opts())
	b := newTestServer(t, opts())
	other := newTestServer(t, &live.Options{TicketKey: []byte("another key, not the nodes' one!")})
	alice := live.Identity{User: "alice", Info: map[string]string{"name": "Alice"}}
	mint := func(ttl time.Duration, channels ...string) string {
		t.Helper()
		tk, err := a.hub.Ticket(alice, channels, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return url.QueryEscape(tk)
	}

	// A valid ticket admits its channels, as alice.
	tk := mint(0, "red", "blue")
	one := openSSE(t, a.srv.URL+"/live/red?ticket="+tk, nil)
	a.publish(t, "red", 1)
	if ev := one.nextData(t); ev.Data != "1" {
		t.Errorf("ticketed stream got %+v", ev)
	}
	mu.Lock()
	if last := seen[len(seen)-1]; last.User != "alice" {
		t.Errorf("Authorize saw %+v; want alice", last)
	}
	mu.Unlock()
	// Used: refused here and on another node.
	for _, srv := range []*testServer{a, b} {
		if status, code := answer(t, "GET", srv.srv.URL+"/live/red?ticket="+tk, nil); status != 401 || code != "ticket_used" {
			t.Errorf("reused ticket: %d %q; want 401 ticket_used", status, code)
		}
	}
	// Minted on a, used first on b: admitted there, then refused on a.
	tk = mint(0, "red")
	mux := openSSE(t, b.srv.URL+"/api/live?channels=red&ticket="+tk, nil)
	mux.expectMux(t, "subscribed", "red")
	if status, code := answer(t, "GET", a.srv.URL+"/api/live?channels=red&ticket="+tk, nil); status != 401 || code != "ticket_used" {
		t.Errorf("ticket used on b, then on a: %d %q; want 401 ticket_used", status, code)
	}
	// Another channel than the ticket's: refused, and the ticket spent.
	tk = mint(0, "red")
	if status, code := answer(t, "GET", a.srv.URL+"/live/blue?ticket="+tk, nil); status != 403 || code != "forbidden" {
		t.Errorf("wrong channel: %d %q; want 403 forbidden", status, code)
	}
	// Over WebSocket: the ticket's channels only, no publishing.
	ws := dialWS(t, "ws"+strings.TrimPrefix(a.srv.URL, "http")+"/ws?ticket="+mint(0, "red"), nil)
	ws.subscribe(t, "red")
	ws.send(t, map[string]string{"type": "subscribe", "channel": "blue"})
	if f := ws.expect(t, "error"); f.Code != "forbidden" || f.Channel != "blue" {
		t.Errorf("WebSocket subscribing to another channel: %+v", f)
	}
	// Expired.
	tk = mint(time.Millisecond, "red")
	time.Sleep(5 * time.Millisecond) // the ticket's life, not a delivery
	if status, code := answer(t, "GET", a.srv.URL+"/live/red?ticket="+tk, nil); status != 401 || code != "ticket_expired" {
		t.Errorf("expired ticket: %d %q; want 401 ticket_expired", status, code)
	}
	// Signed with another key, or tampered with.
	tk = mint(0, "red")
	if status, code := answer(t, "GET", other.srv.URL+"/live/red?ticket="+tk, nil); status != 401 || code != "bad_ticket" {
		t.Errorf("ticket of another key: %d %q; want 401 bad_ticket", status, code)
	}
	raw, _ := url.QueryUnescape(tk)
	forged := "e30" + raw[strings.IndexByte(raw, '.'):]
	if status, code := answer(t, "GET", a.srv.URL+"/live/red?ticket="+url.QueryEscape(forged), nil); status != 401 || code != "bad_ticket" {
		t.Errorf("forged ticket: %d %q; want 401 bad_ticket", status, code)
	}
	// Without a ticket Identify decides; other query credentials stay refused.
	if status, _ := answer(t, "GET", a.srv.URL+"/live/red", nil); status != 401 {
		t.Errorf("no ticket: %d; want 401", status)
	}
	for _, p := range []string{"token", "access_token", "jwt"} {
		if status, code := answer(t, "GET", a.srv.URL+"/live/red?"+p+"=x", nil); status != 400 || code != "credentials_in_query" {
			t.Errorf("?%s=: %d %q; want 400 credentials_in_query", p, status, code)
		}
	}
	// Publishing with a ticket is refused.
	if status, _ := answer(t, "POST", a.srv.URL+"/api/live/red?ticket="+mint(0, "red"), nil); status != 403 {
		t.Errorf("publish with a ticket: %d; want 403", status)
	}
	// On a hub without Identify or Authorize too.
	plain := newTestServer(t, &live.Options{TicketKey: key})
	tk, err := plain.hub.Ticket(alice, []string{"red"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ws = dialWS(t, "ws"+strings.TrimPrefix(plain.srv.URL, "http")+"/ws?ticket="+url.QueryEscape(tk), nil)
	ws.subscribe(t, "red")
	ws.send(t, map[string]string{"type": "subscribe", "channel": "blue"})
	if f := ws.expect(t, "error"); f.Code != "forbidden" || f.Channel != "blue" {
		t.Errorf("WebSocket of a plain hub subscribing to another channel: %+v", f)
	}
	// A ticket's identity keeps its expiry.
	short := alice
	short.Expires = time.Now().Add(400 * time.Millisecond)
	tk, err = a.hub.Ticket(short, []string{"red"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ws = dialWS(t, "ws"+strings.TrimPrefix(a.srv.URL, "http")+"/ws?ticket="+url.QueryEscape(tk), nil)
	ws.subscribe(t, "red")
	ws.expect(t, "refresh")
	if _, ok := ws.next(t); ok || closeStatus(ws.closeErr()) != 4003 {
		t.Errorf("the ticketed WebSocket ended with %v; want 4003", ws.closeErr())
	}
	// Minting checks its arguments.
	if _, err := a.hub.Ticket(alice, nil, 0); err == nil {
		t.Error("a ticket without channels was minted")
	}
	if _, err := a.hub.Ticket(alice, []string{"red"}, time.Hour); err == nil {
		t.Error("a ticket for an hour was minted")
	}
}
