package redisbroker_test

import (
	"context"
	"log"
	"net/http"

	"github.com/go-live/live"
	redisbroker "github.com/go-live/live/redis"
)

// Every process of the application opens a broker on the same Redis
// database and gives it to its Hub; a client may then resume on any of
// them.
func ExampleOpen() {
	b, err := redisbroker.Open("redis://localhost:6379/0", nil)
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
