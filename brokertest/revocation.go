package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// revocationIterations is how many times each revocation is raced against
// a publication.
const revocationIterations = 20

// An app is what the revocation clauses' nodes ask: a user named by the
// X-User header, refused by Identify once banned, and allowed the
// channels granted.
type app struct {
	mu      sync.Mutex // guards banned and granted
	banned  map[string]bool
	granted map[string]bool // "user/channel"
}

func newApp(grants ...string) *app {
	a := &app{banned: map[string]bool{}, granted: map[string]bool{}}
	for _, g := range grants {
		a.granted[g] = true
	}
	return a
}

func (a *app) options() *live.Options {
	return &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			user := r.Header.Get("X-User")
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.banned[user] {
				return live.Identity{}, live.Deny("banned")
			}
			return live.Identity{User: user}, nil
		},
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			a.mu.Lock()
			defer a.mu.Unlock()
			if op != live.OpSubscribe || !a.granted[live.IdentityOf(r).User+"/"+channel] {
				return live.ErrForbidden
			}
			return nil
		},
	}
}

func (a *app) set(m map[string]bool, key string, v bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m[key] = v
}

// everywhere is a user on one node over every transport: a WebSocket and
// a multiplexed SSE stream on two channels, and a one-channel SSE stream
// on the first.
type everywhere struct {
	ws       *frameConn
	sse, mux *servertest.Stream
}

func connectEverywhere(t *testing.T, n *servertest.Node, user, first, second string) everywhere {
	t.Helper()
	h := http.Header{"X-User": {user}}
	e := everywhere{
		ws:  dialAs(t, n, user, first, second),
		sse: servertest.OpenStreamWith(t, n.SSE+first, h),
		mux: servertest.OpenStreamWith(t, n.SSE+"?channels="+first+","+second, h),
	}
	for range 2 {
		if ev := e.mux.Next(t); !strings.Contains(ev.Data, `"subscribed"`) {
			t.Fatalf("multiplexed stream: %+v; want its subscriptions acknowledged", ev)
		}
	}
	return e
}

// received reads what each transport of e receives until it ends, or
// until data on channel is want (never, when want is ""), and returns the
// data by transport.
func (e everywhere) received(t *testing.T, channel, want string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for _, f := range e.ws.until(t, func(f wsFrame) bool { return f.Channel == channel && string(f.Data) == want }) {
		if f.Type == "data" {
			got["WebSocket"] = append(got["WebSocket"], f.Channel+" "+string(f.Data))
		}
	}
	for _, ev := range e.sse.Until(t, func(servertest.Event) bool { return false }) {
		if ev.Event == "" {
			got["SSE"] = append(got["SSE"], ev.Data)
		}
	}
	for _, ev := range e.mux.Until(t, func(ev servertest.Event) bool {
		var f wsFrame
		json.Unmarshal([]byte(ev.Data), &f)
		return f.Type == "data" && f.Channel == channel && string(f.Data) == want
	}) {
		var f wsFrame
		if json.Unmarshal([]byte(ev.Data), &f) == nil && f.Type == "data" {
			got["multiplexed SSE"] = append(got["multiplexed SSE"], f.Channel+" "+string(f.Data))
		}
	}
	return got
}

// until returns the frames c receives until one satisfies stop, which it
// includes, or until c ends.
func (c *frameConn) until(t *testing.T, stop func(wsFrame) bool) []wsFrame {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	var got []wsFrame
	for {
		select {
		case f := <-c.frames:
			got = append(got, f)
			if stop(f) {
				return got
			}
		case <-c.done:
			for {
				select {
				case f := <-c.frames:
					got = append(got, f)
				default:
					return got
				}
			}
		case <-ctx.Done():
			t.Fatal("the connection neither ended nor sent what was awaited")
		}
	}
}

// testRevocation checks that Hub.Disconnect and Hub.Reauthorize hold on
// every node when they return: with two, then three nodes, a publication
// made right after the call never reaches the removed user on another
// node, over WebSocket, one-channel or multiplexed SSE, however often it
// is tried. It logs what Disconnect took.
func (s *suite) testRevocation(t *testing.T) {
	for _, nodes := range []int{2, 3} {
		t.Run(fmt.Sprintf("%dNodes", nodes), func(t *testing.T) {
			red, blue := channelName(t)+"-red", channelName(t)+"-blue"
			a := newApp("alice/"+red, "alice/"+blue)
			var ns []*servertest.Node
			for range nodes {
				ns = append(ns, servertest.NewNode(t, s.broker(t), a.options()))
			}
			caller, others := ns[0], ns[1:]
			race := func(t *testing.T, revoke func(ctx context.Context) error, restore func(), blueToo bool) []time.Duration {
				var took []time.Duration
				for i := range revocationIterations {
					var alices []everywhere
					for _, n := range others {
						alices = append(alices, connectEverywhere(t, n, "alice", red, blue))
					}
					ctx, cancel := timeout(t)
					start := time.Now()
					err := revoke(ctx)
					took = append(took, time.Since(start))
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					secret := fmt.Sprintf(`"secret %d"`, i)
					caller.Publish(t, red, secret)
					want := ""
					if blueToo {
						want = fmt.Sprintf(`"still %d"`, i)
						caller.Publish(t, blue, want)
					}
					for n, al := range alices {
						for name, got := range al.received(t, blue, want) {
							if slices.ContainsFunc(got, func(d string) bool { return strings.Contains(d, secret) }) {
								t.Fatalf("iteration %d: alice's %s on node %d received %s, published after the call returned: %q", i, name, n+2, secret, got)
							}
						}
					}
					restore()
				}
				return took
			}
			t.Run("Disconnect", func(t *testing.T) {
				took := race(t, func(ctx context.Context) error {
					a.set(a.banned, "alice", true)
					return caller.Hub.Disconnect(ctx, "alice")
				}, func() { a.set(a.banned, "alice", false) }, false)
				slices.Sort(took)
				t.Logf("Disconnect with %d nodes: median %v, max %v over %d calls", nodes, took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), len(took))
			})
			t.Run("Reauthorize", func(t *testing.T) {
				took := race(t, func(ctx context.Context) error {
					a.set(a.granted, "alice/"+red, false)
					return caller.Hub.Reauthorize(ctx, red, "")
				}, func() { a.set(a.granted, "alice/"+red, true) }, true)
				slices.Sort(took)
				t.Logf("Reauthorize with %d nodes: median %v, max %v over %d calls", nodes, took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), len(took))
			})
		})
	}
}

// testUnanswered cuts one of three nodes off the server: a Disconnect on
// another fails within its context's deadline, naming the node cut off
// and no other, and the node cut off, which can no longer apply
// revocations, ends its connections.
func (s *suite) testUnanswered(t *testing.T) {
	if s.cfg.Cut == nil {
		t.Skip("Config.Cut is nil")
	}
	channel := channelName(t)
	a := newApp("alice/"+channel, "bob/"+channel)
	caller := servertest.NewNode(t, s.broker(t), a.options())
	b, cut := s.cfg.Cut(t)
	cutOff := servertest.NewNode(t, closedAtEnd(t, b, "Config.Cut"), a.options())
	other := servertest.NewNode(t, s.broker(t), a.options())
	alice := dialAs(t, cutOff, "alice", channel)
	bob := dialAs(t, other, "bob", channel)
	ctx, cancel := timeout(t)
	defer cancel()
	if err := caller.Hub.Disconnect(ctx, "nobody"); err != nil {
		t.Fatalf("Disconnect with every node reachable: %v", err)
	}
	cut()
	const deadline = 2 * time.Second
	short, cancelShort := context.WithTimeout(context.Background(), deadline)
	defer cancelShort()
	start := time.Now()
	err := caller.Hub.Disconnect(short, "mallory")
	took := time.Since(start)
	// All three nodes run in this process, so their names differ only in
	// their random part: the error must name exactly one.
	if !errors.Is(err, context.DeadlineExceeded) || strings.Count(err.Error(), "by hub ") != 1 || strings.Contains(err.Error(), ", hub ") {
		t.Fatalf("Disconnect with a node cut off = %v; want the deadline, naming one hub", err)
	}
	if took > deadline+time.Second {
		t.Errorf("Disconnect with a node cut off returned after %v; want within its context's %v", took, deadline)
	}
	t.Logf("Disconnect with a node cut off returned after %v: %v", took.Round(time.Millisecond), err)

	// The node cut off ends alice's connection: it can no longer apply
	// revocations.
	if code := alice.closed(t); code != 1013 {
		t.Errorf("alice's WebSocket on the node cut off closed with %d; want 1013", code)
	}
	t.Logf("the node cut off ended its connections %v after the cut", time.Since(start).Round(time.Millisecond))
	other.Publish(t, channel, `"on"`)
	if f := bob.next(t); f.Type != "data" || string(f.Data) != `"on"` {
		t.Fatalf("bob on a node still connected: %+v", f)
	}
}
