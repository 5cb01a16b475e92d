package livetest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/liveclient"
	"github.com/go-live/live/livetest"
)

// A test that removing a member of a team cuts their live session off at
// once, and only theirs: the app forgets the member, then calls
// Hub.Disconnect, and the test asserts with Client.Ended that the hub
// ended the member's client with 4001.
func ExampleClient_Ended() {
	t := &exampleT{} // in a real test, the test's own t
	defer t.finish()

	team := &team{members: map[string]bool{"ann": true, "bob": true}}
	hub := live.NewHub(&live.Options{Identify: team.identify})
	srv := httptest.NewServer(hub.WebSocketHandler())
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	as := func(user string) *liveclient.Options {
		return &liveclient.Options{Header: http.Header{"Cookie": {"user=" + user}}}
	}
	ann := livetest.ConnectWith(t, url, as("ann"), "team")
	bob := livetest.ConnectWith(t, url, as("bob"), "team")

	// Remove ann: the app forgets her, then ends her sessions on every hub.
	team.remove("ann")
	if err := hub.Disconnect(context.Background(), "ann"); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}

	end := ann.Ended(t)
	fmt.Println("ann:", end.Code, end.Reason)
	hub.Publish(context.Background(), "team", "still here")
	fmt.Println("bob:", string(bob.Next(t).Data))
	// Output:
	// ann: 4001 disconnected by the server
	// bob: "still here"
}

// team is the app's record of who may follow the team.
type team struct {
	mu      sync.Mutex // guards members
	members map[string]bool
}

// identify is the hub's Options.Identify: a member, named by a cookie.
func (tm *team) identify(r *http.Request) (live.Identity, error) {
	c, err := r.Cookie("user")
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if err != nil || !tm.members[c.Value] {
		return live.Identity{}, live.Deny("not a member of the team")
	}
	return live.Identity{User: c.Value}, nil
}

func (tm *team) remove(user string) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	delete(tm.members, user)
}

// exampleT stands in for the *testing.T of a real test, so that the
// example runs: it prints failures and runs the cleanups.
type exampleT struct {
	testing.TB
	cleanups []func()
}

func (t *exampleT) Helper()                      {}
func (t *exampleT) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Errorf(f string, args ...any) { fmt.Printf("FAIL: "+f+"\n", args...) }
func (t *exampleT) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

func (t *exampleT) finish() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
