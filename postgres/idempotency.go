package pgbroker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/jackc/pgx/v5"
)

// Idempotency returns a [live.IdempotencyStore] in the broker's schema,
// for [live.HookOptions].Idempotency: a retry that lands on another node
// is recognised there too. Each key is a row of the idempotency table with
// a lease: its request holds it until the lease ends (Extend renews it
// while the request runs), then the response
// replaces it until the window ends; expired rows are reclaimed by the
// next claim of their key and swept now and then.
func (b *Broker) Idempotency() live.IdempotencyStore { return &idempotency{b: b} }

type idempotency struct {
	b     *Broker
	saves atomic.Int64 // every sweepEvery-th Save sweeps expired rows
}

var _ live.IdempotencyStore = (*idempotency)(nil)

const sweepEvery = 256

// run runs f once the schema exists, and again if it went missing.
func (s *idempotency) run(ctx context.Context, f func() error) error {
	for try := 0; ; try++ {
		if err := s.b.ensure(ctx); err != nil {
			return err
		}
		err := f()
		if err == nil || try > 0 || !s.b.missing(err) {
			return err
		}
	}
}

func (s *idempotency) Claim(ctx context.Context, key string, ttl time.Duration) (claimed bool, response []byte, err error) {
	err = s.run(ctx, func() error {
		claimed, response = false, nil
		err := s.b.pool.QueryRow(ctx, inSchema(`
			INSERT INTO {schema}.idempotency AS i (key, response, expires)
			VALUES ($1, NULL, now() + $2 * interval '1 millisecond')
			ON CONFLICT (key) DO UPDATE SET response = NULL, expires = EXCLUDED.expires
				WHERE i.expires < now()
			RETURNING true`, s.b.schema), key, ttl.Milliseconds()).Scan(&claimed)
		if err == nil || !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Held: by a running request (NULL), or by its response. A row
		// that vanished meanwhile reads as running; the caller asks again.
		err = s.b.pool.QueryRow(ctx, inSchema(`SELECT response FROM {schema}.idempotency WHERE key = $1`, s.b.schema), key).Scan(&response)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	return claimed, response, err
}

func (s *idempotency) Save(ctx context.Context, key string, response []byte, ttl time.Duration) error {
	return s.run(ctx, func() error {
		_, err := s.b.pool.Exec(ctx, inSchema(`
			INSERT INTO {schema}.idempotency AS i (key, response, expires)
			VALUES ($1, $2, now() + $3 * interval '1 millisecond')
			ON CONFLICT (key) DO UPDATE SET response = EXCLUDED.response, expires = EXCLUDED.expires`, s.b.schema),
			key, response, ttl.Milliseconds())
		if err == nil && s.saves.Add(1)%sweepEvery == 0 {
			_, err = s.b.pool.Exec(ctx, inSchema(`DELETE FROM {schema}.idempotency WHERE expires < now()`, s.b.schema))
		}
		return err
	})
}

// Extend keeps a claim reserved for another ttl while its request runs.
func (s *idempotency) Extend(ctx context.Context, key string, ttl time.Duration) error {
	return s.run(ctx, func() error {
		_, err := s.b.pool.Exec(ctx, inSchema(`
			UPDATE {schema}.idempotency SET expires = now() + $2 * interval '1 millisecond'
			WHERE key = $1 AND response IS NULL`, s.b.schema), key, ttl.Milliseconds())
		return err
	})
}

func (s *idempotency) Release(ctx context.Context, key string) error {
	return s.run(ctx, func() error {
		_, err := s.b.pool.Exec(ctx, inSchema(`DELETE FROM {schema}.idempotency WHERE key = $1 AND response IS NULL`, s.b.schema), key)
		return err
	})
}
