package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// What a hub says of a publication to the other hubs travels beside the
// data, as its meta ([Message].Meta), never inside it: whom live delivery
// skips, that the data is a [Text]'s (and its event name), and that a
// message on a reserved channel comes from a hub. Only a
// Hub can attach meta: it hands it to the broker through the context of
// its Publish call, under a key no other package can make, and
// [CheckPublish] gives it to the broker. Whatever an application publishes
// reaches subscribers as data, and a message without meta on a reserved
// channel was not sent by a hub.

// meta is what a hub says of a publication. Encoded, it is never empty: a
// publication that a hub sends on a reserved channel carries at least
// "{}".
type meta struct {
	Except *except   `json:"except,omitempty"`
	Text   *textMark `json:"text,omitempty"`  // the data is a Text's, a JSON string
	Trace  string    `json:"trace,omitempty"` // Options.Observe.Inject's, for FanOut on every hub
}

// hubKey keys the meta of a publication a hub is making in its context.
type hubKey struct{}

// hubPublication is the value under hubKey: the meta to store, nil for
// none.
type hubPublication struct{ meta []byte }

// withMeta returns the context under which the hub hands a publication on
// channel to its broker, and the meta it carries: the exclusion ctx
// carries, whether it is text and, on a reserved channel, the mark that a
// hub sent it.
func withMeta(ctx context.Context, channel string) (context.Context, []byte) {
	var m []byte
	ex, text := exceptOf(ctx), textOf(ctx)
	if ex != nil || text != nil || reserved(channel) {
		m, _ = json.Marshal(meta{Except: ex, Text: text})
	}
	return context.WithValue(ctx, hubKey{}, &hubPublication{meta: m}), m
}

// withHubMeta attaches meta that withMeta made before to ctx, for a
// publication sent again.
func withHubMeta(ctx context.Context, meta []byte) context.Context {
	return context.WithValue(ctx, hubKey{}, &hubPublication{meta: meta})
}

// publishKeyKey keys a publication's idempotency key in its context.
type publishKeyKey struct{}

// maxPublishKeyLen bounds an idempotency key.
const maxPublishKeyLen = 128

// errPublishKey refuses an idempotency key that brokers cannot store.
var errPublishKey = errors.New("publish key: want 1 to 128 printable ASCII characters, no spaces")

// WithPublishKey returns a copy of ctx under which a publication (a call
// to [Hub.Publish], or to a Broker's Publish) is made with key as its
// idempotency key: a broker that has taken a publication under key on
// its channel takes no other, and returns the position of the one it
// took. Sending a publication again under the key of an attempt whose
// outcome is unknown (a timeout, a lost connection) then never delivers it
// twice. A key is 1 to 128 printable ASCII characters without spaces; a
// publication under another key is refused.
//
// The Hub keys by itself every publication it may send more than once:
// a [Hub.Hook]'s events, and those that wait for an unreachable broker.
// An application needs a key of its own only to retry a Publish whose
// error left it unsure, with the key of the first attempt.
func WithPublishKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, publishKeyKey{}, key)
}

// PublishKey returns the idempotency key that ctx carries for a
// publication ([WithPublishKey]), or "" for none.
//
// A Broker honours it: Publish under a key the broker has taken on the
// channel stores and delivers nothing and returns the position the key
// was taken at, for as long as the broker documents (the brokers of this
// module and its companions: while the publication is in the channel's
// history; a broker that keeps none may forget at once). The check and
// the append are one step: of several calls under one key, on any brokers
// sharing a server, one publishes. Keys are per channel. A broker that
// knows it took the key but no longer knows where returns an error
// matching ErrGone, which a Hub takes as done. [CheckPublish] refuses a
// key that is not valid.
func PublishKey(ctx context.Context) string {
	k, _ := ctx.Value(publishKeyKey{}).(string)
	return k
}

// checkPublishKey refuses a key that is not 1 to maxPublishKeyLen
// printable ASCII characters without spaces.
func checkPublishKey(key string) error {
	if len(key) == 0 || len(key) > maxPublishKeyLen {
		return errPublishKey
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return errPublishKey
		}
	}
	return nil
}

// readMeta reads what a hub attached to m. fromHub reports that m carries
// meta, which only a hub can attach.
func readMeta(m Message) (mt meta, fromHub bool) {
	if len(m.Meta) == 0 {
		return meta{}, false
	}
	if json.Unmarshal(m.Meta, &mt) != nil {
		// A hub made it, in a form this one does not know.
		return meta{}, true
	}
	return mt, true
}

// CheckPublish is the guard that every Broker's Publish, and any other way
// a broker offers to publish (in a database transaction, from an outbox),
// runs before taking a publication.
//
// For a publication a Hub makes, it returns data as it is and the hub's
// meta, which the broker stores beside data, never inside it, and gives
// back in [Message].Meta wherever it delivers the publication (Subscribe,
// History). For any other publication, such as an application's call to
// the broker itself, it refuses an invalid channel, a channel reserved for
// the hubs ("@live:…"), and data that is not one JSON value in UTF-8; it
// returns the data compacted, and nil meta. So nothing an application
// publishes is ever taken for what the hubs tell each other.
//
// Either way it refuses an idempotency key ([PublishKey]) that is not
// valid.
func CheckPublish(ctx context.Context, channel string, data []byte) (checked, meta []byte, err error) {
	if key, ok := ctx.Value(publishKeyKey{}).(string); ok {
		if err := checkPublishKey(key); err != nil {
			return nil, nil, fmt.Errorf("live: publish %q: %w", channel, err)
		}
	}
	if p, ok := ctx.Value(hubKey{}).(*hubPublication); ok {
		return data, p.meta, nil
	}
	if err := ValidChannel(channel); err != nil {
		return nil, nil, fmt.Errorf("live: publish: %w", err)
	}
	if reserved(channel) {
		return nil, nil, fmt.Errorf("live: publish %q: %w", channel, errReserved)
	}
	checked, err = compactValue(data)
	if err != nil {
		return nil, nil, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return checked, nil, nil
}
