package redisbroker

import (
	"context"
	"fmt"
	"sync"

	"github.com/go-live/live"
	"github.com/redis/go-redis/v9"
)

// Concurrent publications share round trips and script calls: a
// publication that finds fewer than maxCalls calls on their way sends
// every publication waiting, its own included, in one call of the publish
// script, and goes on sending what queued meanwhile until nothing waits.
// Alone, a publication goes out at once as before; under load each call
// carries many, which spares Redis most of its per-command work. Nothing
// waits for a timer.

// maxCalls bounds the script calls on their way at once.
const maxCalls = 2

// maxBatch bounds the publications of one call.
const maxBatch = 128

// publication is one publication on its way.
type publication struct {
	head, log, pubsub string
	data              []byte
	pos               live.Position
	err               error
	done              chan struct{}
}

// batcher queues publications for the script calls.
type batcher struct {
	client *redis.Client
	common []any // the script's first arguments: history size and age, inline limit, TTL

	mu      sync.Mutex // guards queue and sending
	queue   []*publication
	sending int // calls on their way
}

// publish sends p, in one script call with whatever else waits. It returns
// early with ctx's error if ctx ends first, in which case the publication
// may still be taken.
func (q *batcher) publish(ctx context.Context, p *publication) (live.Position, error) {
	p.done = make(chan struct{})
	q.mu.Lock()
	q.queue = append(q.queue, p)
	lead := q.sending < maxCalls
	if lead {
		q.sending++
	}
	q.mu.Unlock()
	if lead {
		q.send()
	}
	select {
	case <-p.done:
		return p.pos, p.err
	case <-ctx.Done():
		return live.Position{}, ctx.Err()
	}
}

// send makes calls of what waits until nothing does.
func (q *batcher) send() {
	for {
		q.mu.Lock()
		n := min(len(q.queue), maxBatch)
		if n == 0 {
			q.sending--
			q.mu.Unlock()
			return
		}
		batch := make([]*publication, n)
		copy(batch, q.queue)
		rest := copy(q.queue, q.queue[n:])
		clear(q.queue[rest:])
		q.queue = q.queue[:rest]
		q.mu.Unlock()
		q.call(batch)
	}
}

// call publishes batch in one script call and completes its publications.
// A failed call fails them all: Redis may have taken those before the
// failure, as when a reply is lost, but none is reported taken that was
// not.
func (q *batcher) call(batch []*publication) {
	keys := make([]string, 0, 2*len(batch))
	args := make([]any, 0, len(q.common)+3*len(batch))
	args = append(args, q.common...)
	for _, p := range batch {
		keys = append(keys, p.head, p.log)
		args = append(args, p.data, newEpoch(), p.pubsub)
	}
	// Each caller bounds its own wait; the call is bounded by the
	// client's timeouts.
	res, err := publishScript.Run(context.Background(), q.client, keys, args...).Slice()
	if err == nil && len(res) != 2*len(batch) {
		err = fmt.Errorf("unexpected reply of %d values from Redis for %d publications", len(res), len(batch))
	}
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			epoch, ok1 := res[2*i].(string)
			seq, ok2 := res[2*i+1].(int64)
			if ok1 && ok2 && seq >= 1 {
				p.pos = live.Position{Epoch: epoch, Seq: uint64(seq)}
			} else {
				p.err = fmt.Errorf("unexpected reply %v from Redis", res[2*i:2*i+2])
			}
		}
		close(p.done)
	}
}
