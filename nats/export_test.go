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

// PublishTogether publishes datas on channel as publishers that arrived
// together would, in as few messages as the limits allow, and returns
// their positions.
func PublishTogether(ctx context.Context, b *Broker, channel string, datas [][]byte) ([]live.Position, error) {
	items := make([]*pubItem, len(datas))
	for i, d := range datas {
		pc, err := b.acquirePub(channel)
		if err != nil {
			return nil, err
		}
		items[i] = &pubItem{data: d, done: make(chan struct{})}
		pc.mu.Lock()
		if pc.sending || len(pc.waiting) == 0 && i > 0 {
			pc.mu.Unlock()
			return nil, errors.New("PublishTogether needs the channel to itself")
		}
		pc.waiting = append(pc.waiting, items[i])
		pc.mu.Unlock()
	}
	pc, _ := b.acquirePub(channel)
	b.releasePub(pc, 1)
	pc.mu.Lock()
	pc.sending = true
	pc.mu.Unlock()
	b.sendWaiting(ctx, pc, items[0])
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
