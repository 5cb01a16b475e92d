package natsbroker

import (
	"context"
	"errors"

	"github.com/go-live/live"
)

// SetDrop makes b's subscriptions ignore the messages for which drop
// returns true, as if the server had not republished them. Call it before
// any Subscribe.
func SetDrop(b *Broker, drop func(live.Position) bool) { b.drop = drop }

// SetInboxSize sets the room in the inbox of the brokers made from now
// on, and returns a function that restores it.
func SetInboxSize(n int) (restore func()) {
	was := inboxSize
	inboxSize = n
	return func() { inboxSize = was }
}

// PublishTogether publishes datas on channel as publishers that arrived
// together would, in as few messages as the limits allow, and returns
// their positions.
func PublishTogether(ctx context.Context, b *Broker, channel string, datas [][]byte) ([]live.Position, error) {
	pc, err := b.acquirePub(channel)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	pc.users += len(datas) - 1 // one per item, as queue counts
	b.mu.Unlock()
	items := make([]*pubItem, len(datas))
	pc.mu.Lock()
	if pc.sending {
		pc.mu.Unlock()
		b.releasePub(pc, len(datas))
		return nil, errors.New("PublishTogether needs the channel to itself")
	}
	for i, d := range datas {
		items[i] = &pubItem{data: d, done: make(chan struct{})}
	}
	pc.waiting, pc.sending = append(pc.waiting, items...), true // not items itself: take reuses the array
	pc.mu.Unlock()
	b.lead(ctx, pc)
	var pos []live.Position
	for _, it := range items {
		select {
		case <-it.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if it.err != nil {
			return nil, it.err
		}
		pos = append(pos, it.pos)
	}
	return pos, nil
}
