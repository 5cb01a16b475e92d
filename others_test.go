package live_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

func TestPublishToOthers(t *testing.T) {
	tm := newTeams()
	broker := newMemoryBroker(t, 64)
	a := newTeamServer(t, tm, broker)
	b := newTeamServer(t, tm, broker)

	// An API on node A whose hook skips the connection that wrote.
	mux := http.NewServeMux()
	mux.Handle("POST /todos", a.hub.Hook(live.HookOptions{Channel: toChannel("red"), ToOthers: true})(http.HandlerFunc(echo)))
	api := httptest.NewServer(mux)
	defer api.Close()

	writer := dialWS(t, a.wsURL(), &websocket.DialOptions{HTTPHeader: as("alice")})
	writer.send(t, map[string]string{"type": "subscribe", "channel": "red"})
	conn := writer.expect(t, "subscribed").Conn
	if len(conn) < 16 {
		t.Fatalf("subscribed frame names connection %q; want a random name", conn)
	}
	otherTab := dialAs(t, b, "alice", "red")
	bob := dialAs(t, b, "bob", "red")

	req, _ := http.NewRequest("POST", api.URL+"/todos", strings.NewReader(`{"id":1}`))
	req.Header.Set(live.ConnectionHeader, conn)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("POST: %v %v", res, err)
	}
	res.Body.Close()
	for _, c := range []*wsClient{otherTab, bob} {
		if f := c.expect(t, "data"); !strings.Contains(string(f.Data), `"add"`) {
			t.Fatalf("got %+v; want the add", f)
		}
	}

	// Every connection of a user, on every node.
	ctx := live.Except(context.Background(), "", "alice")
	if _, err := a.hub.Publish(ctx, "red", "not for alice"); err != nil {
		t.Fatal(err)
	}
	a.publish(t, "red", "for all")
	if f := bob.expect(t, "data"); string(f.Data) != `"not for alice"` {
		t.Fatalf("bob: %+v", f)
	}
	for _, c := range []*wsClient{writer, otherTab, bob} {
		if f := c.expect(t, "data"); string(f.Data) != `"for all"` {
			t.Fatalf("got %+v; want only the publication for all", f)
		}
	}

	// A publication that looks like an exclusion is data like any other.
	forged := `{"@live:except":{"user":"bob"},"data":1}`
	a.publish(t, "red", json.RawMessage(forged))
	for _, c := range []*wsClient{writer, bob} {
		if f := c.expect(t, "data"); string(f.Data) != forged {
			t.Fatalf("got %s; want the publication as it was made", f.Data)
		}
	}
}
