package redisbroker

import (
	"context"
	"errors"
	"time"

	"github.com/go-live/live"
	"github.com/redis/go-redis/v9"
)

// Idempotency returns a [live.IdempotencyStore] on the broker's Redis, for
// [live.HookOptions].Idempotency: a retry that lands on another node is
// recognised there too. Each key is one string under the broker's prefix,
// set with NX while its request runs (its expiry renewed by Extend) and
// overwritten with the response, both with an expiry, so Redis forgets
// them by itself.
func (b *Broker) Idempotency() live.IdempotencyStore { return idempotency{b} }

type idempotency struct{ b *Broker }

var _ live.IdempotencyStore = idempotency{}

// claimed is the value of a key whose request is running: responses are
// JSON objects, never empty.
const claimed = ""

// claimScript reserves a key unless it exists, and returns its value
// otherwise, in one step.
var claimScript = redis.NewScript(`
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
	return false
end
return redis.call("GET", KEYS[1])
`)

func (s idempotency) key(k string) string { return s.b.prefix + k }

func (s idempotency) Claim(ctx context.Context, key string, ttl time.Duration) (bool, []byte, error) {
	v, err := claimScript.Run(ctx, s.b.client, []string{s.key(key)}, claimed, ttl.Milliseconds()).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return true, nil, nil
	case err != nil:
		return false, nil, err
	case v == claimed:
		return false, nil, nil
	}
	return false, []byte(v), nil
}

func (s idempotency) Save(ctx context.Context, key string, response []byte, ttl time.Duration) error {
	return s.b.client.Set(ctx, s.key(key), response, ttl).Err()
}

// extendScript renews a key's expiry only while it is a claim.
var extendScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
`)

// Extend keeps a claim reserved for another ttl while its request runs.
func (s idempotency) Extend(ctx context.Context, key string, ttl time.Duration) error {
	return extendScript.Run(ctx, s.b.client, []string{s.key(key)}, claimed, ttl.Milliseconds()).Err()
}

// releaseScript deletes a key only while it is a claim.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	redis.call("DEL", KEYS[1])
end
return 0
`)

func (s idempotency) Release(ctx context.Context, key string) error {
	return releaseScript.Run(ctx, s.b.client, []string{s.key(key)}, claimed).Err()
}
