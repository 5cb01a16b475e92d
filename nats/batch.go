package natsbroker

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/go-live/live"
)

// Publications on one channel share round trips, as in the other
// brokers, but not through the Queue of internal/batch that the Redis and
// PostgreSQL brokers use: its senders are goroutines of its own, up to
// Calls at once, each taking whatever waits, on any channel. Here a batch is stored as one message
// of one channel, appended with Nats-Expected-Last-Subject-Sequence set
// to the sequence the previous message of that channel left, so:
//
//   - each channel has its own queue and exactly one sender at a time;
//     two senders on one channel would race each other for the same
//     position, and the loser would read the tail and try again;
//   - the sender owns the channel's tail between messages (pubChan.known,
//     pubChan.tail), which spares a publisher alone on its channel the
//     read of the tail before each message;
//   - the first sender is the publishing caller itself, bounded by its
//     own context when its publication goes alone, so that publishing
//     uncontended starts no goroutine; only what queues behind it goes
//     to a goroutine of the broker's (see lead);
//   - a batch ends early at an item that must go alone (a marker, a
//     publication with meta, a key or a head) and at maxBatchBytes;
//   - the queues are per channel, so idle ones are pruned (maxIdlePubs),
//     which a Queue that lives as long as its broker does not need.

// maxIdlePubs bounds the per-channel publishing state kept between
// publications.
const maxIdlePubs = 4096

// A pubChan is a channel's publishing state in this process. Its
// publications queue, and one sender at a time stores everything waiting
// as one message (see append), so that publishers on one channel share
// round trips instead of taking turns one round trip each. Each message
// starts from the tail the previous one left, so a process publishing
// alone needs one round trip per message.
//
// A publication that finds no sender sends itself, on its caller's
// goroutine and bounded by the caller's context if it goes alone; what
// queues meanwhile is left to a goroutine of the broker's, so that the
// caller returns when its own publication is done. Uncontended, publishing
// therefore starts no goroutine.
type pubChan struct {
	channel string
	users   int // guarded by Broker.mu: items not yet completed, and callers about to queue one

	mu      sync.Mutex // guards waiting and sending
	waiting []*pubItem
	sending bool // some goroutine is pc's sender; when false, waiting is empty

	// Owned by pc's sender.
	known bool
	tail  tail
}

// A pubItem is one publication on its way, or the marker that fixes a new
// channel's epoch.
type pubItem struct {
	data   []byte
	meta   []byte         // nil for none; an item with meta is stored alone
	head   *live.Position // the position the channel must be at; nil for none
	key    string         // its idempotency key (live.PublishKey), "" for none; a keyed item is stored alone
	marker bool
	fresh  bool // a marker for a channel just found without messages
	pos    live.Position
	err    error
	done   chan struct{}
}

// acquirePub returns channel's publishing state, counting the caller as a
// user until its item completes, so that it is not pruned meanwhile.
func (b *Broker) acquirePub(channel string) (*pubChan, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, live.ErrClosed
	}
	pc := b.pubs[channel]
	if pc == nil {
		if len(b.pubs) >= maxIdlePubs {
			for name, idle := range b.pubs {
				if idle.users == 0 {
					delete(b.pubs, name)
				}
			}
		}
		pc = &pubChan{channel: channel}
		b.pubs[channel] = pc
	}
	pc.users++
	return pc, nil
}

func (b *Broker) releasePub(pc *pubChan, n int) {
	b.mu.Lock()
	pc.users -= n
	b.mu.Unlock()
}

// queue publishes it on channel, as pc's sender if there is none, and
// waits for it, or for ctx.
func (b *Broker) queue(ctx context.Context, channel string, it *pubItem) (live.Position, error) {
	pc, err := b.acquirePub(channel)
	if err != nil {
		return live.Position{}, err
	}
	it.done = make(chan struct{})
	pc.mu.Lock()
	pc.waiting = append(pc.waiting, it)
	lead := !pc.sending
	pc.sending = true
	pc.mu.Unlock()
	if lead {
		b.lead(ctx, pc)
	}
	select {
	case <-it.done:
		return it.pos, it.err
	case <-ctx.Done():
		return live.Position{}, ctx.Err()
	}
}

// take takes up to maxBatch of the items waiting on pc, first come first;
// when none waits, it ends pc's sending and returns nil.
func (pc *pubChan) take() []*pubItem {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	n := min(len(pc.waiting), maxBatch)
	if n == 0 {
		pc.sending = false
		return nil
	}
	items := slices.Clone(pc.waiting[:n])
	rest := copy(pc.waiting, pc.waiting[n:])
	clear(pc.waiting[rest:])
	pc.waiting = pc.waiting[:rest]
	return items
}

// idle ends pc's sending and reports true if nothing waits.
func (pc *pubChan) idle() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.waiting) > 0 {
		return false
	}
	pc.sending = false
	return true
}

// lead is pc's sender on the goroutine of a caller that became it: it
// sends the first batch, which holds the caller's item, bounded by ctx if
// that item goes alone, and leaves what waits after it to a goroutine of
// the broker's (drain), so that the caller returns with its own.
func (b *Broker) lead(ctx context.Context, pc *pubChan) {
	items := pc.take()
	if len(items) > 1 {
		ctx = b.ctx
	}
	b.send(ctx, pc, items)
	if pc.idle() {
		return // uncontended: no goroutine
	}
	b.mu.Lock()
	closed := b.closed
	if !closed {
		b.senders.Add(1)
	}
	b.mu.Unlock()
	if closed {
		b.failWaiting(pc)
		return
	}
	go func() {
		defer b.senders.Done()
		b.drain(pc)
	}()
}

// drain is pc's sender until nothing waits.
func (b *Broker) drain(pc *pubChan) {
	for items := pc.take(); items != nil; items = pc.take() {
		b.send(b.ctx, pc, items)
	}
}

// failWaiting fails what waits on pc with live.ErrClosed, and ends its
// sending.
func (b *Broker) failWaiting(pc *pubChan) {
	pc.mu.Lock()
	items := pc.waiting
	pc.waiting, pc.sending = nil, false
	pc.mu.Unlock()
	for _, it := range items {
		it.err = live.ErrClosed
		close(it.done)
	}
	b.releasePub(pc, len(items))
}

// maxBatch bounds the publications stored as one message; maxBatchBytes
// bounds their data, well under the server's default payload limit of
// 1 MiB. A larger publication goes alone.
const (
	maxBatch      = 64
	maxBatchBytes = 256 << 10
)

// send stores items, in order, as few messages as it can (a marker, an
// item with meta, a conditional publication or a keyed one goes alone),
// and completes them. The caller is pc's sender.
func (b *Broker) send(ctx context.Context, pc *pubChan, items []*pubItem) {
	defer b.releasePub(pc, len(items))
	alone := func(it *pubItem) bool { return it.marker || it.meta != nil || it.head != nil || it.key != "" }
	for len(items) > 0 {
		n, size := 1, len(items[0].data)
		if !alone(items[0]) {
			for n < len(items) && !alone(items[n]) && size+len(items[n].data) <= maxBatchBytes {
				size += len(items[n].data)
				n++
			}
		}
		run := items[:n]
		items = items[n:]
		var pos live.Position
		var err error
		if run[0].marker {
			if run[0].fresh && !pc.known {
				// Its caller just read the channel and found no
				// message: the marker goes out in a new epoch, expected
				// first on the subject, without reading it again; if
				// another node published meanwhile, append reads its
				// message.
				pc.tail, pc.known = tail{pos: live.Position{Epoch: newEpoch()}}, true
			} else {
				// Another node may have published since this one last
				// did.
				pc.known = false
			}
			pos, err = b.append(ctx, pc, nil, nil, nil, "")
		} else {
			datas := make([][]byte, len(run))
			for i, it := range run {
				datas[i] = it.data
			}
			pos, err = b.append(ctx, pc, datas, run[0].meta, run[0].head, run[0].key)
		}
		if err != nil && b.isClosed() {
			err = fmt.Errorf("%w: %w", live.ErrClosed, err)
		}
		first := pos.Seq + 1 - uint64(len(run))
		for i, it := range run {
			if err != nil {
				it.err = err
			} else if it.marker {
				it.pos = pos
			} else {
				it.pos = live.Position{Epoch: pos.Epoch, Seq: first + uint64(i)}
			}
			close(it.done)
		}
	}
}
