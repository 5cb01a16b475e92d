package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
)

// A Publisher takes the relay's publications: a [live.Hub] is one. The
// relay publishes each row's JSON as a json.RawMessage, under an
// idempotency key ([live.WithPublishKey]) that is the row's own, the same
// on every attempt by any relay.
type Publisher interface {
	Publish(ctx context.Context, channel string, v any) (live.Position, error)
}

// RelayOptions configures a [Relay]. A zero field means its default.
type RelayOptions struct {
	// Holder names this relay in the lease row, for operators. Default:
	// the host name, the process id and a random suffix.
	Holder string

	// Lease is how long the working relay holds the outbox without
	// renewing: a relay whose node dies is replaced within about Lease
	// and a third. A relay stops publishing a fifth of Lease before its
	// lease would run out, so a publication under way when its lease
	// lapses has that long to reach the broker before another relay may
	// start (and the idempotency key makes even a later one harmless).
	// Default 10 seconds.
	Lease time.Duration

	// Batch is how many publications the relay reads at a time. Default 500.
	Batch int

	// Parallel is how many channels the relay publishes on at once; within
	// a channel it publishes one at a time, in order. Default 8.
	Parallel int

	// PollMin and PollMax bound the wait between looks at the outbox:
	// after a look that found work the relay looks again after PollMin,
	// and each empty look doubles the wait up to PollMax. [Outbox.Commit]
	// and Listen's wake-ups end a wait at once. Defaults 20 ms and 1 s;
	// with Listen, PollMax defaults to 2 s.
	PollMin, PollMax time.Duration

	// Listen, on PostgreSQL, waits for the notifications the outbox sends
	// at each commit: it LISTENs to name (the outbox's table name) on a
	// connection of its own and calls wake for each notification, until
	// ctx ends. database/sql cannot LISTEN; the README has a Listen for
	// pgx. An error restarts it after a second. Default: none, the relay
	// polls.
	Listen func(ctx context.Context, name string, wake func()) error

	// Retention is how long delivered rows stay in the outbox table, for
	// inspection and for [Outbox.Position], before the relay deletes them.
	// Default 24 hours; negative deletes nothing.
	Retention time.Duration

	// PublishTimeout bounds one publication's attempt. Default 5 seconds.
	PublishTimeout time.Duration

	// Logger receives errors and changes of leadership. Default
	// slog.Default().
	Logger *slog.Logger
}

// A Relay moves committed publications from an outbox to a [Publisher].
// Run one on every node: they share a lease in the database, and only its
// holder publishes; when it stops or its node dies, another takes over.
type Relay struct {
	o    *Outbox
	pub  Publisher
	opts RelayOptions
	wake chan struct{}

	epoch      string
	idle       bool      // Postgres: the relay row says this relay sleeps
	validUntil time.Time // the lease's local deadline; zero when not held
	renewed    time.Time

	leader    atomic.Bool
	delivered atomic.Int64
	dropped   atomic.Int64
	errs      atomic.Int64
	lag       atomic.Int64 // µs
	pending   atomic.Int64
	running   atomic.Bool

	logMu  sync.Mutex
	logged map[string]logged
}

// RelayStats describes a relay's work.
type RelayStats struct {
	// Leader reports whether this relay holds the lease.
	Leader bool
	// Delivered counts publications this relay delivered.
	Delivered int64
	// Dropped counts rows this relay could never publish (an invalid
	// channel or data, or data too large for the hub), marked delivered
	// and logged as errors. Only rows inserted by SQL can be such.
	Dropped int64
	// Errors counts failed attempts to publish or to reach the database.
	Errors int64
	// Lag is the age of the oldest publication that was committed but not
	// delivered when the leader last looked, 0 when there was none: how
	// far subscribers are behind the database. Only the leader measures it.
	Lag time.Duration
	// Pending is how many undelivered publications the leader's last
	// look found, at most RelayOptions.Batch.
	Pending int64
}

// NewRelay returns a relay that publishes o's publications through pub,
// usually the application's [live.Hub]. Start it with [Relay.Run].
func (o *Outbox) NewRelay(pub Publisher, opts RelayOptions) *Relay {
	if opts.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		opts.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if opts.Lease <= 0 {
		opts.Lease = 10 * time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.PollMin <= 0 {
		opts.PollMin = 20 * time.Millisecond
	}
	if opts.PollMax <= 0 {
		opts.PollMax = time.Second
		if opts.Listen != nil {
			opts.PollMax = 2 * time.Second
		}
	}
	opts.PollMax = max(opts.PollMax, opts.PollMin)
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Relay{o: o, pub: pub, opts: opts, wake: make(chan struct{}, 1), logged: map[string]logged{}}
}

// Wake has the relay look for publications at once.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Leader:    r.leader.Load(),
		Delivered: r.delivered.Load(),
		Dropped:   r.dropped.Load(),
		Errors:    r.errs.Load(),
		Lag:       time.Duration(r.lag.Load()) * time.Microsecond,
		Pending:   r.pending.Load(),
	}
}

// MetricsHandler serves the relay's Stats in the Prometheus text format,
// beside the Hub's [live.Hub.MetricsHandler].
func (r *Relay) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := r.Stats()
		var b strings.Builder
		metric := func(name, kind, help string, v any) {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, kind, name, v)
		}
		leader := 0
		if st.Leader {
			leader = 1
		}
		metric("live_outbox_leader", "gauge", "1 if this relay holds the outbox lease.", leader)
		metric("live_outbox_lag_seconds", "gauge", "Age of the oldest committed, undelivered publication when the leader last looked.", st.Lag.Seconds())
		metric("live_outbox_pending", "gauge", "Undelivered publications the leader last found (at most one batch).", st.Pending)
		metric("live_outbox_delivered_total", "counter", "Publications this relay delivered.", st.Delivered)
		metric("live_outbox_dropped_total", "counter", "Rows that could never be published, marked delivered.", st.Dropped)
		metric("live_outbox_errors_total", "counter", "Failed publishes and database calls.", st.Errors)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte(b.String()))
	})
}

// ErrRunning refuses a second Run of one Relay.
var ErrRunning = errors.New("outbox: relay already running")

// Run relays until ctx ends, then gives up its lease, so that another
// node's relay takes over at once, and returns ctx's error. Errors of the
// database or the publisher are logged, counted and retried.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	r.o.mu.Lock()
	r.o.relays[r] = struct{}{}
	r.o.mu.Unlock()
	defer func() {
		r.o.mu.Lock()
		delete(r.o.relays, r)
		r.o.mu.Unlock()
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.opts.Listen != nil {
		wg.Go(func() { r.listen(ctx) })
	}
	defer r.release()

	wait := r.opts.PollMin
	var lastPurge time.Time
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.epoch == "" {
			if err := r.o.db.QueryRowContext(ctx, r.o.q.relayRow).Scan(&r.epoch); err != nil {
				r.fail("read the outbox's epoch (has Migrate run?)", err)
				if !r.sleep(ctx, r.opts.PollMax) {
					return ctx.Err()
				}
				continue
			}
		}
		if !r.hold(ctx) {
			// Another relay works: look again before its lease could lapse,
			// not at every wake-up, which would only contend for its row.
			t := time.NewTimer(r.opts.Lease / 3)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		n, ok := r.round(ctx)
		if r.o.d == Postgres && ok {
			// A listening relay asks for NOTIFY when it goes to sleep, and
			// looks once more after asking; it stops asking when a look
			// finds many publications: under load, NOTIFY would hold the
			// commits back, and the relay finds work without it. One that
			// does not listen asks for none.
			want := r.idle
			switch {
			case r.opts.Listen == nil || n >= busy:
				want = false
			case n == 0:
				want = true
			}
			if want != r.idle {
				if _, err := r.o.db.ExecContext(ctx, r.o.q.idle, want, r.opts.Holder); err != nil {
					if ctx.Err() == nil {
						r.fail("ask for notifications", err)
					}
				} else {
					r.idle = want
					if want {
						continue
					}
				}
			}
		}
		if r.opts.Retention > 0 && time.Since(lastPurge) > min(time.Minute, max(r.opts.Retention/2, time.Second)) {
			lastPurge = time.Now()
			if _, err := r.o.db.ExecContext(ctx, r.o.q.purge, r.opts.Retention.Microseconds()); err != nil && ctx.Err() == nil {
				r.fail("delete delivered rows past retention", err)
			}
		}
		switch {
		case ok && n >= r.opts.Batch:
			wait = r.opts.PollMin
			continue // more is waiting
		case ok && n > 0:
			wait = r.opts.PollMin
			if r.o.d == Postgres && r.opts.Listen != nil {
				continue // until a look finds nothing and asks for NOTIFY
			}
		default:
			wait = min(wait*2, r.opts.PollMax)
		}
		if !r.sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// sleep waits d, or until a wake-up; false if ctx ended.
func (r *Relay) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-r.wake:
	}
	return true
}

// fail counts an error and logs it, at most once every 10 seconds for
// each kind of failure, with how many were not logged since.
func (r *Relay) fail(what string, err error) {
	r.errs.Add(1)
	r.logMu.Lock()
	l := r.logged[what]
	now := time.Now()
	if now.Sub(l.at) < 10*time.Second {
		l.skipped++
		r.logged[what] = l
		r.logMu.Unlock()
		return
	}
	skipped := l.skipped
	r.logged[what] = logged{at: now}
	r.logMu.Unlock()
	r.opts.Logger.Error("outbox: relay: "+what, "table", r.o.table, "holder", r.opts.Holder, "err", err, "unlogged", skipped)
}

// logged is when a kind of failure was last logged, and how many were
// not logged since.
type logged struct {
	at      time.Time
	skipped int
}

func (r *Relay) listen(ctx context.Context) {
	for {
		err := r.opts.Listen(ctx, r.o.table, r.Wake)
		if ctx.Err() != nil {
			return
		}
		r.fail("listen", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		r.Wake() // what was missed meanwhile
	}
}

// hold takes or renews the lease when due, and reports whether the relay
// holds it for long enough to work.
func (r *Relay) hold(ctx context.Context) bool {
	now := time.Now()
	if r.leader.Load() && now.Sub(r.renewed) < r.opts.Lease/3 && now.Before(r.validUntil) {
		return true
	}
	var res sql.Result
	var err error
	if r.o.d == MySQL {
		res, err = r.o.db.ExecContext(ctx, r.o.q.acquire, r.opts.Holder, r.opts.Lease.Microseconds(), r.opts.Holder)
	} else {
		res, err = r.o.db.ExecContext(ctx, r.o.q.acquire, r.opts.Holder, r.opts.Lease.Microseconds())
	}
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		if ctx.Err() == nil {
			r.fail("take the lease", err)
		}
		// Still ours until its local deadline, if it was.
		return r.leader.Load() && time.Now().Before(r.validUntil)
	}
	was := r.leader.Load()
	if n != 1 {
		if was {
			r.opts.Logger.Warn("outbox: relay: lease lost to another relay", "table", r.o.table, "holder", r.opts.Holder)
		}
		r.leader.Store(false)
		r.validUntil = time.Time{}
		r.lag.Store(0)
		r.pending.Store(0)
		return false
	}
	r.renewed = now
	r.validUntil = now.Add(r.opts.Lease - r.opts.Lease/5)
	if !was {
		r.idle = r.opts.Listen == nil // unknown: have the next look write it
		r.opts.Logger.Info("outbox: relay: lease taken", "table", r.o.table, "holder", r.opts.Holder)
	}
	r.leader.Store(true)
	return true
}

// release gives the lease up, if held.
func (r *Relay) release() {
	if !r.leader.Load() {
		return
	}
	r.leader.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := r.o.db.ExecContext(ctx, r.o.q.release, r.opts.Holder); err != nil {
		r.fail("give up the lease", err)
	}
}

// param returns the dialect's n-th bind parameter.
func (o *Outbox) param(n int) string {
	if o.d == Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// busy is how many publications a look finds for a listening relay on
// PostgreSQL to stop asking for NOTIFY.
const busy = 32

// A row is one publication read from the outbox.
type row struct {
	id      int64
	channel string
	seq     int64
	data    string
}

// key returns the idempotency key under which the relay publishes the
// row: the outbox's epoch, random and made once with its table, and the
// row's sequence number on its channel.
func (r *Relay) key(seq int64) string {
	return fmt.Sprintf("outbox.%s.%d", r.epoch, seq)
}

// round publishes one batch; n is how many rows it read, ok false if it
// could not read them or publish all.
func (r *Relay) round(ctx context.Context) (n int, ok bool) {
	// Publish nothing once the lease could have lapsed.
	ctx, cancel := context.WithDeadline(ctx, r.validUntil)
	defer cancel()
	rows, err := r.o.db.QueryContext(ctx, r.o.q.pending, r.opts.Batch)
	if err != nil {
		if ctx.Err() == nil {
			r.fail("read the outbox", err)
		}
		return 0, false
	}
	var order []string
	byChannel := map[string][]row{}
	var oldest, now int64
	for rows.Next() {
		var w row
		var created, dbNow int64
		if err := rows.Scan(&w.id, &w.channel, &w.seq, &w.data, &created, &dbNow); err != nil {
			rows.Close()
			r.fail("read the outbox", err)
			return 0, false
		}
		if n == 0 || created < oldest {
			oldest = created
		}
		now = dbNow
		if _, seen := byChannel[w.channel]; !seen {
			order = append(order, w.channel)
		}
		byChannel[w.channel] = append(byChannel[w.channel], w)
		n++
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		if ctx.Err() == nil {
			r.fail("read the outbox", err)
		}
		return 0, false
	}
	rows.Close()
	r.pending.Store(int64(n))
	if n == 0 {
		r.lag.Store(0)
		return 0, true
	}
	r.lag.Store(max(now-oldest, 0))

	ok = true
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.opts.Parallel)
	for _, ch := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if !r.channel(ctx, ch, byChannel[ch]) {
				mu.Lock()
				ok = false
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return n, ok
}

// channel publishes rows, a channel's, in order, stopping at the first
// failure, and marks those published; false if it stopped.
func (r *Relay) channel(ctx context.Context, channel string, rows []row) bool {
	type done struct {
		id  int64
		pos string
	}
	var marks []done
	ok := true
	for _, w := range rows {
		if _, _, err := live.CheckPublish(context.Background(), channel, []byte(w.data)); err != nil {
			r.dropped.Add(1)
			r.fail("drop a row that cannot be published", fmt.Errorf("id %d, seq %d: %w", w.id, w.seq, err))
			marks = append(marks, done{w.id, ""})
			continue
		}
		pctx, cancel := context.WithTimeout(live.WithPublishKey(ctx, r.key(w.seq)), r.opts.PublishTimeout)
		pos, err := r.pub.Publish(pctx, channel, json.RawMessage(w.data))
		cancel()
		switch {
		case err == nil:
			marks = append(marks, done{w.id, pos.String()})
			r.delivered.Add(1)
			continue
		case errors.Is(err, live.ErrGone):
			// Taken under its key long ago: delivered.
			marks = append(marks, done{w.id, ""})
			r.delivered.Add(1)
			continue
		case errors.Is(err, live.ErrTooLarge):
			r.dropped.Add(1)
			r.fail("drop a row that cannot be published", fmt.Errorf("id %d, seq %d: %w", w.id, w.seq, err))
			marks = append(marks, done{w.id, ""})
			continue
		}
		if ctx.Err() == nil {
			r.fail("publish", fmt.Errorf("channel %q, seq %d: %w", channel, w.seq, err))
		}
		ok = false
		break
	}
	if len(marks) == 0 {
		return ok
	}
	// Marked by one statement for up to 200 rows; should it fail, the rows
	// are published again under their keys, which delivers nothing twice.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for len(marks) > 0 {
		chunk := marks[:min(len(marks), 200)]
		marks = marks[len(chunk):]
		var q strings.Builder
		q.WriteString(r.o.q.mark)
		args := make([]any, 0, 3*len(chunk))
		for _, m := range chunk {
			var pos any
			if m.pos != "" {
				pos = m.pos
			}
			q.WriteString(" WHEN " + r.o.param(len(args)+1) + " THEN " + r.o.param(len(args)+2))
			args = append(args, m.id, pos)
		}
		q.WriteString(" END WHERE id IN (")
		for i, m := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString(r.o.param(len(args) + 1))
			args = append(args, m.id)
		}
		q.WriteString(")")
		if _, err := r.o.db.ExecContext(mctx, q.String(), args...); err != nil {
			r.fail("mark rows delivered", err)
			return false
		}
	}
	return ok
}
