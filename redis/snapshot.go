package redisbroker

import (
	"context"
	"fmt"

	"github.com/go-live/live"
)

// snapshotKey returns the key of the hash that keeps channel's snapshot.
func (b *Broker) snapshotKey(channel string) string {
	return b.prefix + "{" + channel + "}:snap"
}

// SaveSnapshot implements [live.Snapshots]. The snapshot is a hash
// beside the channel's head, in its hash slot, kept as long as the head.
func (b *Broker) SaveSnapshot(ctx context.Context, channel string, pos live.Position, data []byte) error {
	if b.isClosed() {
		return fmt.Errorf("live: snapshot %q: %w", channel, live.ErrClosed)
	}
	if err := b.checkName(channel); err != nil {
		return fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	keys := []string{b.keys(channel)[0], b.snapshotKey(channel)}
	ttl := b.ttl.Milliseconds()
	if err := saveSnapshotScript.Run(ctx, b.client, keys, pos.Epoch, pos.Seq, data, ttl).Err(); err != nil {
		return fmt.Errorf("live: snapshot %q at %v: %w", channel, pos, err)
	}
	return nil
}

// Snapshot implements [live.Snapshots].
func (b *Broker) Snapshot(ctx context.Context, channel string) (live.Position, []byte, error) {
	if b.isClosed() {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, live.ErrClosed)
	}
	if err := b.checkName(channel); err != nil {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	res, err := b.client.HMGet(ctx, b.snapshotKey(channel), "epoch", "seq", "data").Result()
	if err != nil {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	epoch, _ := res[0].(string)
	data, _ := res[2].(string)
	if epoch == "" {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, live.ErrGone)
	}
	seq, err := parseSeq(res[1])
	if err != nil {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	return live.Position{Epoch: epoch, Seq: seq}, []byte(data), nil
}
