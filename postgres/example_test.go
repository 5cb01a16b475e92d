package pgbroker_test

import (
	"context"
	"encoding/json"
	"log"
	"net/http"

	"github.com/go-live/live"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Every process of the application opens a broker on the same database
// and gives it to its Hub; a client may then resume on any of them.
func ExampleOpen() {
	b, err := pgbroker.Open("postgres://app@localhost:5432/app", nil)
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

// A handler that changes the database publishes in the same transaction,
// so that clients hear of the change if and only if it commits. The Hubs
// whose brokers share the database deliver it.
func ExampleBroker_PublishTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@localhost:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	b := pgbroker.New(pool, nil)
	defer b.Close() // after the Hub, before the pool
	hub := live.NewHub(&live.Options{Broker: b})
	defer hub.Close(ctx)

	addTodo := func(ctx context.Context, id, title string) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO todos (id, title) VALUES ($1, $2)", id, title); err != nil {
				return err
			}
			event, err := json.Marshal(map[string]any{"type": "add", "item": map[string]string{"id": id, "title": title}})
			if err != nil {
				return err
			}
			_, err = b.PublishTx(ctx, tx, "todos", event)
			return err // BeginFunc commits if nil, else rolls back
		})
	}
	if err := addTodo(ctx, "t1", "Write the report"); err != nil {
		log.Print(err)
	}
}
