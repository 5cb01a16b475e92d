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
// it follows, and follows a channel without a goroutine of its own
// ([Broker.Follow]).
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
// [Options].StallTimeout although pinged, every follow ends with an
// error; the Hub follows again and fills the hole from history. If the
// broker's tables are lost (dropped, or a new cluster), they are created
// again and every channel starts a new epoch, so old cursors get
// [live.ErrGone] and clients refetch.
package pgbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/batch"
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
	// ends every follow with an error. It is pinged after a
	// quarter of that time without traffic. It also bounds connecting the
	// listener and each LISTEN. Default 5 seconds.
	StallTimeout time.Duration

	// Logger receives the broker's warnings: a lost or stalled listening
	// connection, a failed clean-up. Default slog.Default().
	Logger *slog.Logger
}

// Broker is a [live.Broker], [live.Follower] and [live.History] on
// PostgreSQL. It is safe for concurrent use. It runs two goroutines from
// New or Open until Close: the listener, which holds the listening
// connection once a follow needs it, and the sweeper, which deletes idle
// channels' history. Others run only while they have work, and Close
// waits for them too: the head reader, while follows wait for their
// channels' heads, and a goroutine per follow reading large data from
// the table.
type Broker struct {
	pool   *pgxpool.Pool
	own    bool // Close closes pool
	schema string
	size   int
	age    time.Duration // <= 0: no age limit
	stall  time.Duration
	log    *slog.Logger
	lcfg   *pgconn.Config // the listening connection's

	publishSQL, publishIfSQL, headsSQL, sinceSQL string

	ensureMu sync.Mutex  // serialises creating the schema
	ensured  atomic.Bool // the schema was created or found; cleared when it goes missing
	utf8     atomic.Bool // the server encoding is UTF8, so any UTF-8 text may be announced

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	batch  batch.Queue[*publication] // publications on their way
	wg     sync.WaitGroup            // the listener, the sweeper, the head reader and the follows' readers of the table

	mu        sync.Mutex         // guards chans, todo, heads, reading, interrupt, and the lchans and followers
	closed    atomic.Bool        // set under mu; Publish and Since read it without, as a delivery (made under mu) may call them
	chans     map[string]*lchan  // by channel: the channels followed, and those the listener must still UNLISTEN
	todo      []*lchan           // channels whose LISTEN may have to change, for the listener
	heads     []*follower        // follows whose channels are listened to, waiting for their heads
	reading   bool               // the head reader runs
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
	_ live.Follower     = (*Broker)(nil)
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
		headsSQL: `SELECT h.o_epoch, h.o_seq FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, epoch, i)
CROSS JOIN LATERAL ` + o.Schema + `.head(t.name, t.epoch) h ORDER BY t.i`,
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

// Close ends every follow and subscription with an error matching [live.ErrClosed],
// makes later calls fail with it, waits for the broker's goroutines and
// closes the pool if Open made it. Calling it again does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil
	}
	b.closed.Store(true)
	all := b.failLocked()
	b.mu.Unlock()
	endAll(all, live.ErrClosed)

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

func (b *Broker) isClosed() bool { return b.closed.Load() }

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
