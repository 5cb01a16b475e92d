package live_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// TestAuthorizeContextLives gives Authorize a lookup that fails on a
// context that ended, as a database or Redis client does: the request it
// gets, on every transport, for subscriptions a WebSocket adds later and
// for Reauthorize, has a context that lives as long as the connection,
// with the request's values.
func TestAuthorizeContextLives(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]context.Context{} // the context of each channel's last Authorize
	lookup := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lookup: %w", context.Cause(ctx))
		default:
			return nil
		}
	}
	s := newTestServer(t, &live.Options{
		Identify: func(*http.Request) (live.Identity, error) { return live.Identity{User: "alice"}, nil },
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if live.IdentityOf(r).User != "alice" {
				return errors.New("the request lost its identity")
			}
			mu.Lock()
			seen[channel] = r.Context()
			mu.Unlock()
			return lookup(r.Context())
		},
	})
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "ws")
	sse := openSSE(t, s.srv.URL+"/live/sse", nil)
	mux := openSSE(t, s.srv.URL+"/api/live?channels=mux", nil)
	mux.expectMux(t, "subscribed", "mux")
	first := pollOnce(t, s, "", nil, "poll")
	if len(first) != 1 || first[0].Type != "subscribed" {
		t.Fatalf("first poll: %+v", first)
	}
	ws.subscribe(t, "ws-later")
	polled := make(chan []wsFrame, 1)
	go func() { polled <- pollOnce(t, s, "", map[string]string{"poll": first[0].Cursor}, "poll") }()
	deadline := time.Now().Add(waitFor)
	for s.hub.Stats().Subscriptions < 5 { // until the poll has subscribed
		if time.Now().After(deadline) {
			t.Fatalf("the poll did not subscribe within %v", waitFor)
		}
		runtime.Gosched()
	}

	if err := s.hub.Reauthorize(context.Background(), "", ""); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"ws", "ws-later", "sse", "mux", "poll"} {
		s.publish(t, ch, ch)
	}
	got := map[string]string{}
	for range 2 {
		f := ws.expect(t, "data")
		got[f.Channel] = string(f.Data)
	}
	got["sse"] = sse.nextData(t).Data
	f := mux.muxFrame(t)
	got[f.Channel] = string(f.Data)
	select {
	case fs := <-polled:
		for _, f := range fs {
			got[f.Channel] = string(f.Data)
		}
	case <-time.After(waitFor):
		t.Fatalf("the poll did not answer within %v", waitFor)
	}
	want := map[string]string{"ws": `"ws"`, "ws-later": `"ws-later"`, "sse": `"sse"`, "mux": `"mux"`, "poll": `"poll"`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("after Reauthorize (-want +got):\n%s", diff)
	}

	// The context ends with the connection.
	mu.Lock()
	wsCtx := seen["ws-later"]
	mu.Unlock()
	if err := wsCtx.Err(); err != nil {
		t.Fatalf("the WebSocket's context ended while it was open: %v", err)
	}
	ws.c.Close(websocket.StatusNormalClosure, "")
	select {
	case <-wsCtx.Done():
	case <-time.After(waitFor):
		t.Fatal("the WebSocket's context outlived it")
	}
}
