package servertest

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// DialWS opens a WebSocket to the hub at url (an http:// URL of its
// WebSocket handler), subscribes it to channel and returns it once the
// subscription is acknowledged. It is closed when t ends.
func DialWS(t testing.TB, url, channel string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"`+channel+`"}`)); err != nil {
		t.Fatal(err)
	}
	ReadWSUntil(t, ws, `"subscribed"`)
	return ws
}

// ReadWSUntil reads ws until a message containing want, failing t if none
// comes within Timeout.
func ReadWSUntil(t testing.TB, ws *websocket.Conn, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("reading for %s: %v", want, err)
		}
		if strings.Contains(string(b), want) {
			return
		}
	}
}
