package inspect_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/inspect"
)

// cluster starts two hubs on one memory broker, serving their channels at
// /live/{channel} as the user named by the X-User header; Authorize
// refuses "secret", and "news" while deny is set.
type cluster struct {
	a, b       *live.Hub
	srvA, srvB *httptest.Server
	deny       atomic.Bool
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	br := live.NewMemoryBroker(nil)
	c := &cluster{}
	node := func() (*live.Hub, *httptest.Server) {
		h := live.NewHub(&live.Options{
			Broker: br,
			Identify: func(r *http.Request) (live.Identity, error) {
				return live.Identity{User: r.Header.Get("X-User")}, nil
			},
			Authorize: func(r *http.Request, channel string, op live.Op) error {
				if channel == "secret" || channel == "news" && c.deny.Load() {
					return live.Deny("no")
				}
				return nil
			},
		})
		mux := http.NewServeMux()
		mux.Handle("GET /live/{channel}", h.SSEHandler())
		srv := httptest.NewServer(mux)
		t.Cleanup(func() {
			srv.CloseClientConnections()
			srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h.Close(ctx)
		})
		return h, srv
	}
	c.a, c.srvA = node()
	c.b, c.srvB = node()
	return c
}

// stream opens a one-channel SSE stream as user.
func stream(t *testing.T, srv *httptest.Server, user, channel string) *bufio.Reader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/live/"+channel, nil)
	req.Header.Set("X-User", user)
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("stream %s: %d %s", channel, res.StatusCode, b)
	}
	return bufio.NewReader(res.Body)
}

// await reads r until a line holds want, or fails after 10 s; with
// want == "", until the stream ends.
func await(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	found := make(chan error, 1)
	go func() {
		for {
			line, err := r.ReadString('\n')
			if want != "" && strings.Contains(line, want) {
				found <- nil
				return
			}
			if err != nil {
				if want == "" {
					err = nil
				}
				found <- err
				return
			}
		}
	}()
	select {
	case err := <-found:
		if err != nil {
			t.Fatalf("waiting for %q: %v", want, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10 s", want)
	}
}

// eventually calls f until it returns true, for up to 10 s.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func state(t *testing.T, srv *httptest.Server, user string) inspect.Snapshot {
	t.Helper()
	res, err := http.Get(srv.URL + "/state?user=" + url.QueryEscape(user))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s inspect.Snapshot
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// session loads the page and returns its token cookie.
func session(t *testing.T, srv *httptest.Server) *http.Cookie {
	t.Helper()
	res, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, c := range res.Cookies() {
		if c.Name == "live_inspect_token" {
			return c
		}
	}
	t.Fatal("the page set no token cookie")
	return nil
}

type answer struct {
	status int
	body   map[string]any
}

func post(t *testing.T, srv *httptest.Server, path string, form url.Values, cookie *http.Cookie, header map[string]string) answer {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != nil {
		req.AddCookie(cookie)
		req.Header.Set("X-Inspect-Token", cookie.Value)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	a := answer{status: res.StatusCode}
	if err := json.NewDecoder(res.Body).Decode(&a.body); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %v", path, res.StatusCode, err)
	}
	return a
}

func TestClusterAndActions(t *testing.T) {
	c := newCluster(t)
	insp := inspect.Handler(c.a, &inspect.Options{Interval: 100 * time.Millisecond})
	t.Cleanup(func() { insp.Close() })
	srv := httptest.NewServer(insp)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })

	news := stream(t, c.srvB, "bob", "news")
	other := stream(t, c.srvB, "bob", "other")

	// The inspector on A sees B, its connections and bob's on it.
	eventually(t, "bob's connections on B", func() bool {
		s := state(t, srv, "bob")
		if len(s.Nodes) != 2 || !s.Nodes[0].Self || s.Nodes[0].ID != "" && s.Nodes[1].ID == s.Nodes[0].ID {
			return false
		}
		b := s.Nodes[1]
		return b.Connections == 2 && b.ConnectionsBy["sse"] == 2 && len(b.Users["bob"]) == 2 && len(b.Busiest) == 2
	})

	// CSRF: without the token, or from another site, refused.
	if a := post(t, srv, "/disconnect", url.Values{"user": {"bob"}}, nil, nil); a.status != 403 {
		t.Fatalf("POST without token: %d %v", a.status, a.body)
	}
	cookie := session(t, srv)
	if a := post(t, srv, "/disconnect", url.Values{"user": {"bob"}}, cookie, map[string]string{"Sec-Fetch-Site": "cross-site"}); a.status != 403 {
		t.Fatalf("cross-site POST: %d %v", a.status, a.body)
	}
	if a := post(t, srv, "/disconnect", url.Values{"user": {"bob"}}, cookie, map[string]string{"Origin": "https://evil.example"}); a.status != 403 {
		t.Fatalf("POST from another origin: %d %v", a.status, a.body)
	}
	if a := post(t, srv, "/disconnect", url.Values{"user": {"bob"}}, &http.Cookie{Name: "live_inspect_token", Value: strings.Repeat("0", 32)}, map[string]string{"X-Inspect-Token": strings.Repeat("1", 32)}); a.status != 403 {
		t.Fatalf("POST with a token not the cookie's: %d %v", a.status, a.body)
	}
	// Bad input: JSON errors.
	for _, bad := range []struct {
		path string
		form url.Values
	}{
		{"/disconnect", url.Values{}},
		{"/publish", url.Values{}},
		{"/publish", url.Values{"channel": {"@live:control"}, "data": {"1"}}},
		{"/reauthorize", url.Values{"channel": {"a b\x00"}}},
	} {
		if a := post(t, srv, bad.path, bad.form, cookie, nil); a.status != 400 || a.body["error"] == nil {
			t.Fatalf("POST %s %v: %d %v", bad.path, bad.form, a.status, a.body)
		}
	}

	// Publish a test message: B's subscriber gets it.
	if a := post(t, srv, "/publish", url.Values{"channel": {"news"}, "data": {`{"test":42}`}}, cookie, nil); a.status != 200 {
		t.Fatalf("publish: %d %v", a.status, a.body)
	}
	await(t, news, `"test":42`)

	// Re-authorize news: B ends bob's stream.
	c.deny.Store(true)
	if a := post(t, srv, "/reauthorize", url.Values{"channel": {"news"}}, cookie, nil); a.status != 200 {
		t.Fatalf("reauthorize: %d %v", a.status, a.body)
	}
	await(t, news, "event: refused")

	// Disconnect bob: his stream on B ends.
	if a := post(t, srv, "/disconnect", url.Values{"user": {"bob"}}, cookie, nil); a.status != 200 {
		t.Fatalf("disconnect: %d %v", a.status, a.body)
	}
	await(t, other, "")
	eventually(t, "B without bob", func() bool {
		s := state(t, srv, "bob")
		return len(s.Nodes) == 2 && s.Nodes[1].Connections == 0 && len(s.Nodes[1].Users["bob"]) == 0
	})
}

func TestLiveUpdates(t *testing.T) {
	c := newCluster(t)
	insp := inspect.Handler(c.a, &inspect.Options{Interval: 50 * time.Millisecond})
	t.Cleanup(func() { insp.Close() })
	srv := httptest.NewServer(insp)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })

	page := stream(t, srv, "", "u-"+"616c696365") // alice
	stream(t, c.srvB, "alice", "room")
	await(t, page, `"user":"alice","transport":"sse"`)

	// Only the inspector's own streams: nothing else, no publishing.
	res, err := http.Get(srv.URL + "/live/news")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("GET /live/news: %d", res.StatusCode)
	}
}

func TestRefusalsBounded(t *testing.T) {
	c := newCluster(t)
	insp := inspect.Handler(c.a, nil)
	t.Cleanup(func() { insp.Close() })
	srv := httptest.NewServer(insp)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })

	for range 60 {
		req, _ := http.NewRequest("GET", c.srvA.URL+"/live/secret", nil)
		req.Header.Set("Origin", "") // same-origin: refused by Authorize
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 403 {
			t.Fatalf("secret: %d", res.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", c.srvA.URL+"/live/news", nil)
	req.Header.Set("Origin", "https://evil.example")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()

	s := state(t, srv, "")
	ev := s.Nodes[0].Events
	if len(ev) != 50 {
		t.Fatalf("%d events kept, want 50", len(ev))
	}
	if ev[0].Kind != "origin" || ev[1].Kind != "authorize" || ev[1].Channel != "secret" {
		t.Fatalf("newest events: %+v, %+v", ev[0], ev[1])
	}
	// B sees A's refusals through the beats once an inspector on B asks.
	insB := inspect.Handler(c.b, nil)
	t.Cleanup(func() { insB.Close() })
	eventually(t, "A's refusals seen from B", func() bool {
		s := insB.Snapshot("")
		return len(s.Nodes) == 2 && len(s.Nodes[1].Events) == 50
	})
}
