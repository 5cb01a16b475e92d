package outbox_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
)

// Outbox.Hook runs a handler in a transaction and publishes its event in
// that transaction: a 2xx commits both, a failure to publish answers 500
// and commits neither, a 4xx rolls back.
func TestHook(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		ctx := context.Background()
		items := ob.Table() + "_items"
		if _, err := db.ExecContext(ctx, `CREATE TABLE `+items+` (id varchar(20) PRIMARY KEY, title varchar(100))`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Exec(`DROP TABLE ` + items) })
		b := live.NewMemoryBroker(nil)
		hub := live.NewHub(&live.Options{Broker: b, Logger: quietLogger(t)})
		t.Cleanup(func() { hub.Close(context.Background()) })
		s := subscribe(t, b, "items")
		runRelay(t, ob, hub, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 50 * time.Millisecond})

		hook := ob.Hook(hub, live.HookOptions{
			Channel: func(r *http.Request) string { return r.URL.Query().Get("channel") },
		}, nil)
		ph := placeholder(d.dialect)
		srv := httptest.NewServer(hook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tx, ok := outbox.TxFromContext(r.Context())
			if !ok {
				http.Error(w, "no transaction", http.StatusInternalServerError)
				return
			}
			var item struct{ ID, Title string }
			json.NewDecoder(r.Body).Decode(&item)
			if _, err := tx.ExecContext(r.Context(), `INSERT INTO `+items+` (id, title) VALUES (`+ph(1)+`, `+ph(2)+`)`, item.ID, item.Title); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if item.Title == "" {
				w.WriteHeader(http.StatusUnprocessableEntity)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(item)
		})))
		t.Cleanup(srv.Close)
		post := func(channel, body string) (int, string) {
			resp, err := http.Post(srv.URL+"/items?channel="+channel, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		exists := func(id string) bool {
			var n int
			db.QueryRowContext(ctx, `SELECT count(*) FROM `+items+` WHERE id = `+ph(1), id).Scan(&n)
			return n == 1
		}

		if status, body := post("items", `{"ID":"1","Title":"a"}`); status != http.StatusCreated {
			t.Fatalf("POST = %d %s", status, body)
		}
		if !exists("1") {
			t.Fatal("the committed item is not in the table")
		}
		msgs := s.wait(t, 1, 10*time.Second)
		var u live.ListUpdate
		if err := json.Unmarshal(msgs[0].Data, &u); err != nil || u.Type != "add" || !strings.Contains(string(u.Item), `"Title":"a"`) {
			t.Fatalf("published %s, want the added item", msgs[0].Data)
		}
		// An event that cannot be recorded: nothing commits.
		if status, body := post("bad%20channel!", `{"ID":"2","Title":"b"}`); status != http.StatusInternalServerError || !strings.Contains(body, "publish_failed") {
			t.Fatalf("POST with an unpublishable event = %d %s, want 500 publish_failed", status, body)
		}
		if exists("2") {
			t.Fatal("the item of a request whose publication failed was committed")
		}
		// A 4xx rolls back.
		if status, _ := post("items", `{"ID":"3"}`); status != http.StatusUnprocessableEntity {
			t.Fatalf("POST = %d, want 422", status)
		}
		if exists("3") {
			t.Fatal("the item of a 422 was committed")
		}
		if status, _ := post("items", `{"ID":"4","Title":"d"}`); status != http.StatusCreated {
			t.Fatalf("POST = %d", status)
		}
		msgs = s.wait(t, 2, 10*time.Second)
		if len(msgs) != 2 || !strings.Contains(string(msgs[1].Data), `"d"`) {
			t.Fatalf("deliveries %d, the second %s", len(msgs), msgs[len(msgs)-1].Data)
		}
	})
}

// placeholder returns the dialect's n-th bind parameter.
func placeholder(d outbox.Dialect) func(n int) string {
	if d == outbox.Postgres {
		return func(n int) string { return "$" + string(rune('0'+n)) }
	}
	return func(int) string { return "?" }
}
