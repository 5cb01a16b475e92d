package natsbroker

import "github.com/go-live/live"

// SetDrop makes b's subscriptions ignore the messages for which drop
// returns true, as if the server had not republished them. Call it before
// any Subscribe.
func SetDrop(b *Broker, drop func(live.Position) bool) { b.drop = drop }
