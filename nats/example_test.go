package natsbroker_test

import (
	"context"
	"log"
	"net/http"

	"github.com/go-live/live"
	natsbroker "github.com/go-live/live/nats"
)

// Every process of the application opens a broker on the same NATS system
// and gives it to its Hub; a client may then resume on any of them.
func ExampleOpen() {
	b, err := natsbroker.Open("nats://localhost:4222", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close() // after the Hub

	hub := live.NewHub(&live.Options{Broker: b})
	defer hub.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
	mux.Handle("/ws", hub.WebSocketHandler())

	// Subscribers on every process receive it.
	if _, err := hub.Publish(context.Background(), "todos", map[string]string{"type": "add"}); err != nil {
		log.Print(err)
	}
}
