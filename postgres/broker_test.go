package pgbroker_test

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
	pgbroker "github.com/go-live/live/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestConformance(t *testing.T) {
	url := pgURL(t)
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			pool := newPool(t, url)
			return pgbroker.New(pool, &pgbroker.Options{HistorySize: 64, Schema: testSchema(t, pool), Logger: servertest.Logger(t)})
		},
		HistorySize: 64,
	})
}

// Processes of one application, each with its own Hub and pool, share
// the numbering, and a client resumes on any of them with exactly what it
// missed, or a reset when that is older than the history or was lost with
// the tables.
func TestNodes(t *testing.T) {
	url := pgURL(t)
	pool := newPool(t, url)
	schema := testSchema(t, pool)
	brokertest.RunNodes(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			return pgbroker.New(newPool(t, url), &pgbroker.Options{HistorySize: 16, Schema: schema, Logger: servertest.Logger(t)})
		},
		HistorySize: 16,
		LoseData: func(t *testing.T) {
			if err := dropSchema(pool, schema); err != nil {
				t.Fatal(err)
			}
		},
		Cut: func(t *testing.T) (live.Broker, func()) {
			p := servertest.NewProxy(t, servertest.HostOf(t, url))
			return pgbroker.New(newPool(t, servertest.ViaProxy(t, url, p)), &pgbroker.Options{HistorySize: 16, Schema: schema, Logger: servertest.Logger(t)}), p.Cut
		},
	})
}

// The tables are documented, because operators look at them: a row per
// channel with its epoch and latest Seq, and the history trimmed to
// exactly HistorySize rows keyed by Seq.
func TestTables(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, &pgbroker.Options{HistorySize: 8})
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	var last live.Position
	for i := range 10 {
		last = servertest.Publish(t, b, channel, fmt.Sprint(i))
	}
	var epoch string
	var seq int64
	if err := pool.QueryRow(ctx, "SELECT epoch, seq FROM "+schema+".channels WHERE name = $1", channel).Scan(&epoch, &seq); err != nil {
		t.Fatal(err)
	}
	if epoch != last.Epoch || seq != 10 {
		t.Errorf("channels row = %s, %d; want %s, 10", epoch, seq, last.Epoch)
	}
	rows, _ := pool.Query(ctx, "SELECT seq, convert_from(data, 'UTF8') FROM "+schema+".messages WHERE channel = $1 ORDER BY seq", channel)
	type row struct {
		Seq  int64
		Data string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	var want []row
	for i := 3; i <= 10; i++ {
		want = append(want, row{int64(i), fmt.Sprint(i - 1)})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

// Publications around NOTIFY's 8000-byte limit, ASCII or not, arrive
// intact: those that do not fit are read from the table.
func TestLargePublications(t *testing.T) {
	url := pgURL(t)
	b, _, _ := newBroker(t, url, nil)
	channel := servertest.ChannelName(t)
	w := servertest.Watch(t, b, channel)
	w.Ready(t)
	var want []live.Message
	for _, n := range []int{7800, 7900, 7990, 8000, 8100, 20000, 1 << 20} {
		for _, unit := range []string{"x", "é", "€", "𝄞"} {
			data := `"` + strings.Repeat(unit, n/len(unit)) + `"`
			want = append(want, live.Message{Channel: channel, Pos: servertest.Publish(t, b, channel, data), Data: []byte(data)})
		}
	}
	var got []live.Message
	for range want {
		got = append(got, w.Next(t))
	}
	if diff := cmp.Diff(want, got, cmp.Transformer("string", func(d json.RawMessage) string { return string(d) })); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// A conditional publication waits for an application's transaction that
// holds the channel's row lock: it takes nothing if that transaction
// commits a publication, and is taken at the head it expects if the
// transaction rolls back.
func TestPublishIfAfterTransaction(t *testing.T) {
	url := pgURL(t)
	b, pool, _ := newBroker(t, url, nil)
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	head := servertest.Publish(t, b, channel, `"first"`)
	for _, commit := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.PublishTx(ctx, tx, channel, []byte(`"in a transaction"`)); err != nil {
			t.Fatal(err)
		}
		type result struct {
			pos live.Position
			err error
		}
		done := make(chan result, 1)
		go func() {
			pos, err := b.PublishIf(ctx, channel, head, []byte(`"conditional"`))
			done <- result{pos, err}
		}()
		// Wait until the conditional publication waits for the row lock.
		wait, cancel := context.WithTimeout(ctx, servertest.Timeout)
		for waiting := 0; waiting == 0; {
			err := pool.QueryRow(wait, `SELECT count(*) FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%publish_if%' AND pid <> pg_backend_pid()`).Scan(&waiting)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				t.Fatalf("PublishIf returned %v, %v while the transaction held the channel", r.pos, r.err)
			default:
			}
		}
		cancel()
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		r := <-done
		switch {
		case commit && !errors.Is(r.err, live.ErrConflict):
			t.Errorf("PublishIf(%v) behind a committed publication = %v, %v; want ErrConflict", head, r.pos, r.err)
		case !commit && (r.err != nil || r.pos != (live.Position{Epoch: head.Epoch, Seq: head.Seq + 1})):
			t.Errorf("PublishIf(%v) behind a rolled back publication = %v, %v; want the position after it", head, r.pos, r.err)
		case !commit:
			head = r.pos
		}
	}
}

// PublishTx publishes in the application's transaction: subscribers and
// history see the publication once the transaction commits, never if it
// rolls back, and a rollback gives its number back.
func TestPublishTx(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, nil)
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	first := servertest.Publish(t, b, channel, `"first"`) // creates the schema
	if _, err := pool.Exec(ctx, "CREATE TABLE "+schema+".todos (id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := servertest.Watch(t, b, channel)
	w.Ready(t)

	// Rolled back: nothing is delivered, nothing is kept, the number is
	// reused.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".todos VALUES ('a')"); err != nil {
		t.Fatal(err)
	}
	rolledBack, err := b.PublishTx(ctx, tx, channel, []byte(`{"add": "a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if rolledBack.Seq != first.Seq+1 || rolledBack.Epoch != first.Epoch {
		t.Errorf("PublishTx = %v, want the position after %v", rolledBack, first)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// Committed: delivered in the number given back, data compacted.
	tx, err = pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".todos VALUES ('b')"); err != nil {
		t.Fatal(err)
	}
	committed, err := b.PublishTx(ctx, tx, channel, []byte(`{"add": "b"}`))
	if err != nil {
		t.Fatal(err)
	}
	// Not visible to others before the commit.
	if msgs, err := b.Since(ctx, channel, first); err != nil || len(msgs) != 0 {
		t.Errorf("Since(%v) before the commit = %v, %v; want nothing", first, msgs, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want := live.Message{Channel: channel, Pos: live.Position{Epoch: first.Epoch, Seq: first.Seq + 1}, Data: []byte(`{"add":"b"}`)}
	if committed != want.Pos {
		t.Errorf("PublishTx = %v, want %v: the rolled back publication gives its number back", committed, want.Pos)
	}
	if diff := cmp.Diff(want, w.Next(t)); diff != "" {
		t.Errorf("delivery (-want +got):\n%s", diff)
	}
	msgs, err := b.Since(ctx, channel, first)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]live.Message{want}, msgs); diff != "" {
		t.Errorf("Since(%v) (-want +got):\n%s", first, diff)
	}
	if extra := w.Pending(); len(extra) > 0 {
		t.Errorf("also delivered %v", extra)
	}

	for _, bad := range []string{`{"a":`, `nope`, "\"\xff\""} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pos, err := b.PublishTx(ctx, tx, channel, []byte(bad)); err == nil {
			t.Errorf("PublishTx(%q) = %v, nil; want an error", bad, pos)
		}
		tx.Rollback(ctx)
	}
}

// HistoryAge drops publications by the database's clock, in Since at once
// and from the table on the next publication.
func TestHistoryAge(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, &pgbroker.Options{HistoryAge: 50 * time.Millisecond})
	channel := servertest.ChannelName(t)
	first := servertest.Publish(t, b, channel, `1`)
	servertest.Publish(t, b, channel, `2`)
	// Gone from Seq 1 on means that both have expired.
	start := live.Position{Epoch: first.Epoch, Seq: 1}

	servertest.AwaitGone(t, b, channel, start)
	third := servertest.Publish(t, b, channel, `3`)
	got, err := b.Since(t.Context(), channel, live.Position{Epoch: first.Epoch, Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]live.Message{{Channel: channel, Pos: third, Data: []byte(`3`)}}, got); diff != "" {
		t.Errorf("Since the last expired publication (-want +got):\n%s", diff)
	}
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM "+schema+".messages WHERE channel = $1", channel).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("the table holds %d messages after expiry, want 1", n)
	}
}

// The sweeper deletes the history of channels nobody publishes on.
func TestIdleChannelsSwept(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, &pgbroker.Options{HistoryAge: 100 * time.Millisecond})
	channel := servertest.ChannelName(t)
	servertest.Publish(t, b, channel, `1`)
	deadline := time.Now().Add(waitTimeout)
	for {
		var n int
		if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM "+schema+".messages WHERE channel = $1", channel).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the history of an idle channel is still in the table")
		}
		time.Sleep(50 * time.Millisecond) // waiting for the sweeper, which runs every second here
	}
}

// Announcements out of turn end the subscription instead of being
// skipped: the Hub then catches up from history or resets its clients.
func TestAnnouncementsOutOfTurn(t *testing.T) {
	url := pgURL(t)
	for _, tt := range []struct {
		name, announce, want string // announce: the payload after the channel, with %s for the epoch
	}{
		{"Gap", "%s 3 d3", "missing"},
		{"OtherEpoch", "x%s 2 d2", "epoch changed"},
		{"Malformed", "%s two d2", "malformed"},
		{"Unreadable", "%s 2 r", "not in the table"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, pool, schema := newBroker(t, url, nil)
			channel := servertest.ChannelName(t)
			head := servertest.Publish(t, b, channel, `1`)
			w := servertest.Watch(t, b, channel)
			w.Ready(t)
			// A stale repeat is ignored; the next one is out of turn.
			notify := schema + ":" + notifyHash(channel)
			for _, payload := range []string{head.Epoch + " 1 d1", fmt.Sprintf(tt.announce, head.Epoch)} {
				if _, err := pool.Exec(t.Context(), "SELECT pg_notify($1, $2)", notify, channel+" "+payload); err != nil {
					t.Fatal(err)
				}
			}
			w.ExpectFailed(t, tt.want)
		})
	}
}

// notifyHash is the documented NOTIFY channel suffix of channel.
func notifyHash(channel string) string {
	sum := sha256.Sum256([]byte(channel))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:15]))
}

// listenerPID returns the backend of the broker's listening connection,
// which is named after its schema.
func listenerPID(t testing.TB, pool *pgxpool.Pool, schema string) int {
	t.Helper()
	rows, _ := pool.Query(t.Context(), "SELECT pid FROM pg_stat_activity WHERE application_name = $1", "live-listener:"+schema)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 1 {
		t.Fatalf("found %d listening connections for schema %s, want 1", len(pids), schema)
	}
	return pids[0]
}

// A killed listening connection ends every subscription; subscribing
// again and reading history covers what was published meanwhile.
func TestListenerKilled(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, nil)
	channel := servertest.ChannelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)

	var ok bool
	if err := pool.QueryRow(t.Context(), "SELECT pg_terminate_backend($1)", listenerPID(t, pool, schema)).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v, %v", ok, err)
	}
	missed := servertest.Publish(t, b, channel, `"while disconnected"`)
	if err := w.Failure(t, waitTimeout); !strings.Contains(err.Error(), "listening connection") {
		t.Errorf("Subscribe = %v, want an error about the connection", err)
	}

	// As the Hub does: subscribe again, catch up from history.
	servertest.CatchUp(t, b, channel, head, missed)
	if st := b.Stats(); st.Listens != 2 || st.Failures != 1 || st.Stalls != 0 {
		t.Errorf("Stats = %+v, want 2 listens and 1 failure", st)
	}
}

func TestOpen(t *testing.T) {
	url := pgURL(t)
	pool := newPool(t, url)
	schema := testSchema(t, pool)
	b, err := pgbroker.Open(url, &pgbroker.Options{Schema: schema, Logger: servertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	channel := servertest.ChannelName(t)
	pos := servertest.Publish(t, b, channel, `1`)
	if got, err := b.Since(t.Context(), channel, live.Position{Epoch: pos.Epoch}); err != nil || len(got) != 1 {
		t.Errorf("Since = %v, %v", got, err)
	}
	servertest.ExpectClosed(t, b, channel)

	if _, err := pgbroker.Open("mysql://example.com", nil); err == nil {
		t.Error("Open with a mysql URL succeeded")
	}
}

// A pool passed to New stays the caller's.
func TestCloseLeavesPoolOpen(t *testing.T) {
	url := pgURL(t)
	pool := newPool(t, url)
	b := pgbroker.New(pool, &pgbroker.Options{Schema: testSchema(t, pool), Logger: servertest.Logger(t)})
	servertest.Publish(t, b, servertest.ChannelName(t), `1`)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(t.Context()); err != nil {
		t.Errorf("the pool after Close: %v", err)
	}
}

func TestNewPanicsOnMisuse(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts pgbroker.Options
		want string
	}{
		{"SchemaQuoted", pgbroker.Options{Schema: `live"; DROP TABLE x; --`}, "Schema"},
		{"SchemaUpper", pgbroker.Options{Schema: "Live"}, "Schema"},
		{"SchemaDigit", pgbroker.Options{Schema: "1live"}, "Schema"},
		{"SchemaLong", pgbroker.Options{Schema: strings.Repeat("l", 33)}, "Schema"},
		{"NoHistory", pgbroker.Options{HistorySize: -1}, "HistorySize"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), tt.want) {
					t.Errorf("recovered %v, want a panic about %s", r, tt.want)
				}
			}()
			pool, err := pgxpool.New(t.Context(), "postgres://127.0.0.1:1/none")
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			pgbroker.New(pool, &tt.opts)
		})
	}
}

// Bad channel names get a clear error and touch nothing.
func TestInvalidChannel(t *testing.T) {
	url := pgURL(t)
	b, pool, _ := newBroker(t, url, nil)
	ctx := t.Context()
	for _, channel := range []string{"", "a b", "a/b", "..", strings.Repeat("c", live.MaxChannelLen+1), "x'; DROP SCHEMA public; --"} {
		if _, err := b.Publish(ctx, channel, []byte(`1`)); err == nil {
			t.Errorf("Publish(%q) succeeded", channel)
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.PublishTx(ctx, tx, channel, []byte(`1`)); err == nil {
			t.Errorf("PublishTx(%q) succeeded", channel)
		}
		tx.Rollback(ctx)
		if _, err := b.Since(ctx, channel, live.Position{Epoch: "x"}); err == nil || errors.Is(err, live.ErrGone) {
			t.Errorf("Since(%q) = %v, want an error about the name", channel, err)
		}
		if err := b.Subscribe(ctx, channel, func(live.Position) {}, func(live.Message) {}); err == nil {
			t.Errorf("Subscribe(%q) returned nil", channel)
		}
	}
}

// TestBatchedPublications publishes from many goroutines on two brokers
// over a few channels while applications' transactions publish on two of
// them in the opposite order of the brokers' batches, which can deadlock
// with a batch: every publication succeeds once, and each channel's
// numbers run from 1 without a gap or a repeat.
func TestBatchedPublications(t *testing.T) {
	url := pgURL(t)
	b1, pool, schema := newBroker(t, url, nil)
	b2 := pgbroker.New(newPool(t, url), &pgbroker.Options{Schema: schema, Logger: servertest.Logger(t)})
	t.Cleanup(func() { b2.Close() })
	ctx := t.Context()
	prefix := servertest.ChannelName(t)
	chans := []string{prefix + "-a", prefix + "-b", prefix + "-c", prefix + "-d"}
	servertest.Publish(t, b1, prefix, `"first"`) // creates the schema

	var mu sync.Mutex
	seqs := map[string][]uint64{}
	record := func(ch string, pos live.Position) {
		mu.Lock()
		seqs[ch] = append(seqs[ch], pos.Seq)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for g := range 32 {
		b := b1
		if g%2 == 1 {
			b = b2
		}
		wg.Go(func() {
			for i := range 30 {
				ch := chans[(g+i)%len(chans)]
				pos, err := b.Publish(ctx, ch, []byte(strconv.Itoa(i)))
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				record(ch, pos)
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 10 {
				var got [2]live.Position
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					for k, ch := range []string{chans[3], chans[0]} { // against the batches' order
						pos, err := b1.PublishTx(ctx, tx, ch, []byte(`"tx"`))
						if err != nil {
							return err
						}
						got[k] = pos
					}
					return nil
				})
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
					continue // this transaction lost the deadlock: rolled back
				}
				if err != nil {
					t.Errorf("transaction: %v", err)
					return
				}
				record(chans[3], got[0])
				record(chans[0], got[1])
			}
		})
	}
	wg.Wait()
	for _, ch := range chans {
		s := seqs[ch]
		slices.Sort(s)
		for i, seq := range s {
			if seq != uint64(i+1) {
				t.Fatalf("channel %s: numbers %v, want 1 to %d", ch, s, len(s))
			}
		}
	}
}
