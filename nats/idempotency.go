package natsbroker

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go/jetstream"
)

// Idempotency returns a [live.IdempotencyStore] in a JetStream key-value
// bucket next to the broker's stream ("<prefix>_idempotency"), for
// [live.HookOptions].Idempotency: a retry that lands on another node is
// recognised there too. Each entry holds its own expiry: a claim is created
// only if the key is absent, and one whose lease ended is taken over with
// a compare-and-set on its revision. The bucket forgets entries after an
// hour whatever RetryWindow says, which bounds what it holds.
func (b *Broker) Idempotency() live.IdempotencyStore { return &idempotency{b: b} }

type idempotency struct {
	b  *Broker
	mu sync.Mutex // guards kv
	kv jetstream.KeyValue
}

var _ live.IdempotencyStore = (*idempotency)(nil)

// bucketAge is how long the bucket keeps an entry at most.
const bucketAge = time.Hour

func (s *idempotency) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s.b.prefix) + "_idempotency"
	kv, err := s.b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, History: 1, TTL: bucketAge, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	s.kv = kv
	return kv, nil
}

// An entry is its expiry in Unix milliseconds, then the response; no
// response means a claim.
func entry(expires time.Time, response []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(expires.UnixMilli())), response...)
}

func parseEntry(v []byte) (expires time.Time, response []byte) {
	if len(v) < 8 {
		return time.Time{}, nil
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(v))), v[8:]
}

// kvKey makes a hub's key a valid key-value key.
func kvKey(key string) string { return strings.ReplaceAll(key, ":", ".") }

func (s *idempotency) Claim(ctx context.Context, key string, ttl time.Duration) (bool, []byte, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return false, nil, err
	}
	k := kvKey(key)
	for {
		now := time.Now()
		_, err := kv.Create(ctx, k, entry(now.Add(ttl), nil))
		if err == nil {
			return true, nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil, err
		}
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone meanwhile
		}
		if err != nil {
			return false, nil, err
		}
		expires, response := parseEntry(e.Value())
		if now.Before(expires) {
			if len(response) == 0 {
				return false, nil, nil
			}
			return false, response, nil
		}
		if _, err := kv.Update(ctx, k, entry(now.Add(ttl), nil), e.Revision()); err == nil {
			return true, nil, nil
		}
		// Another node took it over first: look again.
	}
}

func (s *idempotency) Save(ctx context.Context, key string, response []byte, ttl time.Duration) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, kvKey(key), entry(time.Now().Add(ttl), response))
	return err
}

// Extend keeps a claim reserved for another ttl while its request runs:
// it rewrites the claim with a later expiry, unless the entry changed.
func (s *idempotency) Extend(ctx context.Context, key string, ttl time.Duration) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, response := parseEntry(e.Value()); len(response) > 0 {
		return nil // saved meanwhile
	}
	_, err = kv.Update(ctx, kvKey(key), entry(time.Now().Add(ttl), nil), e.Revision())
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return nil // changed meanwhile: no longer this hub's claim
	}
	return err
}

func (s *idempotency) Release(ctx context.Context, key string) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, response := parseEntry(e.Value()); len(response) > 0 {
		return nil // saved: keep it
	}
	err = kv.Delete(ctx, kvKey(key), jetstream.LastRevision(e.Revision()))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return nil // changed meanwhile: no longer this hub's claim
	}
	return err
}
