package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// presenceOpts is the teams app with presence on "red" (members) and
// "public" (a count).
func presenceOpts(tm *teams, broker live.Broker) *live.Options {
	return &live.Options{
		Broker:    broker,
		Identify:  tm.identify,
		Authorize: tm.authorize,
		Presence: func(channel string) live.PresenceMode {
			switch channel {
			case "red":
				return live.PresenceMembers
			case "public":
				return live.PresenceCount
			}
			return live.PresenceOff
		},
		PresenceGrace: 300 * time.Millisecond,
	}
}

// roster follows a channel's presence frames as a client would.
type roster struct {
	members map[string]live.Member
	count   int
	frames  int // presence frames seen
	leaves  int // users seen leaving
}

func newRoster() *roster { return &roster{members: map[string]live.Member{}} }

func (r *roster) apply(f wsFrame) {
	r.frames++
	if f.Members != nil {
		clear(r.members)
		for _, m := range f.Members {
			r.members[m.User] = m
		}
	}
	for _, m := range f.Join {
		r.members[m.User] = m
	}
	for _, u := range f.Leave {
		delete(r.members, u)
		r.leaves++
	}
	r.count = f.Count
}

// presenceOf returns c's next presence frame of channel, skipping others.
func presenceOf(t *testing.T, c *wsClient, channel string) wsFrame {
	t.Helper()
	for {
		f, ok := c.next(t)
		if !ok {
			t.Fatalf("connection ended (%v) waiting for presence of %q", c.closeErr(), channel)
		}
		if f.Type == "presence" && f.Channel == channel {
			return f
		}
	}
}

// conns is the roster as user → connections.
func (r *roster) conns() map[string]int {
	m := make(map[string]int, len(r.members))
	for u, mb := range r.members {
		m[u] = mb.Conns
	}
	return m
}

// until applies c's presence frames for channel until the roster's
// connections equal want.
func (r *roster) until(t *testing.T, c *wsClient, channel string, want map[string]int) {
	t.Helper()
	for !cmp.Equal(r.conns(), want, cmp.Comparer(func(a, b map[string]int) bool { return len(a) == 0 && len(b) == 0 || cmp.Equal(a, b) })) {
		f, ok := c.next(t)
		if !ok {
			t.Fatalf("connection ended (%v) waiting for members %v; have %v", c.closeErr(), want, r.conns())
		}
		if f.Type == "presence" && f.Channel == channel {
			r.apply(f)
		}
	}
}

func TestPresenceMembers(t *testing.T) {
	tm := newTeams()
	s := newTestServer(t, presenceOpts(tm, nil))

	alice := dialAs(t, s, "alice", "red")
	if f := alice.expect(t, "presence"); f.Members == nil || len(f.Members) != 0 || f.Count != 0 || f.Tag == "" {
		t.Fatalf("first snapshot: %+v; want an empty list with a tag", f)
	}
	if f := alice.expect(t, "presence"); !cmp.Equal(f.Join, []live.Member{{User: "alice", Info: json.RawMessage(`{"name":"Alice"}`), Conns: 1}}) || f.Count != 1 {
		t.Fatalf("alice's own join: %+v", f)
	}

	bob := dialAs(t, s, "bob", "red")
	bobs := newRoster()
	bobs.until(t, bob, "red", map[string]int{"alice": 1, "bob": 1})
	alices := newRoster()
	alices.members["alice"] = live.Member{User: "alice", Conns: 1}
	alices.until(t, alice, "red", map[string]int{"alice": 1, "bob": 1})

	// A second tab is no join: alice's connections count 2.
	tab := dialAs(t, s, "alice", "red")
	bobs.until(t, bob, "red", map[string]int{"alice": 2, "bob": 1})
	tab.c.Close(websocket.StatusNormalClosure, "")
	bobs.until(t, bob, "red", map[string]int{"alice": 1, "bob": 1}) // after the grace window

	// A reload within the grace window: no leave, no join.
	alice.c.Close(websocket.StatusNormalClosure, "")
	alice = dialAs(t, s, "alice", "red")
	back := alice.expect(t, "presence")
	if got := len(back.Members); got != 2 {
		t.Fatalf("snapshot after reload: %+v", back)
	}
	bob.send(t, map[string]string{"type": "subscribe", "channel": "public"})
	bob.expect(t, "subscribed")
	// Red may change meanwhile: the old connection may close after the
	// new one opened, and alice has two connections for the grace window.
	public := func() wsFrame {
		for {
			f := bob.expect(t, "presence")
			if f.Channel == "public" {
				return f
			}
			bobs.apply(f)
		}
	}
	if f := public(); f.Members != nil {
		t.Fatalf("count channel snapshot: %+v", f)
	}
	if f := public(); f.Count != 1 || f.Join != nil {
		t.Fatalf("count channel diff: %+v; want a count only", f)
	}
	if bobs.leaves != 0 {
		t.Fatalf("bob saw %d leaves", bobs.leaves)
	}

	// Closing for good is a leave, once the grace window is over.
	alice.c.Close(websocket.StatusNormalClosure, "")
	start := time.Now()
	bobs.until(t, bob, "red", map[string]int{"bob": 1})
	if bobs.leaves != 1 {
		t.Fatalf("bob saw %d leaves; want 1", bobs.leaves)
	}
	t.Logf("leave seen %v after the last tab closed (grace 300ms)", time.Since(start).Round(time.Millisecond))

	members, n, err := s.hub.Members(context.Background(), "red")
	if err != nil || n != 1 || len(members) != 1 || members[0].User != "bob" {
		t.Fatalf("Members: %v %d %v", members, n, err)
	}
	if _, _, err := s.hub.Members(context.Background(), "blue"); !errors.Is(err, live.ErrNoPresence) {
		t.Fatalf("Members of blue: %v; want ErrNoPresence", err)
	}
}

// TestPresenceIsData: presence is refused to those Authorize refuses,
// everywhere it can be read.
func TestPresenceIsData(t *testing.T) {
	tm := newTeams()
	s := newTestServer(t, presenceOpts(tm, nil))
	bob := dialAs(t, s, "bob", "red")
	roster := newRoster()
	roster.until(t, bob, "red", map[string]int{"bob": 1})

	carol := dialAs(t, s, "carol")
	carol.send(t, map[string]string{"type": "subscribe", "channel": "red"})
	if f := carol.expect(t, "error"); f.Channel != "red" {
		t.Fatalf("carol: %+v", f)
	}
	carol.subscribe(t, "public")
	if f := carol.expect(t, "presence"); f.Channel != "public" {
		t.Fatalf("carol got presence of %q: %+v", f.Channel, f)
	}

	get := func(user, path string) (int, string) {
		req, _ := http.NewRequest("GET", s.srv.URL+path, nil)
		req.Header = as(user)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("bob", "/api/live/red?presence"); code != 200 || body != `{"channel":"red","members":[{"user":"bob","info":{"name":"Bob"},"conns":1}],"count":1}`+"\n" {
		t.Fatalf("bob's GET: %d %s", code, body)
	}
	if code, body := get("bob", "/live/public?presence"); code != 200 || body != `{"channel":"public","count":1}`+"\n" {
		t.Fatalf("GET of a count channel: %d %s", code, body)
	}
	if code, body := get("carol", "/api/live/red?presence"); code != 403 || strings.Contains(body, "bob") {
		t.Fatalf("carol's GET: %d %s; want 403 without members", code, body)
	}
	empty := newTestServer(t, presenceOpts(tm, nil))
	req, _ := http.NewRequest("GET", empty.srv.URL+"/live/red?presence", nil)
	req.Header = as("bob")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != `{"channel":"red","members":[],"count":0}`+"\n" {
		t.Fatalf("GET of a members channel nobody is on: %s", body)
	}
	if code, _ := get("alice", "/api/live/blue?presence"); code != 404 {
		t.Fatalf("GET of a channel without presence: %d; want 404", code)
	}
}

// TestPresenceStorm: joins in a burst reach subscribers as a few diffs.
func TestPresenceStorm(t *testing.T) {
	tm := newTeams()
	s := newTestServer(t, presenceOpts(tm, nil))
	observer := dialAs(t, s, "bob", "public")
	const n = 200
	start := time.Now()
	clients := make([]*websocket.Conn, n)
	for i := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		c, _, err := websocket.Dial(ctx, s.wsURL(), &websocket.DialOptions{HTTPHeader: as(fmt.Sprintf("u%d", i))})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"subscribe","channel":"public"}`))
		clients[i] = c
		go func() { // discard what it receives
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	frames := 0
	for {
		f := observer.expect(t, "presence")
		frames++
		if f.Count == n+1 {
			break
		}
	}
	elapsed := time.Since(start)
	// At most one diff per 100 ms, plus the snapshot and a diff at each end.
	if limit := int(elapsed/(100*time.Millisecond)) + 3; frames > limit {
		t.Fatalf("%d presence frames in %v for %d joins; want at most %d", frames, elapsed, n, limit)
	}
	t.Logf("%d joins in %v reached a subscriber as %d frames", n, elapsed.Round(time.Millisecond), frames)
}

// cutBroker stops publishing when cut, as a hub's process that died would.
type cutBroker struct {
	live.Broker
	cut atomic.Bool
}

func (b *cutBroker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	if b.cut.Load() {
		return live.Position{}, errors.New("cut off")
	}
	return b.Broker.Publish(ctx, channel, data)
}

func TestPresenceAcrossNodes(t *testing.T) {
	tm := newTeams()
	for u := range 10 {
		tm.members["red"][fmt.Sprintf("u%d", u)] = true
	}
	broker := newMemoryBroker(t, 1024)
	cut := &cutBroker{Broker: broker}
	opts := presenceOpts(tm, broker)
	opts.PresenceTimeout = 600 * time.Millisecond
	a := newTestServer(t, opts)
	b := newTestServer(t, opts)
	dying := *opts
	dying.Broker = cut
	c := newTestServer(t, &dying)

	watchA, watchB := dialAs(t, a, "alice", "red"), dialAs(t, b, "bob", "red")
	onA, onB := newRoster(), newRoster()
	want := map[string]int{"alice": 1, "bob": 1}
	onA.until(t, watchA, "red", want)
	onB.until(t, watchB, "red", want)

	// 200 random opens and closes of 50 clients of 10 users, on both nodes.
	rng := rand.New(rand.NewPCG(1, 2))
	type client struct {
		user string
		ws   *wsClient
	}
	clients := make([]client, 50)
	for i := range clients {
		clients[i].user = fmt.Sprintf("u%d", i%10)
	}
	for range 200 {
		cl := &clients[rng.IntN(len(clients))]
		if cl.ws != nil {
			cl.ws.c.Close(websocket.StatusNormalClosure, "")
			cl.ws = nil
			continue
		}
		node := a
		if rng.IntN(2) == 1 {
			node = b
		}
		cl.ws = dialAs(t, node, cl.user, "red")
	}
	for _, cl := range clients {
		if cl.ws != nil {
			want[cl.user]++
		}
	}
	onA.until(t, watchA, "red", want)
	onB.until(t, watchB, "red", want)
	ma, _, _ := a.hub.Members(context.Background(), "red")
	mb, _, _ := b.hub.Members(context.Background(), "red")
	if diff := cmp.Diff(ma, mb); diff != "" {
		t.Fatalf("Members differ between the nodes (-A +B):\n%s", diff)
	}

	// A node that dies says nothing: its members go once it is overdue.
	dialAs(t, c, "dave", "public")
	dialAs(t, c, "carol", "public")
	countA := newRoster()
	watchA.send(t, map[string]string{"type": "subscribe", "channel": "public"})
	for countA.count != 3 { // alice, dave and carol
		countA.apply(presenceOf(t, watchA, "public"))
	}
	cut.cut.Store(true)
	start := time.Now()
	for countA.count != 1 {
		countA.apply(presenceOf(t, watchA, "public"))
	}
	t.Logf("a dead node's members were gone after %v (PresenceTimeout 600ms)", time.Since(start).Round(time.Millisecond))
}

// TestPresenceLongPoll: a long-poller gets presence like the stream, and
// an unchanged snapshot, named by its tag, is no news, so polls wait
// instead of returning it again and again.
func TestPresenceLongPoll(t *testing.T) {
	s := newTestServer(t, &live.Options{Presence: func(string) live.PresenceMode { return live.PresenceMembers }})
	anon := dialWS(t, s.wsURL(), nil)
	anon.subscribe(t, "room")
	if f := presenceOf(t, anon, "room"); f.Count != 0 || len(f.Members) != 0 {
		t.Fatalf("snapshot: %+v", f)
	}
	if f := presenceOf(t, anon, "room"); f.Count != 1 || f.Join != nil {
		t.Fatalf("an anonymous connection is counted, not listed: %+v", f)
	}

	cursors := map[string]string{}
	tag := ""
	for i := 0; ; i++ {
		if i == 5 {
			t.Fatal("every poll returned a snapshot: the tag does not stop them")
		}
		q := url.Values{"channels": {"room"}, "poll": {"0"}}
		if c := cursors["room"]; c != "" {
			q.Set("cursor.room", c)
		}
		if tag != "" {
			q.Set("presence.room", tag)
		}
		resp, err := http.Get(s.srv.URL + "/api/live?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var frames []wsFrame
		err = json.NewDecoder(resp.Body).Decode(&frames)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(frames) == 0 {
			break // nothing new: the poll waited out its hold
		}
		for _, f := range frames {
			switch f.Type {
			case "subscribed":
				cursors[f.Channel] = f.Cursor
			case "presence":
				if f.Tag != "" {
					tag = f.Tag
				}
			}
		}
	}
	if tag == "" {
		t.Fatal("no poll carried a presence snapshot")
	}
}
