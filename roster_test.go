package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
)

// aliceEverywhere is alice on a node over every transport: a WebSocket
// on red and blue, a one-channel SSE stream on red, and a multiplexed SSE
// stream on red and blue.
type aliceEverywhere struct {
	ws       *wsClient
	sse, mux *sseStream
}

func connectAlice(t *testing.T, s *testServer) aliceEverywhere {
	t.Helper()
	a := aliceEverywhere{
		ws:  dialAs(t, s, "alice", "red", "blue"),
		sse: openSSE(t, s.srv.URL+"/live/red", as("alice")),
		mux: openSSE(t, s.srv.URL+"/api/live?channels=red,blue", as("alice")),
	}
	a.mux.expectMux(t, "subscribed", "red")
	a.mux.expectMux(t, "subscribed", "blue")
	return a
}

// wsUntil reads c until a data frame of channel carries want, or until c
// ends, and returns the data it received.
func wsUntil(t *testing.T, c *wsClient, channel, want string) []string {
	t.Helper()
	var got []string
	for {
		f, ok := c.next(t)
		if !ok {
			return got
		}
		if f.Type == "data" {
			got = append(got, f.Channel+" "+string(f.Data))
			if f.Channel == channel && string(f.Data) == want {
				return got
			}
		}
	}
}

// sseUntil reads st (one-channel, or multiplexed when mux) until data of
// channel is want, or until st ends, and returns the data it received.
func sseUntil(t *testing.T, st *sseStream, mux bool, channel, want string) []string {
	t.Helper()
	var got []string
	for {
		ev, ok := st.next(t)
		if !ok {
			return got
		}
		if ev.Data == "" || ev.Event != "" {
			continue
		}
		if !mux {
			got = append(got, ev.Data)
			continue
		}
		var f wsFrame
		if err := json.Unmarshal([]byte(ev.Data), &f); err != nil || f.Type != "data" {
			continue
		}
		got = append(got, f.Channel+" "+string(f.Data))
		if f.Channel == channel && string(f.Data) == want {
			return got
		}
	}
}

func containsSecret(got []string, secret string) bool {
	return slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, secret) })
}

// TestRevocationHoldsOnEveryNode calls Disconnect and Reauthorize on one
// of two, then three, hubs sharing a broker, and publishes as soon as the
// call returns: the publication never reaches alice on another hub, over
// WebSocket, one-channel or multiplexed SSE.
func TestRevocationHoldsOnEveryNode(t *testing.T) {
	for _, nodes := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d hubs", nodes), func(t *testing.T) {
			tm := newTeams()
			broker := newMemoryBroker(t, 1024)
			var hubs []*testServer
			for range nodes {
				hubs = append(hubs, newTeamServer(t, tm, broker))
			}
			a, others := hubs[0], hubs[1:]
			const iterations = 20
			t.Run("Disconnect", func(t *testing.T) {
				var took []time.Duration
				for i := range iterations {
					var alices []aliceEverywhere
					for _, s := range others {
						alices = append(alices, connectAlice(t, s))
					}
					tm.ban("alice")
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					start := time.Now()
					err := a.hub.Disconnect(ctx, "alice")
					took = append(took, time.Since(start))
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					secret := fmt.Sprintf(`"secret %d"`, i)
					a.publish(t, "red", json.RawMessage(secret))
					for n, al := range alices {
						for name, got := range map[string][]string{
							"WebSocket":       wsUntil(t, al.ws, "", ""),
							"SSE":             sseUntil(t, al.sse, false, "", ""),
							"multiplexed SSE": sseUntil(t, al.mux, true, "", ""),
						} {
							if containsSecret(got, secret) {
								t.Fatalf("iteration %d: alice's %s on hub %d received %s, published after Disconnect returned: %q", i, name, n+1, secret, got)
							}
						}
					}
					tm.mu.Lock()
					delete(tm.banned, "alice")
					tm.mu.Unlock()
				}
				slices.Sort(took)
				t.Logf("Disconnect with %d hubs on the memory broker: median %v, max %v", nodes, took[len(took)/2], took[len(took)-1])
			})
			t.Run("Reauthorize", func(t *testing.T) {
				for i := range iterations {
					var alices []aliceEverywhere
					for _, s := range others {
						alices = append(alices, connectAlice(t, s))
					}
					tm.remove("red", "alice")
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err := a.hub.Reauthorize(ctx, "red", "")
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					secret := fmt.Sprintf(`"secret %d"`, i)
					marker := fmt.Sprintf(`"marker %d"`, i)
					a.publish(t, "red", json.RawMessage(secret))
					a.publish(t, "blue", json.RawMessage(marker))
					for n, al := range alices {
						for name, got := range map[string][]string{
							"WebSocket":       wsUntil(t, al.ws, "blue", marker),
							"SSE":             sseUntil(t, al.sse, false, "", ""),
							"multiplexed SSE": sseUntil(t, al.mux, true, "blue", marker),
						} {
							if containsSecret(got, secret) {
								t.Fatalf("iteration %d: alice's %s on hub %d received %s, published after Reauthorize returned: %q", i, name, n+1, secret, got)
							}
						}
					}
					tm.mu.Lock()
					tm.members["red"]["alice"] = true
					tm.mu.Unlock()
				}
			})
		})
	}
}

// TestRevocationUnanswered cuts one hub from the broker: a Disconnect on
// another fails within its context, naming it; the cut hub, which can no
// longer apply revocations, ends its connections and serves new ones only
// once it is back.
func TestRevocationUnanswered(t *testing.T) {
	tm := newTeams()
	shared := newMemoryBroker(t, 1024)
	cut := &faultBroker{MemoryBroker: shared, broken: make(chan struct{}), gate: closedChan()}
	a := newTeamServer(t, tm, shared)
	b := newTeamServer(t, tm, cut)
	c := newTeamServer(t, tm, shared)
	aliceOnB := dialAs(t, b, "alice", "red")
	bobOnC := dialAs(t, c, "bob", "red")
	// Everyone knows everyone: a Disconnect of nobody is confirmed by all.
	if err := a.hub.Disconnect(context.Background(), "nobody"); err != nil {
		t.Fatal(err)
	}

	end := cut.outage()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.hub.Disconnect(ctx, "mallory")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), live.HubID(b.hub)) || strings.Contains(err.Error(), live.HubID(c.hub)) {
		t.Fatalf("Disconnect with hub B cut off = %v; want the deadline, naming B (%s) and not C", err, live.HubID(b.hub))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Disconnect returned after %v; want within its context's 300ms", d)
	}
	t.Logf("Disconnect with a hub cut off: %v", err)

	// B, which cannot vouch for revocations, ends alice's connection.
	if _, ok := aliceOnB.next(t); ok || closeStatus(aliceOnB.closeErr()) != 1013 {
		t.Fatalf("alice on the cut hub: ended with %v; want status 1013", aliceOnB.closeErr())
	}
	t.Logf("the cut hub ended its connections %v after the cut", time.Since(start))
	// Nor does it take new ones while cut: they wait.
	held, cancelHeld := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelHeld()
	req, _ := http.NewRequestWithContext(held, "GET", b.srv.URL+"/live/red", nil)
	req.Header.Set("Cookie", "user=alice")
	if resp, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("a stream on the cut hub: %v; want it held", err)
	}
	c.publish(t, "red", 1)
	if f := bobOnC.expect(t, "data"); string(f.Data) != "1" {
		t.Fatalf("bob on C: %+v", f)
	}

	end()
	alice := dialAs(t, b, "alice", "red") // waits until B is back
	if err := a.hub.Disconnect(context.Background(), "nobody"); err != nil {
		t.Fatalf("Disconnect once B is back: %v", err)
	}
	a.publish(t, "red", 2)
	if f := alice.expect(t, "data"); string(f.Data) != "2" {
		t.Fatalf("alice back on B: %+v", f)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// TestControlHoleIdentifies loses a control message on its way to a hub
// that cannot read it back from history: that hub runs Identify again for
// every connection, and ends those of a user it now refuses, even on a
// channel open to everyone.
func TestControlHoleIdentifies(t *testing.T) {
	tm := newTeams()
	broker := newFaultBroker(t, -1) // no history to fill holes from
	opts := func() *live.Options { return &live.Options{Broker: broker, Identify: tm.identify} }
	a, b := newTestServer(t, opts()), newTestServer(t, opts())
	aliceWS := dialAs(t, b, "alice", "public")
	aliceSSE := openSSE(t, b.srv.URL+"/live/public", as("alice"))
	aliceMux := openSSE(t, b.srv.URL+"/api/live?channels=public", as("alice"))
	aliceMux.expectMux(t, "subscribed", "public")
	bob := dialAs(t, b, "bob", "public")

	tm.ban("alice")
	broker.setDrop(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.hub.Disconnect(ctx, "alice"); err == nil {
		t.Fatal("Disconnect confirmed while the broker drops every delivery")
	}
	broker.setDrop(false)
	if err := a.hub.Reauthorize(context.Background(), "nothing", "nobody"); err != nil { // B sees the hole
		t.Fatal(err)
	}
	a.publish(t, "public", json.RawMessage(`"later"`))
	if got := wsUntil(t, aliceWS, "", ""); containsSecret(got, "later") || closeStatus(aliceWS.closeErr()) != 4001 {
		t.Errorf("alice's WebSocket: received %q, closed with %v; want nothing and 4001", got, aliceWS.closeErr())
	}
	if got := sseUntil(t, aliceSSE, false, "", ""); containsSecret(got, "later") {
		t.Errorf("alice's SSE stream received %q", got)
	}
	if got := sseUntil(t, aliceMux, true, "", ""); containsSecret(got, "later") {
		t.Errorf("alice's multiplexed stream received %q", got)
	}
	if f := bob.expect(t, "data"); string(f.Data) != `"later"` {
		t.Fatalf("bob: %+v", f)
	}
}

// TestRevocationAfterHubLeaves closes one of two hubs: it says goodbye,
// and the other no longer waits for it.
func TestRevocationAfterHubLeaves(t *testing.T) {
	broker := newMemoryBroker(t, 1024)
	a := newTestServer(t, &live.Options{Broker: broker})
	b := live.NewHub(&live.Options{Broker: broker})
	first, cancelFirst := context.WithTimeout(context.Background(), waitFor)
	defer cancelFirst()
	if err := a.hub.Disconnect(first, "nobody"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.hub.Disconnect(ctx, "nobody"); err != nil {
		t.Fatalf("Disconnect after the other hub closed: %v", err)
	}
}

// TestRevocationWhileHubJoins starts a hub while a Disconnect waits for
// another: the newcomer, which subscribed to the control channel before
// it said it was alive, answers for the message too, and the call returns
// once the hub it waited for is back.
func TestRevocationWhileHubJoins(t *testing.T) {
	tm := newTeams()
	shared := newMemoryBroker(t, 1024)
	cut := &faultBroker{MemoryBroker: shared, broken: make(chan struct{}), gate: closedChan()}
	a := newTeamServer(t, tm, shared)
	newTeamServer(t, tm, cut)
	if err := a.hub.Disconnect(context.Background(), "nobody"); err != nil {
		t.Fatal(err)
	}
	end := cut.outage()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		errc <- a.hub.Disconnect(ctx, "alice")
	}()
	c := newTeamServer(t, tm, shared)
	dialAs(t, c, "bob", "red") // c serves: it has said it is alive
	select {
	case err := <-errc:
		t.Fatalf("Disconnect returned %v while a hub was cut off", err)
	default:
	}
	end()
	if err := <-errc; err != nil {
		t.Fatalf("Disconnect once the hub cut off is back: %v", err)
	}
}
