package servertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-live/live"
)

// A Node is one server process of an application: a Hub on its own
// broker, behind an HTTP server with the SSE and WebSocket handlers.
type Node struct {
	Hub *live.Hub
	SSE string // the SSE handler's prefix, ending in a slash: SSE + channel, or SSE + "?channels=a,b"
	WS  string // the WebSocket handler's URL
}

// NewNode starts a Hub on b behind a test server. When t ends, the Hub is
// closed, then the server; close b in a cleanup registered before.
//
// opts, which may be nil, configures the Hub; its Broker is b, and its
// Logger t's unless set.
func NewNode(t testing.TB, b live.Broker, opts *live.Options) *Node {
	t.Helper()
	var o live.Options
	if opts != nil {
		o = *opts
	}
	o.Broker = b
	if o.Logger == nil {
		o.Logger = Logger(t)
	}
	hub := live.NewHub(&o)
	mux := http.NewServeMux()
	mux.Handle("GET /live/{channel}", hub.SSEHandler())
	mux.Handle("GET /live/{$}", hub.SSEHandler()) // ?channels=a,b: the multiplexed stream
	mux.Handle("/ws", hub.WebSocketHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		CloseHub(t, hub)
		srv.Close()
	})
	return &Node{Hub: hub, SSE: srv.URL + "/live/", WS: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
}

// A BrokerNode is a Node on a broker of its own, which the tests of that
// broker's module reach through Broker.
type BrokerNode[B interface {
	live.Broker
	Close() error
}] struct {
	*Node
	Broker B
}

// NewBrokerNode starts a Node on b, with the Hub's default options, and
// closes b when t ends, after the Hub.
func NewBrokerNode[B interface {
	live.Broker
	Close() error
}](t testing.TB, b B) *BrokerNode[B] {
	t.Helper()
	CloseAtEnd(t, b)
	return &BrokerNode[B]{Node: NewNode(t, b, nil), Broker: b}
}

// Publish publishes data through the node's Hub, failing t if it cannot.
func (n *Node) Publish(t testing.TB, channel, data string) live.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	pos, err := n.Hub.Publish(ctx, channel, json.RawMessage(data))
	if err != nil {
		t.Fatalf("Hub.Publish(%q, %.40s): %v", channel, data, err)
	}
	return pos
}
