// Package pgbroker is a [live.Broker] with [live.History] on PostgreSQL,
// so that several processes, each with its own [live.Hub], serve the same
// channels, every client can resume on any of them, and an application can
// publish inside its own database transactions.
//
// Use [Open] with a connection string, or [New] with a *pgxpool.Pool you
// configured, and give the broker to the Hub:
//
//	b, err := pgbroker.Open("postgres://app@localhost/app", nil)
//	if err != nil { … }
//	defer b.Close()
//	hub := live.NewHub(&live.Options{Broker: b})
//	defer hub.Close(context.Background())
//
// # What PostgreSQL holds
//
// The broker creates a schema ([Options].Schema, "live" by default) with
// two tables: channels, one row per channel with its epoch and the Seq of
// its latest publication, and messages, the recent publications. A
// publication is one call of the schema's publish function, which
// increments the channel's row under its row lock, inserts the message,
// trims the history and sends a NOTIFY, all in one transaction. The next
// publication on the channel waits for that lock, so Seqs are committed in
// order, and a rolled back publication gives its number back.
//
// NOTIFY carries the channel, epoch, Seq and, when it fits, the data and
// its meta ([live.Message].Meta, which the table keeps in a column of its
// own); larger data (NOTIFY takes less than 8000 bytes) is read from the
// table.
// Each Broker keeps one listening connection, with one LISTEN per channel
// it has subscribers for.
//
// # Idempotency keys
//
// A publication under an idempotency key ([live.PublishKey]) keeps it in
// a column of its row of messages, unique per channel. Publish, PublishIf
// and PublishTx look for the key under the channel's row lock, after
// taking the next Seq: when a row has it, they give the Seq back, store
// and announce nothing, and return that row's position. So of calls under
// one key, from any brokers sharing the database, one publishes, and all
// return its position. A key is kept as long as its row: until
// HistorySize later publications push it out, or, once older than
// HistoryAge, a later publication or the sweeper deletes it, or the
// channel starts a new epoch. Brokers of this version add the column and
// its index to tables that older ones made (an index of no rows, built in
// one pass over messages, during which publications wait).
//
// # Transactions
//
// [Broker.PublishTx] publishes in the application's own transaction: the
// publication is numbered and stored with the transaction's other writes,
// and delivered if, and only if, the transaction commits.
//
// # Failures
//
// When the listening connection fails, or stays silent for
// [Options].StallTimeout although pinged, every Subscribe call returns an
// error; the Hub subscribes again and fills the hole from history. If the
// broker's tables are lost (dropped, or a new cluster), they are created
// again and every channel starts a new epoch, so old cursors get
// [live.ErrGone] and clients refetch.
package pgbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/batch"
	"github.com/go-live/live/internal/paging"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configures a Broker. The zero value, or nil, means the defaults
// documented on each field. Brokers sharing a database must agree on
// Schema, and should on HistorySize and HistoryAge.
type Options struct {
	// HistorySize is how many recent publications each channel keeps for
	// resuming clients. Default 1024. It cannot be turned off, because
	// large publications reach subscribers through the table; Open
	// refuses a negative value and New panics on it.
	HistorySize int

	// HistoryAge drops publications older than this from history (by the
	// database's clock). Default 10 minutes; negative keeps them until
	// HistorySize pushes them out. With an age limit, each Broker deletes
	// the history of channels idle for HistoryAge, and forgets channels
	// idle for HistoryAge or 24 hours, whichever is longer: their next
	// publication starts a new epoch, and their clients refetch.
	HistoryAge time.Duration

	// Schema is the PostgreSQL schema that holds the broker's tables and
	// functions, created if missing: 1 to 32 characters of [a-z0-9_], not
	// starting with a digit. Default "live".
	Schema string

	// StallTimeout is how long the listening connection may stay silent,
	// although pinged, before the broker takes the server for stalled and
	// ends every Subscribe call with an error. It is pinged after a
	// quarter of that time without traffic. It also bounds connecting the
	// listener and each LISTEN. Default 5 seconds.
	StallTimeout time.Duration

	// Logger receives the broker's warnings: a lost or stalled listening
	// connection, a failed clean-up. Default slog.Default().
	Logger *slog.Logger
}

// Broker is a [live.Broker] and [live.History] on PostgreSQL. It is safe
// for concurrent use. It runs two goroutines from New or Open until Close:
// the listener, which holds the listening connection once a Subscribe
// call needs it, and the sweeper, which deletes idle channels' history.
type Broker struct {
	pool   *pgxpool.Pool
	own    bool // Close closes pool
	schema string
	size   int
	age    time.Duration // <= 0: no age limit
	stall  time.Duration
	log    *slog.Logger
	lcfg   *pgconn.Config // the listening connection's

	publishSQL, publishIfSQL, headSQL, sinceSQL string

	ensureMu sync.Mutex  // serialises creating the schema
	ensured  atomic.Bool // the schema was created or found; cleared when it goes missing
	utf8     atomic.Bool // the server encoding is UTF8, so any UTF-8 text may be announced

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	batch  batch.Queue[*publication] // publications on their way
	wg     sync.WaitGroup            // the listener and the sweeper

	mu        sync.Mutex // guards closed, chans, dirty and interrupt
	closed    bool
	chans     map[string]*lchan  // by channel: what the listener must LISTEN to
	dirty     bool               // chans changed since the listener last looked
	interrupt context.CancelFunc // non-nil while the listener waits; ends the wait
	wake      chan struct{}      // tells an idle listener that chans changed; buffer of 1

	listens, failures, stalls atomic.Int64
}

var (
	_ live.Broker       = (*Broker)(nil)
	_ live.History      = (*Broker)(nil)
	_ live.PagedHistory = (*Broker)(nil)
	_ live.Snapshots    = (*Broker)(nil)
	_ live.Conditional  = (*Broker)(nil)
)

const (
	defaultHistorySize = 1024
	defaultHistoryAge  = 10 * time.Minute
	defaultSchema      = "live"
	defaultStall       = 5 * time.Second
	minChannelLife     = 24 * time.Hour

	// maxNotify is the longest NOTIFY payload PostgreSQL accepts.
	maxNotify = 7999
)

// checkOptions reports options New cannot work with; Open returns it as
// an error, New panics with it.
func checkOptions(o *Options) error {
	if o.HistorySize < 0 {
		return fmt.Errorf("pgbroker: Options.HistorySize %d is negative; large publications reach subscribers through the history table, so it cannot be turned off", o.HistorySize)
	}
	if o.Schema != "" && !validSchema(o.Schema) {
		return fmt.Errorf("pgbroker: Options.Schema %q must be 1 to 32 characters of [a-z0-9_], not starting with a digit", o.Schema)
	}
	return nil
}

// New returns a broker that uses pool for publishing and reading history,
// and opens one more connection with pool's settings for listening. The
// broker never closes pool; close it after the broker. The listening
// connection needs a session of its own, so it must not go through a
// transaction-pooling proxy.
func New(pool *pgxpool.Pool, opts *Options) *Broker {
	if pool == nil {
		panic("pgbroker: New with a nil *pgxpool.Pool")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := checkOptions(&o); err != nil {
		panic(err.Error())
	}
	if o.HistorySize == 0 {
		o.HistorySize = defaultHistorySize
	}
	if o.HistoryAge == 0 {
		o.HistoryAge = defaultHistoryAge
	}
	if o.Schema == "" {
		o.Schema = defaultSchema
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = defaultStall
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	b := &Broker{
		pool:   pool,
		schema: o.Schema,
		size:   o.HistorySize,
		stall:  o.StallTimeout,
		log:    o.Logger,
		chans:  make(map[string]*lchan),
		wake:   make(chan struct{}, 1),

		publishSQL:   "SELECT o_epoch, o_seq FROM " + o.Schema + ".publish($1, $2, $3, $4, $5, $6, $7, $8, $9)",
		publishIfSQL: "SELECT o_epoch, o_seq FROM " + o.Schema + ".publish_if($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
		headSQL:      "SELECT o_epoch, o_seq FROM " + o.Schema + ".head($1, $2)",
		sinceSQL: `SELECT c.epoch, c.seq, m.seq, m.data, m.meta, coalesce($4::bigint > 0 AND m.at < now() - $4::bigint * interval '1 millisecond', false)
FROM ` + o.Schema + `.channels c
LEFT JOIN LATERAL (
	SELECT m.seq, m.data, m.meta, m.at FROM ` + o.Schema + `.messages m
	WHERE m.channel = c.name AND m.seq > $3 AND m.seq <= c.seq
	ORDER BY m.seq LIMIT $5
) m ON c.epoch = $2
WHERE c.name = $1`,
	}
	if o.HistoryAge > 0 {
		b.age = o.HistoryAge
	}
	b.lcfg = listenerConfig(pool, o.Schema, b.dispatch)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.batch = batch.Queue[*publication]{Send: b.publishBatch, Calls: maxCalls, Max: maxBatch}
	b.wg.Add(1)
	go b.listen()
	if b.age > 0 {
		b.wg.Add(1)
		go b.sweep()
	}
	return b
}

// listenerConfig returns the settings of the listening connection: pool's,
// named for pg_stat_activity, with cancellation by deadline (a cancel
// request to a stalled server could hang) and notifications passed to
// dispatch.
func listenerConfig(pool *pgxpool.Pool, schema string, dispatch pgconn.NotificationHandler) *pgconn.Config {
	c := pool.Config().ConnConfig.Config.Copy()
	params := make(map[string]string, len(c.RuntimeParams)+1)
	for k, v := range c.RuntimeParams {
		params[k] = v
	}
	params["application_name"] = "live-listener:" + schema
	c.RuntimeParams = params
	c.OnNotification = dispatch
	c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
	}
	return c
}

// Open returns a broker on a pool it makes from connString, a URL
// (postgres://user@host:port/db?sslmode=…) or keyword/value string as
// pgxpool.ParseConfig takes. Like sql.Open, it does not connect: the first
// call that needs the database does. Close closes the pool.
func Open(connString string, opts *Options) (*Broker, error) {
	if opts != nil {
		if err := checkOptions(opts); err != nil {
			return nil, err
		}
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("pgbroker: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("pgbroker: %w", err)
	}
	b := New(pool, opts)
	b.own = true
	return b, nil
}

// Close ends every subscription with an error matching [live.ErrClosed],
// makes later calls fail with it, waits for the broker's goroutines and
// closes the pool if Open made it. Calling it again does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.failLocked(live.ErrClosed)
	b.mu.Unlock()

	b.cancel()
	b.batch.Close()
	b.wg.Wait()
	if b.own {
		b.pool.Close()
	}
	return nil
}

// Stats are counters of a Broker's listening connection since New.
type Stats struct {
	Listens  int64 // listening connections established
	Failures int64 // listening connections lost, including stalls
	Stalls   int64 // listening connections given up as stalled
}

// Stats returns the broker's counters. A lost or stalled connection is
// also logged, and counted by each Hub in Stats.BrokerErrors once per
// channel it ended.
func (b *Broker) Stats() Stats {
	return Stats{Listens: b.listens.Load(), Failures: b.failures.Load(), Stalls: b.stalls.Load()}
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func validSchema(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] >= '0' && s[0] <= '9' {
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

// notifyName returns the NOTIFY channel that announces channel's
// publications: the schema and a hash of the channel, because NOTIFY
// channel names are limited to 63 bytes.
func (b *Broker) notifyName(channel string) string {
	sum := sha256.Sum256([]byte(channel))
	return b.schema + ":" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:15]))
}

// newEpoch returns a random epoch: 12 characters of [a-z2-7], 60 bits.
func newEpoch() string {
	return strings.ToLower(rand.Text()[:12])
}

// ensure creates the schema unless it was created or found before. The
// DDL runs under an advisory lock, because concurrent CREATE ... IF NOT
// EXISTS statements can fail in PostgreSQL.
func (b *Broker) ensure(ctx context.Context) error {
	if b.ensured.Load() {
		return nil
	}
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	if b.ensured.Load() {
		return nil
	}
	create := func(tx pgx.Tx) error {
		h := fnv.New64a()
		h.Write([]byte("github.com/go-live/live/postgres " + b.schema))
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, inSchema(schemaSQL, b.schema)); err != nil {
			return err
		}
		var enc string
		if err := tx.QueryRow(ctx, "SELECT current_setting('server_encoding')").Scan(&enc); err != nil {
			return err
		}
		b.utf8.Store(enc == "UTF8")
		return nil
	}
	err := pgx.BeginFunc(ctx, b.pool, create)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		// unique_violation: another creator's CREATE ... IF NOT EXISTS
		// committed after ours checked, as when the schema is dropped and
		// two brokers make it again at once (TestNodes, DataLost). It
		// exists now: a second run finds it.
		err = pgx.BeginFunc(ctx, b.pool, create)
	}
	if err != nil {
		return fmt.Errorf("creating schema %s: %w", b.schema, err)
	}
	b.ensured.Store(true)
	return nil
}

// missing reports whether err says the schema, a table or a function is
// missing, and if so makes the next call create them again.
func (b *Broker) missing(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3F000", "42P01", "42883": // invalid_schema_name, undefined_table, undefined_function
			b.ensured.Store(false)
			return true
		}
	}
	return false
}

// A querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Publish implements [live.Broker]. It returns after PostgreSQL committed
// the publication, and an error, never a false success, when it could not
// confirm that. Pass a context with a deadline: a stalled server is
// otherwise waited for. Under a key ([live.WithPublishKey]) that a
// publication in the channel's history has, it publishes nothing and
// returns that publication's position, so a call that failed with an
// unknown outcome can be made again under its key.
func (b *Broker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	return b.publishMaybe(ctx, channel, nil, data)
}

// PublishIf implements [live.Conditional]: the schema's publish_if
// function compares the channel's row with head in the UPDATE that takes
// its row lock, so a publication of any process that held the lock first
// (batched with others or not, or in an application's transaction with
// PublishTx) makes it take nothing. Under a key that a publication in
// the channel's history has, it returns that publication's position,
// whatever head is, as the memory broker does.
func (b *Broker) PublishIf(ctx context.Context, channel string, head live.Position, data []byte) (live.Position, error) {
	return b.publishMaybe(ctx, channel, &head, data)
}

// publishMaybe publishes data on channel, on condition that the channel
// is at *head when head is not nil.
func (b *Broker) publishMaybe(ctx context.Context, channel string, head *live.Position, data []byte) (live.Position, error) {
	data, meta, err := live.CheckPublish(ctx, channel, data)
	if err != nil {
		return live.Position{}, err
	}
	if err := ctx.Err(); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	if b.isClosed() {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, live.ErrClosed)
	}
	pos, err := b.publishBatched(ctx, &publication{channel: channel, head: head, data: data, meta: meta, key: live.PublishKey(ctx)})
	if err != nil && b.isClosed() {
		err = live.ErrClosed
	}
	if err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return pos, nil
}

// publishOne publishes p in a transaction of its own, on condition that
// its channel is at *p.head when p.head is not nil, creating the schema if
// it is missing.
func (b *Broker) publishOne(ctx context.Context, p *publication) (live.Position, error) {
	for attempt := 1; ; attempt++ {
		if err := b.ensure(ctx); err != nil {
			return live.Position{}, err
		}
		var pos live.Position
		var err error
		if p.head != nil {
			pos, err = b.publishIf(ctx, p)
		} else {
			pos, err = b.publish(ctx, b.pool, p)
		}
		// Nothing was taken if the function did not exist, or if the
		// transaction lost a deadlock: even one row lock can, when an
		// application's transaction holding channels waits for another
		// publication queued behind this one.
		if err == nil || attempt == 3 || !b.missing(err) && !lostDeadlock(err) {
			return pos, err
		}
	}
}

// lostDeadlock reports an error of a transaction that PostgreSQL rolled
// back to break a deadlock.
func lostDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01" // deadlock_detected
}

// PublishTx publishes data on channel inside tx, a transaction on the
// broker's database, and returns the position it will have if tx commits.
// Subscribers receive it when tx commits, and never if it rolls back, which
// also gives its number back. It runs [live.CheckPublish], as Publish
// does: channels reserved for the hubs ("@live:…") are refused, and data
// must be JSON, which is validated and compacted, as [live.Hub.Publish]
// does; subscribers get it as data, whatever it looks like.
//
// Every Hub whose broker shares the database delivers the publication, so
// an application publishes with PublishTx where it would call
// Hub.Publish after its own commit, and gets an event if and only if its
// change is durable:
//
//	tx, err := pool.Begin(ctx)
//	…
//	defer tx.Rollback(ctx)
//	… the application's writes …
//	if _, err := broker.PublishTx(ctx, tx, "todos", event); err != nil { … }
//	return tx.Commit(ctx)
//
// Under a key ([live.WithPublishKey]) that a publication in the channel's
// history has, it publishes nothing and returns that publication's
// position; the key is taken when tx commits, and another publication
// under it, in any transaction or broker, waits for tx and then answers
// with tx's position, or publishes if tx rolled back.
//
// Publishers on one channel take turns: tx holds the channel's row lock
// from PublishTx until it ends, so publish late in the transaction. In a
// REPEATABLE READ or SERIALIZABLE transaction a concurrent publication on
// the channel makes PublishTx fail with a serialization error, after which
// the application retries its transaction as usual.
func (b *Broker) PublishTx(ctx context.Context, tx pgx.Tx, channel string, data []byte) (live.Position, error) {
	data, meta, err := live.CheckPublish(ctx, channel, data)
	if err != nil {
		return live.Position{}, err
	}
	if tx == nil {
		return live.Position{}, fmt.Errorf("live: publish %q: nil transaction", channel)
	}
	if b.isClosed() {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, live.ErrClosed)
	}
	if err := b.ensure(ctx); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	pos, err := b.publish(ctx, tx, &publication{channel: channel, data: data, meta: meta, key: live.PublishKey(ctx)})
	if err != nil {
		b.missing(err) // the application retries its transaction
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return pos, nil
}

// publish runs the schema's publish function with q.
func (b *Broker) publish(ctx context.Context, q querier, p *publication) (live.Position, error) {
	var epoch string
	var seq int64
	if err := q.QueryRow(ctx, b.publishSQL, b.publishArgs(p)...).Scan(&epoch, &seq); err != nil {
		return live.Position{}, err
	}
	return position(epoch, seq)
}

// publishIf runs the schema's publish_if function for p, whose head is
// not nil.
func (b *Broker) publishIf(ctx context.Context, p *publication) (live.Position, error) {
	var epoch string
	var seq int64
	if err := b.pool.QueryRow(ctx, b.publishIfSQL, b.publishIfArgs(p)...).Scan(&epoch, &seq); err != nil {
		return live.Position{}, err
	}
	return conditionalPosition(*p.head, epoch, seq)
}

// publishIfArgs returns the arguments of publishIfSQL for p, whose head
// is not nil.
func (b *Broker) publishIfArgs(p *publication) []any {
	args := b.publishArgs(p)
	// channel, then the head in place of the new epoch, then the rest.
	return append([]any{p.channel, p.head.Epoch, int64(min(p.head.Seq, math.MaxInt64))}, args[2:]...)
}

// conditionalPosition checks what the publish_if function returned for a
// publication at head.
func conditionalPosition(head live.Position, epoch string, seq int64) (live.Position, error) {
	if seq == 0 && epoch == "" {
		return live.Position{}, fmt.Errorf("the channel is not at %v: %w", head, live.ErrConflict)
	}
	return position(epoch, seq)
}

// publishArgs returns the arguments of publishSQL for p: the tail of its
// announcement is "d<data>", or "m<n> <meta><data>" for n bytes of meta,
// if they fit, and its key is NULL when it has none.
func (b *Broker) publishArgs(p *publication) []any {
	var inline *string
	if p.meta == nil && b.announceable(p.data, len(p.channel)) {
		s := "d" + string(p.data)
		inline = &s
	} else if p.meta != nil && b.announceable(p.meta, len(p.channel)+len(p.data)) && b.announceable(p.data, len(p.channel)+len(p.meta)) {
		s := "m" + strconv.Itoa(len(p.meta)) + " " + string(p.meta) + string(p.data)
		inline = &s
	}
	var key *string // NULL for none
	if p.key != "" {
		key = &p.key
	}
	return []any{p.channel, newEpoch(), p.data, inline, b.notifyName(p.channel), b.size, b.age.Milliseconds(), p.meta, key}
}

// position checks what the publish function returned.
func position(epoch string, seq int64) (live.Position, error) {
	if seq < 1 || epoch == "" {
		return live.Position{}, fmt.Errorf("unexpected position %d.%s from PostgreSQL", seq, epoch)
	}
	return live.Position{Epoch: epoch, Seq: uint64(seq)}, nil
}

// announceable reports whether data can travel inside the NOTIFY payload
// after a header with a channel name of overhead bytes: it fits, has no NUL
// byte, and is
// ASCII or UTF-8 on a UTF8 server (NOTIFY payloads are text in the server
// encoding).
func (b *Broker) announceable(data []byte, overhead int) bool {
	const headerMax = 64 // epoch, Seq, separators
	if len(data)+overhead+headerMax > maxNotify {
		return false
	}
	ascii := true
	for _, c := range data {
		if c == 0 {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	return ascii || b.utf8.Load() && utf8.Valid(data)
}

// head returns the channel's latest position, creating its row if the
// channel is new, so that the first publication is in the epoch returned.
func (b *Broker) head(ctx context.Context, channel string) (live.Position, error) {
	read := func() (live.Position, error) {
		if err := b.ensure(ctx); err != nil {
			return live.Position{}, err
		}
		var epoch string
		var seq int64
		if err := b.pool.QueryRow(ctx, b.headSQL, channel, newEpoch()).Scan(&epoch, &seq); err != nil {
			return live.Position{}, err
		}
		return live.Position{Epoch: epoch, Seq: uint64(seq)}, nil
	}
	pos, err := read()
	if err != nil && b.missing(err) {
		pos, err = read()
	}
	return pos, err
}

// SaveSnapshot implements [live.Snapshots]. The snapshot is a row of the
// snapshots table, replaced by a later position of the channel's current
// epoch and deleted with the channel's row.
func (b *Broker) SaveSnapshot(ctx context.Context, channel string, pos live.Position, data []byte) error {
	if b.isClosed() {
		return fmt.Errorf("live: snapshot %q: %w", channel, live.ErrClosed)
	}
	save := func() error {
		if err := b.ensure(ctx); err != nil {
			return err
		}
		_, err := b.pool.Exec(ctx, `INSERT INTO `+b.schema+`.snapshots AS s (channel, epoch, seq, data)
SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM `+b.schema+`.channels c WHERE c.name = $1 AND c.epoch = $2)
ON CONFLICT (channel) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, data = excluded.data
WHERE s.epoch <> excluded.epoch OR s.seq < excluded.seq`, channel, pos.Epoch, int64(pos.Seq), data)
		return err
	}
	err := save()
	if err != nil && b.missing(err) {
		err = save()
	}
	if err != nil {
		return fmt.Errorf("live: snapshot %q at %v: %w", channel, pos, err)
	}
	return nil
}

// Snapshot implements [live.Snapshots].
func (b *Broker) Snapshot(ctx context.Context, channel string) (live.Position, []byte, error) {
	if b.isClosed() {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, live.ErrClosed)
	}
	var (
		epoch string
		seq   int64
		data  []byte
	)
	read := func() error {
		if err := b.ensure(ctx); err != nil {
			return err
		}
		return b.pool.QueryRow(ctx, `SELECT epoch, seq, data FROM `+b.schema+`.snapshots WHERE channel = $1`, channel).Scan(&epoch, &seq, &data)
	}
	err := read()
	if err != nil && b.missing(err) {
		err = read()
	}
	if errors.Is(err, pgx.ErrNoRows) {
		err = live.ErrGone
	}
	if err != nil {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	pos, err := position(epoch, seq)
	if err != nil {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	return pos, data, nil
}

// Since implements [live.History]. It reads the channel's row and the
// messages after after.Seq in one statement, so they agree, starting from
// the primary key rather than scanning.
func (b *Broker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	if err := live.ValidChannel(channel); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("live: history %q: %w", channel, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("live: history %q: %w", channel, live.ErrClosed)
	}
	msgs, err := b.since(ctx, channel, after, 0)
	if err != nil && b.missing(err) {
		msgs, err = b.since(ctx, channel, after, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return msgs, nil
}

// SincePage implements [live.PagedHistory]. It reads in queries with LIMIT sized
// from the publications read so far (4 at first), so that it reads about
// maxBytes, not the whole range, however large the publications.
func (b *Broker) SincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	if err := live.ValidChannel(channel); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("live: history %q: %w", channel, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("live: history %q: %w", channel, live.ErrClosed)
	}
	page, err := paging.Read(ctx, after, maxMessages, maxBytes, func(ctx context.Context, from live.Position, count int) ([]live.Message, error) {
		msgs, err := b.since(ctx, channel, from, count)
		if err != nil && b.missing(err) {
			msgs, err = b.since(ctx, channel, from, count)
		}
		return msgs, err
	})
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return page, nil
}

// since returns up to count (0: all) publications after after, or an error
// that is live.ErrGone if they are not all in the table.
func (b *Broker) since(ctx context.Context, channel string, after live.Position, count int) ([]live.Message, error) {
	if after.Seq >= math.MaxInt64 {
		return nil, live.ErrGone // beyond any head
	}
	if err := b.ensure(ctx); err != nil {
		return nil, err
	}
	var limit *int
	if count > 0 {
		limit = &count
	}
	rows, err := b.pool.Query(ctx, b.sinceSQL, channel, after.Epoch, int64(after.Seq), b.age.Milliseconds(), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		epoch   string
		head    int64
		found   bool
		msgs    []live.Message
		expired bool
	)
	for rows.Next() {
		var (
			seq        *int64
			data, meta []byte
			old        bool
		)
		if err := rows.Scan(&epoch, &head, &seq, &data, &meta, &old); err != nil {
			return nil, err
		}
		found = true
		if seq == nil {
			continue // no messages, or another epoch
		}
		if len(msgs) == 0 && old {
			expired = true
		}
		msgs = append(msgs, live.Message{Channel: channel, Pos: live.Position{Epoch: epoch, Seq: uint64(*seq)}, Data: data, Meta: meta})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	last := uint64(head)
	switch {
	case !found, epoch != after.Epoch, after.Seq > last:
		return nil, live.ErrGone // no record of the channel, another epoch, beyond the head
	case after.Seq == last:
		return nil, nil
	case len(msgs) == 0, expired:
		return nil, live.ErrGone
	}
	for i, m := range msgs {
		if m.Pos.Seq != after.Seq+1+uint64(i) {
			return nil, live.ErrGone // trimmed, or a hole
		}
	}
	if count == 0 && msgs[len(msgs)-1].Pos.Seq != last {
		return nil, live.ErrGone
	}
	return msgs, nil
}

// sweep is the broker's sweeper goroutine: it deletes the history of
// channels idle for HistoryAge and forgets channels idle for
// max(HistoryAge, 24h). Publications trim their own channel; this keeps
// channels that go out of use from staying in the tables forever.
func (b *Broker) sweep() {
	defer b.wg.Done()
	every := min(max(b.age/2, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	life := max(b.age, minChannelLife)
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		if !b.ensured.Load() {
			continue // nothing to sweep yet, or the schema is gone
		}
		ctx, cancel := context.WithTimeout(b.ctx, every)
		_, err := b.pool.Exec(ctx, `DELETE FROM `+b.schema+`.messages m USING `+b.schema+`.channels c
WHERE m.channel = c.name AND c.touched < now() - $1::bigint * interval '1 millisecond'`, b.age.Milliseconds())
		if err == nil {
			_, err = b.pool.Exec(ctx, `DELETE FROM `+b.schema+`.channels c
WHERE c.touched < now() - $1::bigint * interval '1 millisecond'`, life.Milliseconds())
		}
		if err == nil {
			_, err = b.pool.Exec(ctx, `DELETE FROM `+b.schema+`.snapshots s
WHERE NOT EXISTS (SELECT 1 FROM `+b.schema+`.channels c WHERE c.name = s.channel)`)
		}
		cancel()
		if err != nil && b.ctx.Err() == nil {
			b.missing(err)
			b.log.Warn("pgbroker: deleting idle channels' history failed", "schema", b.schema, "err", err)
		}
	}
}
