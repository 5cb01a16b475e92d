package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-live/live"
)

// A follower folds a channel's publications into the demo's own state (the
// activity feed, the metrics) in the broker's order, the way a live.State
// folds its channel. Every node sharing a broker follows the same stream,
// so GET /api/activity and GET /api/metrics answer the same on all of
// them, whichever node took the change.
type follower struct {
	broker  live.Broker
	history live.History // nil when the broker keeps none
	channel string
	backlog uint64 // how many publications before the head to fold on start
	apply   func(live.Message)
	logger  *slog.Logger

	caughtUp     chan struct{} // closed once the first subscription has caught up
	caughtUpOnce sync.Once

	mu         sync.Mutex     // guards last, held and catchingUp
	last       live.Position  // the latest publication applied, or the head the stream went on from
	held       []live.Message // deliveries that came while catching up
	catchingUp bool
}

// newFollower returns a follower of channel that, on start, folds the
// latest backlog publications history still holds (all of them with
// allHistory), then each new one. apply runs under the follower's lock,
// one publication at a time; it must not block.
func newFollower(b live.Broker, channel string, backlog uint64, logger *slog.Logger, apply func(live.Message)) *follower {
	h, _ := b.(live.History)
	return &follower{broker: b, history: h, channel: channel, backlog: backlog, apply: apply, logger: logger,
		caughtUp: make(chan struct{})}
}

// allHistory asks a follower to fold the channel from its first
// publication, as far as history reaches.
const allHistory = ^uint64(0)

// run follows the channel until ctx ends. When the subscription fails (the
// broker lost its connection, or detected a gap) it subscribes again,
// after a pause that doubles up to 5 s, and fills the hole from history.
func (f *follower) run(ctx context.Context) error {
	pause := 100 * time.Millisecond
	for {
		reached, err := f.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if reached {
			pause = 100 * time.Millisecond
		}
		f.logger.Warn("dashboard: following a channel failed; subscribing again", "channel", f.channel, "err", err, "in", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// once runs one subscription: it holds deliveries back while it folds
// what history has between the last publication applied and the head,
// then applies them and goes on live until the subscription ends. reached
// reports whether the subscription became active.
func (f *follower) once(ctx context.Context) (reached bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	f.catchingUp, f.held = true, nil
	f.mu.Unlock()

	ready := make(chan live.Position, 1)
	done := make(chan error, 1)
	go func() {
		done <- f.broker.Subscribe(ctx, f.channel, func(head live.Position) { ready <- head }, f.deliver)
	}()
	var head live.Position
	select {
	case head = <-ready:
	case err := <-done:
		return false, err
	}

	f.mu.Lock()
	from := f.last
	f.mu.Unlock()
	if from.Epoch != head.Epoch {
		// The first subscription, or the broker lost its numbering: start
		// backlog publications before the head.
		from = live.Position{Epoch: head.Epoch, Seq: head.Seq - min(head.Seq, f.backlog)}
	}
	var missed []live.Message
	if head.Seq > from.Seq && f.history != nil {
		missed, err = f.history.Since(ctx, f.channel, from)
		if errors.Is(err, live.ErrGone) {
			f.logger.Warn("dashboard: history no longer holds what this node missed; going on from the latest", "channel", f.channel, "from", from.String(), "head", head.String())
			missed, err = nil, nil
		}
		if err != nil {
			cancel()
			<-done
			return true, err
		}
	}

	f.mu.Lock()
	for _, m := range missed {
		f.take(m)
	}
	if f.last.Epoch != head.Epoch || f.last.Seq < head.Seq {
		// Whatever came before the head was applied, or cannot be: the
		// stream goes on from the head.
		f.last = head
	}
	for _, m := range f.held {
		f.take(m)
	}
	f.catchingUp, f.held = false, nil
	f.mu.Unlock()
	f.caughtUpOnce.Do(func() { close(f.caughtUp) })
	return true, <-done
}

// wait returns once the follower has folded what history held when it
// started, or when ctx ends.
func (f *follower) wait(ctx context.Context) error {
	select {
	case <-f.caughtUp:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("following %q: %w", f.channel, ctx.Err())
	}
}

// catchUp applies what the broker's history holds beyond the last
// publication applied, without waiting for the subscription to deliver it.
// A handler calls it when a client names an entry this node has not seen:
// another node may have added it an instant ago.
func (f *follower) catchUp(ctx context.Context) error {
	f.mu.Lock()
	from := f.last
	f.mu.Unlock()
	if f.history == nil || from.Epoch == "" {
		return nil
	}
	msgs, err := f.history.Since(ctx, f.channel, from)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		f.take(m)
	}
	return nil
}

// deliver is the broker's callback: it must not block.
func (f *follower) deliver(m live.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.catchingUp {
		f.held = append(f.held, m)
		return
	}
	f.take(m)
}

// take applies m unless it has been applied already. f.mu is held.
func (f *follower) take(m live.Message) {
	if m.Pos.Epoch == f.last.Epoch && m.Pos.Seq <= f.last.Seq {
		return
	}
	f.apply(m)
	f.last = m.Pos
}
