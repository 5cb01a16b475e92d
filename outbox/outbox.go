// Package outbox publishes to a [live.Hub] from inside an application's
// database transaction: a publication is recorded in an outbox table in
// the same transaction as the change it announces, so it is delivered if
// and only if that transaction commits, and a [Relay] moves committed
// publications to the hub's broker, in commit order per channel, each
// once as subscribers see it, however often the application, the relay or
// the broker fail in between.
//
// It works on database/sql with PostgreSQL, MySQL/MariaDB and SQLite
// ([Postgres], [MySQL], [SQLite]) and depends on no driver: the
// application opens the database with the driver it already uses. The
// schema, its guarantees and measured figures are in the module's README.
//
//	ob, err := outbox.New(db, outbox.Postgres, outbox.Options{})
//	err = ob.Migrate(ctx)                            // once, at start
//	go ob.NewRelay(hub, outbox.RelayOptions{}).Run(ctx) // on every node; one works
//
//	tx, _ := db.BeginTx(ctx, nil)
//	tx.ExecContext(ctx, "UPDATE todos SET done = true WHERE id = $1", id)
//	ob.Publish(ctx, tx, "todos", live.ListUpdate{Type: "update", Item: item})
//	ob.Commit(tx) // tx.Commit, and a local relay looks at once
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/go-live/live"
)

// A Dialect is the SQL one database speaks. Use [Postgres], [MySQL] (which
// covers MariaDB) or [SQLite].
type Dialect struct {
	name string
}

// The dialects the outbox speaks.
var (
	// Postgres is PostgreSQL 12 or later. Publications wake the relay
	// with NOTIFY at commit (see [RelayOptions].Listen), and a SQL
	// function, <table>_publish(channel, data), publishes from triggers,
	// migrations, psql and other services.
	Postgres = Dialect{"postgres"}
	// MySQL is MySQL 8.0.13 or later, or MariaDB 10.3 or later, on
	// InnoDB. The relay polls.
	MySQL = Dialect{"mysql"}
	// SQLite is SQLite 3.35 or later, for a single node. The relay polls.
	SQLite = Dialect{"sqlite"}
)

// String returns the dialect's name.
func (d Dialect) String() string { return d.name }

// Options configures an [Outbox]. A zero field means its default.
type Options struct {
	// Table names the outbox table, and prefixes the others (see the
	// README's schema): 1 to 40 characters of lower-case ASCII letters,
	// digits and '_', starting with a letter. It may not be qualified by
	// a schema; on PostgreSQL the connection's search_path finds it.
	// Default "live_outbox".
	Table string
}

// An Outbox records publications in the application's transactions.
// It is safe for concurrent use.
type Outbox struct {
	db     *sql.DB
	d      Dialect
	table  string
	q      queries
	mu     sync.Mutex
	relays map[*Relay]struct{} // local relays, woken by Commit
}

// Tx is what Publish needs of a transaction: *sql.Tx has it (and so do
// *sql.Conn and *sql.DB, for a publication outside any transaction).
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ErrTable refuses an invalid Options.Table.
var ErrTable = errors.New("outbox: table: want 1 to 40 characters of [a-z0-9_], starting with a letter")

// New returns an Outbox on db, which the application opened with a
// driver for d. It touches nothing: call [Outbox.Migrate] before using
// it.
func New(db *sql.DB, d Dialect, o Options) (*Outbox, error) {
	if o.Table == "" {
		o.Table = "live_outbox"
	}
	if !validTable(o.Table) {
		return nil, ErrTable
	}
	switch d {
	case Postgres, MySQL, SQLite:
	default:
		return nil, fmt.Errorf("outbox: unknown dialect %q", d.name)
	}
	return &Outbox{db: db, d: d, table: o.Table, q: newQueries(d, o.Table), relays: map[*Relay]struct{}{}}, nil
}

func validTable(s string) bool {
	if len(s) == 0 || len(s) > 40 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Table returns the outbox table's name.
func (o *Outbox) Table() string { return o.table }

// Dialect returns the outbox's dialect.
func (o *Outbox) Dialect() Dialect { return o.d }

// Publish records v, encoded with encoding/json (pass a json.RawMessage
// for JSON you already have), for publication on channel when tx
// commits, and returns its sequence number on the channel: 1 for the
// channel's first publication, then one more for each. A rolled-back
// transaction publishes nothing and gives its numbers back.
//
// The channel's numbering is taken under a lock on the channel's row in
// <table>_channels, held until tx ends: transactions that publish on one
// channel commit one after the other, which is what makes the relay's
// order, the channel's sequence order, the order of their commits. Keep
// such transactions short, or publish last in them. Transactions on other
// channels do not wait for each other.
//
// Publish checks channel and v as [live.Hub.Publish] does.
func (o *Outbox) Publish(ctx context.Context, tx Tx, channel string, v any) (uint64, error) {
	data, err := encode(channel, v)
	if err != nil {
		return 0, err
	}
	return o.publish(ctx, tx, channel, data)
}

// encode checks a publication of v on channel and returns its JSON.
func encode(channel string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("outbox: publish %q: %w", channel, err)
	}
	data, _, err = live.CheckPublish(context.Background(), channel, data)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return data, nil
}

func (o *Outbox) publish(ctx context.Context, tx Tx, channel string, data []byte) (uint64, error) {
	var seq int64
	switch o.d {
	case Postgres:
		if err := tx.QueryRowContext(ctx, o.q.publish, channel, string(data)).Scan(&seq); err != nil {
			return 0, fmt.Errorf("outbox: publish %q: %w", channel, err)
		}
	case SQLite:
		if err := tx.QueryRowContext(ctx, o.q.nextSeq, channel).Scan(&seq); err != nil {
			return 0, fmt.Errorf("outbox: publish %q: %w", channel, err)
		}
		if _, err := tx.ExecContext(ctx, o.q.insert, channel, seq, string(data)); err != nil {
			return 0, fmt.Errorf("outbox: publish %q: %w", channel, err)
		}
	case MySQL:
		res, err := tx.ExecContext(ctx, o.q.nextSeq, channel)
		if err == nil {
			seq, err = res.LastInsertId()
		}
		if err == nil {
			_, err = tx.ExecContext(ctx, o.q.insert, channel, seq, string(data))
		}
		if err != nil {
			return 0, fmt.Errorf("outbox: publish %q: %w", channel, err)
		}
	}
	return uint64(seq), nil
}

// PgxTx is what [PublishPgx] needs of a transaction: pgx.Tx, *pgx.Conn
// and *pgxpool.Pool (outside any transaction) have it.
type PgxTx[R interface{ Scan(dest ...any) error }] interface {
	QueryRow(ctx context.Context, sql string, args ...any) R
}

// PublishPgx is [Outbox.Publish] in a transaction of github.com/jackc/pgx
// (a pgx.Tx), for applications on PostgreSQL that hold one instead of a
// *sql.Tx. The outbox's dialect must be [Postgres]. It calls the
// <table>_publish SQL function, as anything else on the database may.
func PublishPgx[R interface{ Scan(dest ...any) error }](ctx context.Context, o *Outbox, tx PgxTx[R], channel string, v any) (uint64, error) {
	if o.d != Postgres {
		return 0, fmt.Errorf("outbox: PublishPgx needs the Postgres dialect, not %s", o.d)
	}
	data, err := encode(channel, v)
	if err != nil {
		return 0, err
	}
	var seq int64
	if err := tx.QueryRow(ctx, o.q.publish, channel, string(data)).Scan(&seq); err != nil {
		return 0, fmt.Errorf("outbox: publish %q: %w", channel, err)
	}
	return uint64(seq), nil
}

// Commit commits tx and, if it committed, has this process's relays look
// for its publications at once, rather than at their next poll (on
// PostgreSQL with a listener, NOTIFY wakes every node's relay anyway).
// Committing tx any other way delivers its publications just as surely.
func (o *Outbox) Commit(tx *sql.Tx) error {
	if err := tx.Commit(); err != nil {
		return err
	}
	o.Wake()
	return nil
}

// Wake has this process's relays look for publications at once.
func (o *Outbox) Wake() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for r := range o.relays {
		r.Wake()
	}
}

// Head returns the sequence number of channel's latest publication as
// tx sees it: 0 before the first. Read in the transaction that reads the
// data a page shows, before that data, it is the point from which to
// follow the channel so as to miss nothing and repeat nothing;
// [Outbox.Position] turns it into the broker position to subscribe from.
//
// On PostgreSQL and MySQL/MariaDB it takes a shared lock on the channel's
// row (FOR SHARE, LOCK IN SHARE MODE), so that no publication on the
// channel commits between it and the end of tx, at any isolation level:
// the data read after it is exactly the data as of Head. Publishers on the
// channel wait for tx, so keep it short. On SQLite a transaction reads one
// snapshot anyway.
func (o *Outbox) Head(ctx context.Context, tx Tx, channel string) (uint64, error) {
	var seq int64
	err := tx.QueryRowContext(ctx, o.q.head, channel).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("outbox: head of %q: %w", channel, err)
	}
	return uint64(seq), nil
}
