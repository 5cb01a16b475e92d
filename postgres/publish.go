package pgbroker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/go-live/live"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

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
