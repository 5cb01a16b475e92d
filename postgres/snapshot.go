package pgbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-live/live"
	"github.com/jackc/pgx/v5"
)

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
