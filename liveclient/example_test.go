package liveclient_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/go-live/live"
	"github.com/go-live/live/liveclient"
)

// Follow a channel from a Go service: typed messages, resumed by cursor
// after any disconnection, with a reset when the hub cannot replay.
func ExampleClient_Follow() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	srv := httptest.NewServer(hub)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	c := liveclient.New("ws"+strings.TrimPrefix(srv.URL, "http")+"/", &liveclient.Options{
		OnState: func(state string, _ int) {
			if state == "connected" { // subscribed: publish now
				hub.Publish(ctx, "orders", map[string]any{"id": 7, "total": 42.5})
			}
		},
	})
	type order struct {
		ID    int
		Total float64
	}
	c.Follow(ctx, []string{"orders"}, func(m liveclient.Message) error {
		o, err := liveclient.Decode[order](m)
		fmt.Println(o.ID, o.Total, err)
		cancel() // one is enough for the example
		return nil
	})
	// Output:
	// 7 42.5 <nil>
}
