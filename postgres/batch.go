package pgbroker

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/go-live/live"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Concurrent publications share transactions (see internal/batch): one
// transaction carries everything that waited, up to maxBatch publications,
// with at most maxCalls on their way at once, so that many publications
// share one round trip and one commit (one WAL flush). Alone, a
// publication goes out at once in its own, as before.

// maxCalls bounds the transactions of publications on their way at once.
const maxCalls = 2

// maxBatch bounds the publications of one transaction.
const maxBatch = 64

// publication is one publication on its way.
type publication struct {
	channel string
	head    *live.Position // the position the channel must be at; nil for none
	data    []byte
	meta    []byte // nil for none
	key     string // the idempotency key (live.PublishKey); "" for none
	pos     live.Position
	err     error
	done    chan struct{}
}

// publishBatched publishes p, on condition that its channel is at *p.head
// when p.head is not nil, in a transaction with whatever else waits. It
// returns early with ctx's error if ctx ends first, in which case the
// publication may still be taken.
func (b *Broker) publishBatched(ctx context.Context, p *publication) (live.Position, error) {
	p.done = make(chan struct{})
	if err := b.batch.Do(ctx, p, p.done); err != nil {
		return live.Position{}, err
	}
	return p.pos, p.err
}

// publishBatch publishes pubs in one transaction: pgx sends the batch in
// one round trip, run by PostgreSQL as one implicit transaction. The
// publications go in the order of their channels (those of one channel in
// the order they came), so that concurrent transactions take the channels'
// row locks in one order and never wait for each other in a cycle.
func (b *Broker) publishBatch(pubs []*publication) {
	ctx := b.ctx // each caller bounds its own wait; Close ends this
	defer func() {
		for _, p := range pubs {
			close(p.done)
		}
	}()
	alone := func() {
		for _, p := range pubs {
			p.pos, p.err = b.publishOne(ctx, p)
		}
	}
	if len(pubs) == 1 {
		alone()
		return
	}
	if err := b.ensure(ctx); err != nil {
		for _, p := range pubs {
			p.err = err
		}
		return
	}
	sorted := slices.Clone(pubs)
	slices.SortStableFunc(sorted, func(x, y *publication) int { return strings.Compare(x.channel, y.channel) })
	var batch pgx.Batch
	for _, p := range sorted {
		if p.head != nil {
			batch.Queue(b.publishIfSQL, b.publishIfArgs(p)...)
		} else {
			batch.Queue(b.publishSQL, b.publishArgs(p)...)
		}
	}
	res := b.pool.SendBatch(ctx, &batch)
	var qerr error
	for _, p := range sorted {
		var epoch string
		var seq int64
		err := res.QueryRow().Scan(&epoch, &seq)
		if err == nil && p.head != nil {
			// A refused condition took nothing, and is no failure of
			// the batch's.
			p.pos, p.err = conditionalPosition(*p.head, epoch, seq)
			if errors.Is(p.err, live.ErrConflict) {
				continue
			}
			err, p.err = p.err, nil
		} else if err == nil {
			p.pos, err = position(epoch, seq)
		}
		if err != nil && qerr == nil {
			qerr = err
		}
	}
	cerr := res.Close()
	var pgErr *pgconn.PgError
	switch {
	case qerr != nil && errors.As(qerr, &pgErr):
		// PostgreSQL refused one (a deadlock with an application's
		// transaction, a missing schema): the transaction rolled back and
		// nothing was taken. Each goes alone, as without batching.
		alone()
	case qerr != nil || cerr != nil:
		// The connection failed: the commit may or may not have happened.
		for _, p := range pubs {
			p.pos, p.err = live.Position{}, errors.Join(qerr, cerr)
		}
	}
}
