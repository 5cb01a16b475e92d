package outbox_test

import (
	"context"
	"database/sql"
	"log"
	"net/http"
	"strconv"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
)

// An application publishes in its own transaction; a relay on every node
// delivers what commits.
func Example() {
	ctx := context.Background()
	db, err := sql.Open("pgx", "postgres://localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	hub := live.NewHub(nil)
	ob, err := outbox.New(db, outbox.Postgres, outbox.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	go ob.NewRelay(hub, outbox.RelayOptions{}).Run(ctx)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE todos SET done = true WHERE id = $1`, 42); err != nil {
		log.Fatal(err)
	}
	if _, err := ob.Publish(ctx, tx, "todos", map[string]any{"type": "update", "item": map[string]any{"id": 42, "done": true}}); err != nil {
		log.Fatal(err)
	}
	if err := ob.Commit(tx); err != nil {
		log.Fatal(err)
	}
}

// Outbox.Hook runs each mutating request in a transaction that the
// handler finds in its context, and commits its event with its writes.
func ExampleOutbox_Hook() {
	var ob *outbox.Outbox
	var hub *live.Hub
	todos := ob.Hook(hub, live.HookOptions{
		Channel: func(*http.Request) string { return "todos" },
	}, nil)
	http.Handle("POST /api/todos", todos(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx, _ := outbox.TxFromContext(r.Context())
		var id int64
		if err := tx.QueryRowContext(r.Context(), `INSERT INTO todos (title) VALUES ($1) RETURNING id`, r.FormValue("title")).Scan(&id); err != nil {
			http.Error(w, "could not add", http.StatusInternalServerError) // rolled back
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":` + strconv.FormatInt(id, 10) + `}`)) // published as {"type":"add","item":…} on commit
	})))
}
