// Package announce queues the announcements of publications that a
// broker's shared connection (a Redis pub/sub connection, a PostgreSQL
// listening connection) reads for one subscription, until the Subscribe
// call's own goroutine delivers them. The reader never waits for a
// subscriber: it appends, and a queue that outgrows its bounds fails, so
// that the Hub catches up from history instead.
package announce

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
)

// Bounds of a queue. Deliveries only queue work in the Hub, so a queue
// grows only while the subscriber reads large publications from the
// server; past these bounds the subscription fails.
const (
	MaxLen   = 1 << 14
	MaxBytes = 64 << 20
)

// ErrBehind is the failure of a queue that outgrew its bounds.
var ErrBehind = errors.New("subscription fell behind its announcements")

// A Queue holds the announcements for one subscription, oldest first, and
// why the subscription can no longer be trusted. One reader pushes and
// fails it; one Subscribe call awaits and drains it. Make it with New.
type Queue struct {
	signal chan struct{} // something was pushed or the queue failed; buffer of 1

	mu    sync.Mutex // guards queue, bytes and err
	queue []string
	bytes int
	err   error
}

// New returns an empty queue.
func New() *Queue {
	return &Queue{signal: make(chan struct{}, 1)}
}

// Push appends an announcement, or fails the queue with ErrBehind if that
// would outgrow its bounds. A failed queue takes nothing more.
func (q *Queue) Push(a string) {
	q.mu.Lock()
	if q.err == nil {
		if len(q.queue) >= MaxLen || q.bytes+len(a) > MaxBytes {
			q.err, q.queue, q.bytes = ErrBehind, nil, 0
		} else {
			q.queue = append(q.queue, a)
			q.bytes += len(a)
		}
	}
	q.mu.Unlock()
	q.notify()
}

// Fail records why the subscription can no longer be trusted, unless it
// failed already. The announcements queued before are still delivered.
func (q *Queue) Fail(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	q.notify()
}

func (q *Queue) notify() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// take returns the queued announcements and the failure, if any.
func (q *Queue) take() ([]string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	a := q.queue
	q.queue, q.bytes = nil, 0
	return a, q.err
}

// Failure returns why the queue failed, or nil.
func (q *Queue) Failure() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Await waits until active is closed (the subscription is in place), the
// queue fails, or ctx ends. Announcements pushed meanwhile stay queued:
// the caller sorts them out against the head it reads next. It returns
// the queue's failure, or nil; the caller checks ctx.
func (q *Queue) Await(ctx context.Context, active <-chan struct{}) error {
	for {
		select {
		case <-active:
			return nil
		case <-q.signal:
			if err := q.Failure(); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Drain calls handle with each announcement, oldest first, as they come,
// until ctx ends or handle fails (then it returns handle's error, or nil
// if ctx ended), or the queue fails (then it returns that failure, once
// the announcements queued before it are handled).
func (q *Queue) Drain(ctx context.Context, handle func(a string) error) error {
	for {
		batch, failed := q.take()
		for _, a := range batch {
			if err := handle(a); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		if failed != nil {
			return failed
		}
		select {
		case <-ctx.Done():
			return nil
		case <-q.signal:
		}
	}
}

// CutMeta splits the "<n> <meta><data>" form of an announcement that
// carries a hub's meta (n being meta's length in bytes).
func CutMeta(s string) (meta, data []byte, ok bool) {
	nPart, rest, ok := strings.Cut(s, " ")
	n, err := strconv.Atoi(nPart)
	if !ok || err != nil || n <= 0 || n > len(rest) {
		return nil, nil, false
	}
	return []byte(rest[:n]), []byte(rest[n:]), true
}
