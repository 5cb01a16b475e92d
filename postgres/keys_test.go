package pgbroker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
)

// at returns the position n after pos.
func at(pos live.Position, n int) live.Position {
	return live.Position{Epoch: pos.Epoch, Seq: pos.Seq + uint64(n)}
}

// awaitLockWait waits until a session other than pool's waits for a lock
// in a statement that contains fragment, failing t if done is closed or
// receives first.
func awaitLockWait[T any](t *testing.T, pool *pgxpool.Pool, fragment string, done <-chan T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), servertest.Timeout)
	defer cancel()
	for waiting := 0; waiting == 0; {
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()`, fragment).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			t.Fatalf("returned %v before the lock was released", r)
		default:
		}
	}
}

// PublishTx honours idempotency keys as Publish does: under a key a
// committed publication took on the channel it returns that position and
// stores and delivers nothing; a rolled back publication gives its key
// back with its number; and a Publish under a key that an open
// transaction took waits for it, answering with that transaction's
// position if it commits and publishing if it rolls back.
func TestPublishTxKey(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, nil)
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	// inTx publishes data under key in a transaction of its own, which
	// commits if commit is true and rolls back if not.
	inTx := func(key, data string, commit bool) live.Position {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		pos, err := b.PublishTx(live.WithPublishKey(ctx, key), tx, channel, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return pos
	}
	var want []live.Message
	first := inTx("a", `"first"`, true)
	want = append(want, live.Message{Channel: channel, Pos: first, Data: []byte(`"first"`)})
	if first != at(head, 1) {
		t.Errorf("PublishTx under a = %v, want %v", first, at(head, 1))
	}
	if pos := inTx("a", `"again"`, true); pos != first {
		t.Errorf("PublishTx under a again = %v, want %v, where a was taken", pos, first)
	}
	if pos := servertest.Publish(t, b, channel, `"plain"`); pos != at(head, 2) {
		t.Errorf("Publish after a taken key = %v, want %v: the repeat took no number", pos, at(head, 2))
	} else {
		want = append(want, live.Message{Channel: channel, Pos: pos, Data: []byte(`"plain"`)})
	}

	if pos := inTx("r", `"rolled back"`, false); pos != at(head, 3) {
		t.Errorf("PublishTx under r = %v, want %v", pos, at(head, 3))
	}
	pos, err := b.Publish(live.WithPublishKey(ctx, "r"), channel, []byte(`"r"`))
	if err != nil || pos != at(head, 3) {
		t.Errorf("Publish under r after its transaction rolled back = %v, %v; want %v", pos, err, at(head, 3))
	} else {
		want = append(want, live.Message{Channel: channel, Pos: pos, Data: []byte(`"r"`)})
	}

	next := 4
	for _, commit := range []bool{true, false} {
		key := fmt.Sprintf("open-%t", commit)
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inOpen, err := b.PublishTx(live.WithPublishKey(ctx, key), tx, channel, []byte(`"in the transaction"`))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			pos live.Position
			err error
		}
		done := make(chan result, 1)
		go func() {
			pos, err := b.Publish(live.WithPublishKey(ctx, key), channel, []byte(`"beside it"`))
			done <- result{pos, err}
		}()
		awaitLockWait(t, pool, schema+".publish(", done)
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || r.pos != at(head, next) || inOpen != r.pos {
			t.Errorf("Publish under %s behind a transaction that took it at %v (commit %t) = %v, %v; want %v", key, inOpen, commit, r.pos, r.err, at(head, next))
			continue
		}
		data := `"beside it"`
		if commit {
			data = `"in the transaction"`
		}
		want = append(want, live.Message{Channel: channel, Pos: r.pos, Data: []byte(data)})
		next++
	}

	got := w.NextN(t, len(want))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	msgs, err := b.Since(ctx, channel, head)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("Since(%v) (-want +got):\n%s", head, diff)
	}
	if extra := w.Pending(); len(extra) > 0 {
		t.Errorf("also delivered %v", extra)
	}
}

// PublishIf under a key a publication on the channel has answers with
// that publication's position, whatever the head it names, and takes
// nothing; under a new key it is conditional as without one.
func TestPublishIfKey(t *testing.T) {
	url := pgURL(t)
	b, _, _ := newBroker(t, url, nil)
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	keyed := func(key string) context.Context { return live.WithPublishKey(ctx, key) }
	first, err := b.PublishIf(keyed("k"), channel, live.Position{}, []byte(`1`))
	if !errors.Is(err, live.ErrConflict) {
		t.Fatalf("PublishIf on a channel without a row = %v, %v; want ErrConflict", first, err)
	}
	head := servertest.Publish(t, b, channel, `0`)
	first, err = b.PublishIf(keyed("k"), channel, head, []byte(`1`))
	if err != nil || first != at(head, 1) {
		t.Fatalf("PublishIf(%v) under k = %v, %v; want %v", head, first, err, at(head, 1))
	}
	for _, h := range []live.Position{head, first, {Epoch: "other", Seq: 9}} {
		if pos, err := b.PublishIf(keyed("k"), channel, h, []byte(`2`)); err != nil || pos != first {
			t.Errorf("PublishIf(%v) under k again = %v, %v; want %v, where k was taken", h, pos, err, first)
		}
	}
	if pos, err := b.PublishIf(keyed("j"), channel, head, []byte(`3`)); !errors.Is(err, live.ErrConflict) {
		t.Errorf("PublishIf(%v) under a new key = %v, %v; want ErrConflict", head, pos, err)
	}
	if pos, err := b.PublishIf(keyed("j"), channel, first, []byte(`3`)); err != nil || pos != at(head, 2) {
		t.Errorf("PublishIf(%v) under a new key = %v, %v; want %v", first, pos, err, at(head, 2))
	}
	msgs, err := b.Since(ctx, channel, head)
	if err != nil {
		t.Fatal(err)
	}
	want := []live.Message{
		{Channel: channel, Pos: first, Data: []byte(`1`)},
		{Channel: channel, Pos: at(head, 2), Data: []byte(`3`)},
	}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("Since(%v) (-want +got):\n%s", head, diff)
	}
}

// A key is kept with its publication's row: while the row is in the
// history a publication under it takes nothing; once HistorySize later
// publications trimmed the row, the key is free again.
func TestKeysTrimmed(t *testing.T) {
	url := pgURL(t)
	const size = 4
	b, pool, schema := newBroker(t, url, &pgbroker.Options{HistorySize: size})
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	publishK := func() live.Position {
		t.Helper()
		pos, err := b.Publish(live.WithPublishKey(ctx, "k"), channel, []byte(`"k"`))
		if err != nil {
			t.Fatal(err)
		}
		return pos
	}
	first := publishK()
	for i := range size - 1 {
		servertest.Publish(t, b, channel, fmt.Sprint(i))
	}
	if pos := publishK(); pos != first {
		t.Errorf("under k with its publication the oldest in history = %v, want %v", pos, first)
	}
	servertest.Publish(t, b, channel, `"pushes k out"`)
	if pos := publishK(); pos != at(first, size+1) {
		t.Errorf("under k after its publication was trimmed = %v, want %v", pos, at(first, size+1))
	}
	rows, _ := pool.Query(ctx, "SELECT seq FROM "+schema+".messages WHERE channel = $1 AND key = 'k'", channel)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int64{int64(first.Seq) + size + 1}, keys); diff != "" {
		t.Errorf("rows under k (-want +got):\n%s", diff)
	}
}

// A database whose messages table predates idempotency keys gains the
// column and its index when brokers of this version start on it, two at
// once, keeping its rows; and a broker that finds them takes no lock on
// the table for it, so it starts while an application's transaction has
// published.
func TestSchemaGainsKeys(t *testing.T) {
	url := pgURL(t)
	pool := newPool(t, url)
	schema := testSchema(t, pool)
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	// The tables as the version before keys made them, with two
	// publications.
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+schema+`;
CREATE TABLE `+schema+`.channels (
	name    text PRIMARY KEY,
	epoch   text NOT NULL,
	seq     bigint NOT NULL,
	touched timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE `+schema+`.messages (
	channel text NOT NULL,
	seq     bigint NOT NULL,
	data    bytea NOT NULL,
	at      timestamptz NOT NULL,
	meta    bytea,
	PRIMARY KEY (channel, seq)
)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `WITH c AS (INSERT INTO `+schema+`.channels (name, epoch, seq) VALUES ($1, 'oldepoch', 2))
INSERT INTO `+schema+`.messages (channel, seq, data, at) VALUES ($1, 1, '"one"', now()), ($1, 2, '"two"', now())`, channel); err != nil {
		t.Fatal(err)
	}
	old := live.Position{Epoch: "oldepoch", Seq: 2}

	brokers := make([]*pgbroker.Broker, 2)
	for i := range brokers {
		brokers[i], _, _ = newBroker(t, url, &pgbroker.Options{Schema: schema})
	}
	got := make([]live.Position, len(brokers))
	g, gctx := errgroup.WithContext(ctx)
	for i, b := range brokers {
		g.Go(func() error {
			pos, err := b.Publish(live.WithPublishKey(gctx, "k"), channel, []byte(fmt.Sprintf(`"three from %d"`, i)))
			got[i] = pos
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got[0] != at(old, 1) || got[1] != got[0] {
		t.Errorf("two brokers publishing under one key as they start = %v; want %v for both", got, at(old, 1))
	}
	msgs, err := brokers[0].Since(ctx, channel, live.Position{Epoch: old.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	for _, m := range msgs {
		data = append(data, string(m.Data))
	}
	if len(data) != 3 || data[0] != `"one"` || data[1] != `"two"` || !strings.HasPrefix(data[2], `"three from `) {
		t.Errorf("history after the upgrade = %q; want the two old publications and one under k", data)
	}
	var def string
	if err := pool.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'messages_key'`, schema).Scan(&def); err != nil {
		t.Fatalf("the index of keys: %v", err)
	}
	if !strings.Contains(def, "UNIQUE") || !strings.Contains(def, "(channel, key)") || !strings.Contains(def, "key IS NOT NULL") {
		t.Errorf("the index of keys is %s; want it unique on (channel, key) where key is not null", def)
	}

	// An application's transaction holds the messages table (ROW
	// EXCLUSIVE) while a third broker starts: ALTER TABLE or CREATE INDEX
	// would wait for it.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := brokers[0].PublishTx(ctx, tx, channel, []byte(`"open"`)); err != nil {
		t.Fatal(err)
	}
	third, _, _ := newBroker(t, url, &pgbroker.Options{Schema: schema})
	other := channel + "-other"
	pctx, cancel := context.WithTimeout(ctx, servertest.Timeout)
	defer cancel()
	if pos, err := third.Publish(live.WithPublishKey(pctx, "k"), other, []byte(`1`)); err != nil || pos.Seq != 1 {
		t.Errorf("a broker starting beside an open transaction: Publish = %v, %v; want Seq 1", pos, err)
	}
}
