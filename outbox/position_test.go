package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
)

// A page that reads Head in the transaction that reads its data follows
// on from exactly there: the broker position Position returns for it is
// the one after which come exactly the later publications.
func TestHeadAndPosition(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		ctx := context.Background()
		b := live.NewMemoryBroker(nil)
		runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond})

		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if head, err := ob.Head(ctx, tx, "todos"); err != nil || head != 0 {
			t.Fatalf("Head before any publication = %d, %v", head, err)
		}
		tx.Rollback()
		if _, ok, err := ob.Position(ctx, "todos", 0); ok || err != nil {
			t.Fatalf("Position(0) = %v, %v; want not ok", ok, err)
		}

		for i := 1; i <= 3; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		// The page's read.
		tx, err = db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		head, err := ob.Head(ctx, tx, "todos")
		if err != nil || head != 3 {
			t.Fatalf("Head = %d, %v; want 3", head, err)
		}
		tx.Commit()
		for i := 4; i <= 5; i++ {
			publishTx(t, db, ob, "todos", map[string]int{"i": i})
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		pos, ok, err := ob.Position(wctx, "todos", head)
		if err != nil || !ok {
			t.Fatalf("Position(%d) = %v, %v, %v", head, pos, ok, err)
		}
		// Wait for the rest to be delivered, then read what follows pos.
		if _, ok, err := ob.Position(wctx, "todos", 5); err != nil || !ok {
			t.Fatalf("Position(5): %v %v", ok, err)
		}
		msgs, err := b.Since(ctx, "todos", pos)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 2 {
			t.Fatalf("%d publications after the page's position, want 2", len(msgs))
		}
		for k, m := range msgs {
			var v struct{ I int }
			json.Unmarshal(m.Data, &v)
			if v.I != 4+k {
				t.Fatalf("after the page: %s, want {\"i\":%d}", m.Data, 4+k)
			}
		}
	})
}
