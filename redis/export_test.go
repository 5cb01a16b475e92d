package redisbroker

import (
	"testing"

	"github.com/go-live/live"
)

// PublishCall publishes data[i] on channel under keys[i] ("" for none),
// all in one call of the publish script, as the broker sends publications
// that waited together. It returns what each publication returned.
func PublishCall(b *Broker, channel string, keys, data []string) ([]live.Position, []error) {
	pubs := make([]*publication, len(data))
	for i := range data {
		p := &publication{data: []byte(data[i]), key: keys[i], done: make(chan struct{})}
		p.head, p.log, p.keys, p.pubsub = b.names(channel)
		pubs[i] = p
	}
	b.batch.call(pubs)
	pos := make([]live.Position, len(pubs))
	errs := make([]error, len(pubs))
	for i, p := range pubs {
		pos[i], errs[i] = p.pos, p.err
	}
	return pos, errs
}

// SetMaxUnconfirmed bounds the channels awaiting their SUBSCRIBE's
// confirmation on a connection at n until the test ends.
func SetMaxUnconfirmed(t testing.TB, n int) {
	old := maxUnconfirmed
	maxUnconfirmed = n
	t.Cleanup(func() { maxUnconfirmed = old })
}
