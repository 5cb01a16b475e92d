package pgbroker

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/paging"
)

// Since implements [live.History]. It reads the channel's row and the
// messages after after.Seq in one statement, so they agree, starting from
// the primary key rather than scanning.
func (b *Broker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	if err := b.checkHistory(ctx, channel); err != nil {
		return nil, err
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
	if err := b.checkHistory(ctx, channel); err != nil {
		return nil, err
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

// checkHistory returns the error with which Since and SincePage refuse
// a call at once, or nil.
func (b *Broker) checkHistory(ctx context.Context, channel string) error {
	if err := live.ValidChannel(channel); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("live: history %q: %w", channel, err)
	}
	if b.isClosed() {
		return fmt.Errorf("live: history %q: %w", channel, live.ErrClosed)
	}
	return nil
}
