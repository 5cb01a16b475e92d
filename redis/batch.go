package redisbroker

import (
	"context"
	"fmt"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/batch"
	"github.com/redis/go-redis/v9"
)

// Concurrent publications share round trips and script calls (see
// internal/batch): one call of the publish script carries everything that
// waited, up to maxBatch publications, with at most maxCalls calls on
// their way at once. Under load each call carries many, which spares Redis
// most of its per-command work; alone, a publication goes out at once.

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

// batcher sends publications in script calls.
type batcher struct {
	ctx    context.Context // the broker's: ends at Close
	client *redis.Client
	common []any // the script's first arguments: history size and age, inline limit, TTL
	queue  batch.Queue[*publication]
}

func newBatcher(ctx context.Context, client *redis.Client, common []any) *batcher {
	q := &batcher{ctx: ctx, client: client, common: common}
	q.queue = batch.Queue[*publication]{Send: q.call, Calls: maxCalls, Max: maxBatch}
	return q
}

// publish sends p, in one script call with whatever else waits, on a
// sender goroutine of the queue's. It returns early with ctx's error if
// ctx ends first, in which case the publication may still be taken.
func (q *batcher) publish(ctx context.Context, p *publication) (live.Position, error) {
	p.done = make(chan struct{})
	if err := q.queue.Do(ctx, p, p.done); err != nil {
		return live.Position{}, err
	}
	return p.pos, p.err
}

// call publishes pubs in one script call and completes its publications.
// A failed call fails them all: Redis may have taken those before the
// failure, as when a reply is lost, but none is reported taken that was
// not.
func (q *batcher) call(pubs []*publication) {
	keys := make([]string, 0, 2*len(pubs))
	args := make([]any, 0, len(q.common)+3*len(pubs))
	args = append(args, q.common...)
	for _, p := range pubs {
		keys = append(keys, p.head, p.log)
		args = append(args, p.data, newEpoch(), p.pubsub)
	}
	// Each caller bounds its own wait; the call is bounded by the
	// client's timeouts, and by Close.
	res, err := publishScript.Run(q.ctx, q.client, keys, args...).Slice()
	if err == nil && len(res) != 2*len(pubs) {
		err = fmt.Errorf("unexpected reply of %d values from Redis for %d publications", len(res), len(pubs))
	}
	for i, p := range pubs {
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
