package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/outbox"
	"github.com/jackc/pgx/v5"
)

// Publications made in SQL, by a trigger and by hand, reach subscribers
// through the same outbox, in order with those made in Go.
func TestPublishFromSQL(t *testing.T) {
	forEach(t, func(t *testing.T, d database) {
		db, ob := open(t, d)
		ctx := context.Background()
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "items")
		runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond})
		items := ob.Table() + "_items"
		tb := ob.Table()
		var stmts []string
		switch d.dialect {
		case outbox.Postgres:
			stmts = []string{
				`CREATE TABLE ` + items + ` (id int PRIMARY KEY, i int)`,
				`CREATE FUNCTION ` + items + `_changed() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN
					PERFORM ` + tb + `_publish('items', json_build_object('i', NEW.i));
					RETURN NEW;
				END $$`,
				`CREATE TRIGGER ` + items + `_changed AFTER INSERT ON ` + items + ` FOR EACH ROW EXECUTE FUNCTION ` + items + `_changed()`,
				`INSERT INTO ` + items + ` VALUES (1, 1)`,
				`SELECT ` + tb + `_publish('items', '{"i":2}')`,
			}
			t.Cleanup(func() {
				db.Exec(`DROP TABLE ` + items)
				db.Exec(`DROP FUNCTION ` + items + `_changed()`)
			})
		case outbox.MySQL:
			stmts = []string{
				`CREATE TABLE ` + items + ` (id int PRIMARY KEY, i int)`,
				`CREATE TRIGGER ` + items + `_changed AFTER INSERT ON ` + items + ` FOR EACH ROW CALL ` + tb + `_publish('items', JSON_OBJECT('i', NEW.i))`,
				`INSERT INTO ` + items + ` VALUES (1, 1)`,
				`CALL ` + tb + `_publish('items', '{"i":2}')`,
			}
			t.Cleanup(func() {
				db.Exec(`DROP TABLE ` + items)
				db.Exec(`DROP PROCEDURE ` + tb + `_publish`)
			})
		case outbox.SQLite:
			stmts = []string{
				`CREATE TABLE ` + items + ` (id int PRIMARY KEY, i int)`,
				`CREATE TRIGGER ` + items + `_changed AFTER INSERT ON ` + items + ` BEGIN
					INSERT INTO ` + tb + `_channels (channel, seq) VALUES ('items', 1) ON CONFLICT (channel) DO UPDATE SET seq = seq + 1;
					INSERT INTO ` + tb + ` (channel, seq, data) SELECT 'items', seq, json_object('i', NEW.i) FROM ` + tb + `_channels WHERE channel = 'items';
				END`,
				`INSERT INTO ` + items + ` VALUES (1, 1)`,
			}
		}
		for _, s := range stmts {
			if _, err := db.ExecContext(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if d.dialect == outbox.SQLite {
			// The documented pair of statements, by hand.
			tx, _ := db.BeginTx(ctx, nil)
			tx.ExecContext(ctx, `INSERT INTO `+tb+`_channels (channel, seq) VALUES ('items', 1) ON CONFLICT (channel) DO UPDATE SET seq = seq + 1`)
			if _, err := tx.ExecContext(ctx, `INSERT INTO `+tb+` (channel, seq, data) SELECT 'items', seq, '{"i":2}' FROM `+tb+`_channels WHERE channel = 'items'`); err != nil {
				t.Fatal(err)
			}
			tx.Commit()
		}
		if seq := publishTx(t, db, ob, "items", map[string]int{"i": 3}); seq != 3 {
			t.Fatalf("Publish after two from SQL = %d, want 3", seq)
		}
		checkOnceInOrder(t, s.wait(t, 3, 10*time.Second), 3)
	})
}

// pgxListen is a RelayOptions.Listen for PostgreSQL through pgx.
func pgxListen(url string) func(ctx context.Context, name string, wake func()) error {
	return func(ctx context.Context, name string, wake func()) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{name}.Sanitize()); err != nil {
			return err
		}
		wake() // anything committed before the LISTEN
		for {
			if _, err := conn.WaitForNotification(ctx); err != nil {
				return err
			}
			wake()
		}
	}
}

// On PostgreSQL, NOTIFY at commit wakes the relay: a publication made by
// another process (no Commit to poke the relay) is delivered at once,
// though the relay polls only every 5 seconds; and pgx's transactions
// publish with PublishPgx.
func TestNotifyAndPgx(t *testing.T) {
	for _, d := range databases(t) {
		if d.dialect != outbox.Postgres {
			continue
		}
		_, ob := open(t, d)
		ctx := context.Background()
		b := live.NewMemoryBroker(nil)
		s := subscribe(t, b, "todos")
		r, _ := runRelay(t, ob, &brokerPub{b: b}, outbox.RelayOptions{PollMin: 5 * time.Second, PollMax: 10 * time.Second, Listen: pgxListen(d.dsn)})
		waitUntil(t, 10*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })

		conn, err := pgx.Connect(ctx, d.dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for i := 1; i <= 3; i++ {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := outbox.PublishPgx(ctx, ob, tx, "todos", map[string]int{"i": i}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			s.wait(t, i, 3*time.Second)
			t.Logf("commit to delivery: %v", time.Since(start))
		}
		checkOnceInOrder(t, s.wait(t, 3, time.Second), 3)
		return
	}
	t.Skip("needs LIVE_POSTGRES_URL")
}
