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
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/go-live/live"
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

// ErrGap is the failure of a subscription that was announced a
// publication out of turn: the announcements of those between were lost.
var ErrGap = errors.New("publications missing from the announcements")

// Deliver delivers the publication that announcement a describes, if it
// is the one after *last, and advances *last. An announcement is
// "<epoch> <seq> d<data>", "<epoch> <seq> m<n> <meta><data>" for a
// publication with n bytes of meta, or "<epoch> <seq> r" when the data
// must be read from the broker's store (named store in errors): read
// returns some of the channel's publications after a position, oldest
// first. It reads the one announced with those after it, which are
// announced already or soon will be: their announcements are then skipped
// as old, and one read serves a burst of large publications.
//
// An announcement at or before *last (from before the head the
// subscription started at, or a repeat) is skipped; one in another epoch,
// after a gap, or malformed is an error.
func Deliver(channel string, last *live.Position, a, store string, read func(after live.Position) ([]live.Message, error), deliver func(live.Message)) error {
	epoch, rest, ok1 := strings.Cut(a, " ")
	seqPart, rest, ok2 := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if !ok1 || !ok2 || err != nil || rest == "" || (rest[0] != 'd' && rest[0] != 'm' && rest[0] != 'r') {
		return fmt.Errorf("malformed announcement %.60q", a)
	}
	switch {
	case epoch != last.Epoch:
		return fmt.Errorf("announcement at %d.%s: the channel's epoch changed (was its data lost?)", seq, epoch)
	case seq <= last.Seq:
		return nil // at or before the head, or a repeat
	case seq != last.Seq+1:
		return fmt.Errorf("%w: announcement at %d.%s", ErrGap, seq, epoch)
	}
	pos := live.Position{Epoch: epoch, Seq: seq}
	switch rest[0] {
	case 'd':
		deliver(live.Message{Channel: channel, Pos: pos, Data: []byte(rest[1:])})
		*last = pos
		return nil
	case 'm':
		meta, data, ok := CutMeta(rest[1:])
		if !ok {
			return fmt.Errorf("malformed announcement %.60q", a)
		}
		deliver(live.Message{Channel: channel, Pos: pos, Data: data, Meta: meta})
		*last = pos
		return nil
	}
	msgs, err := read(*last)
	if errors.Is(err, live.ErrGone) {
		return fmt.Errorf("publication %v left history before it could be read", pos)
	}
	if err != nil {
		return fmt.Errorf("reading publication %v: %w", pos, err)
	}
	if len(msgs) == 0 || msgs[0].Pos != pos {
		// An announcement is sent once its publication is stored.
		return fmt.Errorf("publication %v announced but not in %s", pos, store)
	}
	for _, m := range msgs {
		deliver(m)
		*last = m.Pos
	}
	return nil
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
