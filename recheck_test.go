package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/sse"
)

// slowRights are alice's rights as a slow store keeps them: Identify and
// Authorize read them, then wait at the gate when it is armed for them,
// the way a database lookup returns what it read a while ago.
type slowRights struct {
	mu      sync.Mutex // guards allowed, banned and gate
	allowed map[string]bool
	banned  bool
	gate    *gate
}

// A gate holds one call of Identify ("identify") or of Authorize (at the
// channel it names) until the test releases it.
type gate struct {
	at      string
	entered chan struct{} // closed once the call read the rights and waits
	release chan struct{} // closed by the test
}

func (rt *slowRights) arm(at string) *gate {
	g := &gate{at: at, entered: make(chan struct{}), release: make(chan struct{})}
	rt.mu.Lock()
	rt.gate = g
	rt.mu.Unlock()
	return g
}

func (rt *slowRights) wait(at string) {
	rt.mu.Lock()
	g := rt.gate
	if g == nil || g.at != at {
		rt.mu.Unlock()
		return
	}
	rt.gate = nil
	rt.mu.Unlock()
	close(g.entered)
	<-g.release
}

func (rt *slowRights) identify(r *http.Request) (live.Identity, error) {
	if c, err := r.Cookie("user"); err != nil || c.Value != "alice" {
		return live.Identity{}, errors.New("not alice")
	}
	rt.mu.Lock()
	banned := rt.banned
	rt.mu.Unlock()
	rt.wait("identify")
	if banned {
		return live.Identity{}, live.Deny("banned")
	}
	return live.Identity{User: "alice"}, nil
}

// authorize lets alice read the flush channels, and the others she is
// allowed; it does not look at bans, which Identify enforces.
func (rt *slowRights) authorize(r *http.Request, channel string, op live.Op) error {
	if op != live.OpSubscribe || live.IdentityOf(r).User != "alice" {
		return errors.New("no")
	}
	if strings.HasPrefix(channel, "flush") {
		return nil
	}
	rt.mu.Lock()
	ok := rt.allowed[channel]
	rt.mu.Unlock()
	rt.wait(channel)
	if !ok {
		return fmt.Errorf("alice may not read %s", channel)
	}
	return nil
}

// A raceClient is alice connecting to ch (and, where the connection stays
// open, to flush, subscribed before ch); a long-poll resumes both from
// their cursors, as it does once it has polled. It returns "" once the hub
// refused her in its usual way (refused tells the error frame that does)
// and nothing published on ch reached her, which the data published on
// flush after it proves for connections that stay open; otherwise what
// went wrong.
type raceClient func(ctx context.Context, s *testServer, r race) string

// race is one round's channels and cursors, and what refuses alice.
type race struct {
	ch, flush             string
	chCursor, flushCursor string
	refused               func(f wsFrame) bool
	identify              bool // Identify is held: the connection itself is refused
}

// TestRevocationDuringAdmission races Reauthorize and Disconnect against
// an Authorize or an Identify that read alice's rights before they were
// revoked, on every transport: once the call returned, nothing published
// reaches her, and she is refused as she would be had she connected first.
func TestRevocationDuringAdmission(t *testing.T) {
	transports := []struct {
		name   string
		client raceClient
	}{
		{"websocket", raceWS},
		{"sse", raceSSE},
		{"sse multiplexed", raceMux},
		{"long-poll", racePoll},
	}
	cases := []struct {
		name string
		at   string // "identify" or "authorize"
		op   string // "reauthorize" or "disconnect"
	}{
		{"Authorize racing Reauthorize", "authorize", "reauthorize"},
		{"Authorize racing Disconnect", "authorize", "disconnect"},
		{"Identify racing Disconnect", "identify", "disconnect"},
	}
	const rounds = 200
	for _, tr := range transports {
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				rt := &slowRights{allowed: map[string]bool{}}
				s := newTestServer(t, &live.Options{
					Identify:      rt.identify,
					Authorize:     rt.authorize,
					MaxConnsPerIP: -1,
					Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
				})
				for i := range rounds {
					ch, flush := fmt.Sprintf("secret-%d", i), fmt.Sprintf("flush-%d", i)
					rc := race{ch: ch, flush: flush, identify: tc.at == "identify",
						chCursor:    s.publish(t, ch, "before").String(),
						flushCursor: s.publish(t, flush, "before").String(),
						refused: func(f wsFrame) bool {
							if tc.op == "disconnect" {
								return f.Type == "error" && f.Code == "disconnected"
							}
							return f.Type == "error" && f.Channel == ch && f.Code == "forbidden"
						},
					}
					rt.mu.Lock()
					rt.allowed[ch], rt.banned = true, false
					rt.mu.Unlock()
					at := "identify"
					if tc.at == "authorize" {
						at = ch
					}
					g := rt.arm(at)
					ctx, cancel := context.WithTimeout(context.Background(), waitFor)
					verdict := make(chan string, 1)
					go func() { verdict <- tr.client(ctx, s, rc) }()
					select {
					case <-g.entered:
					case v := <-verdict:
						cancel()
						t.Fatalf("round %d: the client finished before %s ran: %q", i, tc.at, v)
					}

					// Revoke, then run the call; the held Identify or
					// Authorize returns after it, or while it runs.
					rt.mu.Lock()
					if tc.op == "disconnect" {
						rt.banned = true
					} else {
						rt.allowed[ch] = false
					}
					rt.mu.Unlock()
					if i%2 == 1 {
						close(g.release)
					}
					var err error
					if tc.op == "reauthorize" {
						err = s.hub.Reauthorize(context.Background(), ch, "alice")
					} else {
						err = s.hub.Disconnect(context.Background(), "alice")
					}
					if err != nil {
						t.Fatal(err)
					}
					if i%2 == 0 {
						close(g.release)
					}
					s.publish(t, ch, "after")
					s.publish(t, flush, "flush")
					v := <-verdict
					cancel()
					if v != "" {
						t.Fatalf("round %d (%s after the call): %s", i, map[bool]string{true: "released", false: "released during"}[i%2 == 0], v)
					}
				}
			})
		}
	}
}

// readFrames reads frames from next until alice is refused and flush's
// data arrived, or the connection ends (a refusal when endRefused says so).
func readFrames(next func() (wsFrame, error), r race, endRefused func(error) bool) string {
	refused, flushed := false, false
	for !refused || !flushed {
		f, err := next()
		if err != nil {
			if refused || endRefused(err) {
				return ""
			}
			return fmt.Sprintf("ended without a refusal: %v", err)
		}
		switch {
		case f.Type == "data" && f.Channel == r.ch:
			return fmt.Sprintf("got %s on %s", f.Data, r.ch)
		case f.Type == "data" && f.Channel == r.flush:
			flushed = true
		case r.refused(f):
			refused = true
		}
	}
	return ""
}

func raceWS(ctx context.Context, s *testServer, r race) string {
	ch, flush := r.ch, r.flush
	c, resp, err := websocket.Dial(ctx, s.wsURL(), &websocket.DialOptions{HTTPHeader: as("alice")})
	if err != nil {
		// Identify held the handshake: refused with 401, or cut by the
		// Disconnect that came while it was completing.
		if resp != nil && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusSwitchingProtocols {
			return fmt.Sprintf("handshake answered %d", resp.StatusCode)
		}
		return ""
	}
	defer c.CloseNow()
	stop := context.AfterFunc(ctx, func() { c.CloseNow() })
	defer stop()
	send := func(v any) error {
		b, _ := json.Marshal(v)
		return c.Write(ctx, websocket.MessageText, b)
	}
	next := func() (wsFrame, error) {
		_, b, err := c.Read(ctx)
		var f wsFrame
		if err == nil {
			err = json.Unmarshal(b, &f)
		}
		return f, err
	}
	closed := func(err error) bool { return websocket.CloseStatus(err) == 4001 }
	if r.identify {
		// Admitted while Disconnect ran: it must close at once. (The
		// client sends nothing: closing a socket with unread bytes resets
		// it, which may drop the close frame before the client reads it.)
		if _, _, err := c.Read(ctx); !closed(err) {
			return fmt.Sprintf("admitted during Disconnect, then %v; want close status 4001", err)
		}
		return ""
	}
	if send(map[string]string{"type": "subscribe", "channel": flush}) != nil {
		return readFrames(next, r, closed)
	}
	for {
		f, err := next()
		if err != nil {
			if closed(err) {
				return ""
			}
			return fmt.Sprintf("subscribing to %s: %v", flush, err)
		}
		if f.Type == "subscribed" && f.Channel == flush {
			break
		}
	}
	if send(map[string]string{"type": "subscribe", "channel": ch}) != nil {
		return readFrames(next, r, closed)
	}
	return readFrames(next, r, closed)
}

// get requests url as alice; a 401 or 403 is the hub's refusal.
func get(ctx context.Context, url string) (resp *http.Response, refused bool, verdict string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Cookie", "user=alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false, err.Error()
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp, false, ""
	case http.StatusUnauthorized, http.StatusForbidden:
		resp.Body.Close()
		return nil, true, ""
	}
	resp.Body.Close()
	return nil, false, fmt.Sprintf("answered %s", resp.Status)
}

// events returns the next event of an SSE body on each call.
func events(body io.Reader) func() (event, data string, err error) {
	r := sse.NewReader(body)
	return func() (event, data string, err error) {
		for {
			ev, err := r.Next()
			if err != nil {
				return "", "", err
			}
			if ev.Event != "" || ev.Data != "" {
				return ev.Event, ev.Data, nil
			}
		}
	}
}

func raceSSE(ctx context.Context, s *testServer, r race) string {
	ch := r.ch
	resp, refused, verdict := get(ctx, s.srv.URL+"/live/"+ch)
	if resp == nil {
		return verdict
	}
	defer resp.Body.Close()
	next := events(resp.Body)
	for {
		event, data, err := next()
		switch {
		case err != nil && refused:
			return "" // the stream ended after its refused event
		case err != nil:
			return fmt.Sprintf("ended without a refused event: %v", err)
		case event == "refused":
			var f wsFrame
			json.Unmarshal([]byte(data), &f)
			f.Type = "error"
			if !r.refused(f) {
				return "refused as " + data
			}
			refused = true
		case data != "":
			return fmt.Sprintf("got %s on %s", data, ch)
		}
	}
}

func raceMux(ctx context.Context, s *testServer, r race) string {
	resp, _, verdict := get(ctx, s.srv.URL+"/api/live?channels="+r.flush+","+r.ch)
	if resp == nil {
		return verdict
	}
	defer resp.Body.Close()
	next := events(resp.Body)
	return readFrames(func() (wsFrame, error) {
		_, data, err := next()
		var f wsFrame
		if err == nil {
			err = json.Unmarshal([]byte(data), &f)
		}
		return f, err
	}, r, func(error) bool { return false })
}

func racePoll(ctx context.Context, s *testServer, r race) string {
	// Resumed from its cursors, the poll has nothing to say before the
	// refusal: its answer must be that.
	cursors := url.Values{"cursor." + r.ch: {r.chCursor}, "cursor." + r.flush: {r.flushCursor}}
	resp, refused, verdict := get(ctx, s.srv.URL+"/api/live?channels="+r.flush+","+r.ch+"&poll=5&"+cursors.Encode())
	if resp == nil {
		if refused {
			return ""
		}
		return verdict
	}
	var frames []wsFrame
	err := json.NewDecoder(resp.Body).Decode(&frames)
	resp.Body.Close()
	if err != nil {
		return fmt.Sprintf("poll: %v", err)
	}
	for _, f := range frames {
		switch {
		case f.Type == "data" && f.Channel == r.ch:
			return fmt.Sprintf("got %s on %s", f.Data, r.ch)
		case r.refused(f):
			refused = true
		}
	}
	if !refused {
		return fmt.Sprintf("the poll answered %+v, no refusal", frames)
	}
	return ""
}
