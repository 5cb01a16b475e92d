// Package batch gathers concurrent calls into batches without a timer.
//
// An item that finds fewer than the allowed batches on their way starts a
// sender, which sends every item waiting, that one included, and goes on
// sending what queued meanwhile until nothing waits. Alone, an item goes
// out at once; under load each batch carries whatever arrived while the
// previous ones were on their way. The Redis and PostgreSQL brokers use it
// to share round trips between publications. The NATS broker batches
// each channel on its own, with one sender per channel that starts on the
// publishing caller's goroutine; nats/batch.go says why.
package batch

import (
	"context"
	"sync"

	"github.com/go-live/live"
)

// A Queue sends items in batches through its Send function, at most
// Calls batches at once, each of at most Max items. Senders are
// goroutines of the Queue's own, which Close waits for.
type Queue[T any] struct {
	Send  func([]T) // sends one batch and reports each item's outcome through the item
	Calls int       // batches on their way at once; 0 means 1
	Max   int       // items in a batch; 0 means no bound

	mu      sync.Mutex // guards queue, sending and closed
	queue   []T
	sending int
	closed  bool
	senders sync.WaitGroup
}

// Add queues item for a batch and reports whether it could: after Close it
// cannot. It does not wait for the batch.
func (q *Queue[T]) Add(item T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.queue = append(q.queue, item)
	if q.sending < max(q.Calls, 1) {
		q.sending++
		q.senders.Go(q.send)
	}
	return true
}

// Do queues item and waits until done closes, which Send does once it has
// reported item's outcome through item. It returns ctx's error if ctx ends
// first, in which case item may still be sent, and live.ErrClosed after
// Close.
func (q *Queue[T]) Do(ctx context.Context, item T, done <-chan struct{}) error {
	if !q.Add(item) {
		return live.ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close makes later calls of Add fail and waits until everything queued
// has been sent.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.senders.Wait()
}

// send sends batches until nothing waits.
func (q *Queue[T]) send() {
	for {
		q.mu.Lock()
		n := len(q.queue)
		if q.Max > 0 {
			n = min(n, q.Max)
		}
		if n == 0 {
			q.sending--
			q.mu.Unlock()
			return
		}
		batch := make([]T, n)
		copy(batch, q.queue)
		rest := copy(q.queue, q.queue[n:])
		clear(q.queue[rest:])
		q.queue = q.queue[:rest]
		q.mu.Unlock()
		q.Send(batch)
	}
}
