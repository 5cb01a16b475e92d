package redisbroker

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/batch"
	"github.com/redis/go-redis/v9"
)

// Concurrent publications share round trips and script calls (see
// internal/batch): one call of the publish script carries everything that
// waited, up to maxBatch publications, with at most maxCalls calls on
// their way at once. Under load each call carries many, which spares Redis
// most of its per-command work; alone, a publication goes out at once.
// On a cluster a script call may only touch one slot, so a batch is sent
// as one script call per channel, pipelined: one round trip per master.

// maxCalls bounds the script calls on their way at once.
const maxCalls = 2

// maxBatch bounds the publications of one call.
const maxBatch = 128

// publication is one publication on its way.
type publication struct {
	head, log, keys, pubsub string
	data                    []byte
	meta                    []byte // nil for none
	cond                    string // "<epoch> <seq>", the head required; "" for none
	key                     string // its idempotency key (live.PublishKey); "" for none
	pos                     live.Position
	err                     error
	done                    chan struct{}
}

// batcher sends publications in script calls.
type batcher struct {
	ctx     context.Context // the broker's: ends at Close
	client  redis.UniversalClient
	cluster *redis.ClusterClient // client, on a cluster; else nil
	common  []any                // the script's first arguments: history size and age, inline limit, TTL, cluster
	queue   batch.Queue[*publication]
}

func newBatcher(ctx context.Context, client redis.UniversalClient, cluster *redis.ClusterClient, common []any) *batcher {
	q := &batcher{ctx: ctx, client: client, cluster: cluster, common: common}
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

// call publishes pubs and completes them. A failed script call fails
// every publication it carried: Redis may have taken those before the
// failure, as when a reply is lost, but none is reported taken that was
// not.
func (q *batcher) call(pubs []*publication) {
	// Each caller bounds its own wait; the calls are bounded by the
	// client's timeouts, and by Close.
	if q.cluster == nil {
		keys, args := q.args(pubs)
		res, err := publishScript.Run(q.ctx, q.client, keys, args...).Slice()
		complete(pubs, res, err)
		return
	}
	groups := byChannel(pubs)
	cmds := make([]*redis.Cmd, len(groups))
	send := func(load bool) error {
		_, err := q.client.Pipelined(q.ctx, func(p redis.Pipeliner) error {
			for i, g := range groups {
				if cmds[i] != nil && !(load && isNoScript(cmds[i].Err())) {
					continue
				}
				keys, args := q.args(g)
				cmds[i] = publishScript.EvalSha(q.ctx, p, keys, args...)
			}
			return nil
		})
		return err
	}
	err := send(false)
	if err != nil && hasNoScript(cmds) {
		// A master that does not have the script yet (a new one, or one
		// that restarted) ran nothing: load it everywhere and send again
		// what it refused.
		if err = publishScript.Load(q.ctx, q.client).Err(); err == nil {
			err = send(true)
		}
	}
	if err != nil {
		// A master may be gone, or a slot elsewhere: have the client learn
		// the cluster's layout again before the next call.
		q.cluster.ReloadState(q.ctx)
	}
	for i, g := range groups {
		res, err := cmds[i].Slice()
		complete(g, res, err)
	}
}

// args returns the script's keys and arguments for pubs.
func (q *batcher) args(pubs []*publication) ([]string, []any) {
	keys := make([]string, 0, 3*len(pubs))
	args := make([]any, 0, len(q.common)+1+5*len(pubs))
	// One new epoch serves every channel of the call that needs one:
	// epochs tell one channel's numberings apart, not channels.
	args = append(args, q.common...)
	args = append(args, newEpoch())
	for _, p := range pubs {
		keys = append(keys, p.head, p.log, p.keys)
		args = append(args, p.data, p.pubsub, p.meta, p.cond, p.key)
	}
	return keys, args
}

// byChannel splits pubs by channel, keeping their order within each.
func byChannel(pubs []*publication) [][]*publication {
	var groups [][]*publication
	at := make(map[string]int) // by head key
	for _, p := range pubs {
		i, ok := at[p.head]
		if !ok {
			i = len(groups)
			at[p.head] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], p)
	}
	return groups
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

func hasNoScript(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if isNoScript(c.Err()) {
			return true
		}
	}
	return false
}

// complete completes pubs with a script call's reply, or its error.
func complete(pubs []*publication, res []any, err error) {
	if err == nil && len(res) != 2*len(pubs) {
		err = fmt.Errorf("unexpected reply of %d values from Redis for %d publications", len(res), len(pubs))
	}
	for i, p := range pubs {
		if err != nil {
			p.err = err
		} else {
			epoch, ok1 := res[2*i].(string)
			seq, ok2 := res[2*i+1].(int64)
			if ok1 && ok2 && p.cond != "" && epoch == "" && seq == 0 {
				p.err = live.ErrConflict
			} else if ok1 && ok2 && seq >= 1 {
				p.pos = live.Position{Epoch: epoch, Seq: uint64(seq)}
			} else {
				p.err = fmt.Errorf("unexpected reply %v from Redis", res[2*i:2*i+2])
			}
		}
		close(p.done)
	}
}
