package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// cuttable is an in-memory broker whose subscriptions can be cut, as a
// network broker's are when it loses its connection, and kept down until
// restored: what is published meanwhile is missed by the subscriber.
type cuttable struct {
	*live.MemoryBroker
	cuts chan chan struct{} // a send ends the active subscription with an error, then closes the channel sent

	mu sync.Mutex    // guards up
	up chan struct{} // closed while subscriptions may start
}

func newCuttable(t *testing.T) *cuttable {
	mem := live.NewMemoryBroker(nil)
	t.Cleanup(func() { mem.Close() })
	up := make(chan struct{})
	close(up)
	return &cuttable{MemoryBroker: mem, cuts: make(chan chan struct{}), up: up}
}

var errCut = errors.New("connection lost")

func (b *cuttable) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	b.mu.Lock()
	up := b.up
	b.mu.Unlock()
	select {
	case <-up:
	case <-ctx.Done():
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.MemoryBroker.Subscribe(ctx, channel, ready, deliver) }()
	select {
	case err := <-done:
		return err
	case cut := <-b.cuts:
		cancel()
		<-done
		b.mu.Lock()
		b.up = make(chan struct{})
		b.mu.Unlock()
		close(cut)
		return errCut
	}
}

// Follow follows through Subscribe, so that a cut reaches the hub: the
// embedded broker's own Follow would bypass it. stop waits for Subscribe
// to return, after which the broker calls nothing.
func (b *cuttable) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.Subscribe(ctx, channel, ready, deliver); err != nil && ctx.Err() == nil {
			ended(err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

// cut ends the active subscription and keeps new ones from starting until
// restore.
func (b *cuttable) cut(t *testing.T) {
	done := make(chan struct{})
	select {
	case b.cuts <- done:
	case <-time.After(waitTimeout):
		t.Fatal("no subscription to cut")
	}
	<-done
}

func (b *cuttable) restore() {
	b.mu.Lock()
	close(b.up)
	b.mu.Unlock()
}

// folded records what a follower applied.
type folded struct {
	mu      sync.Mutex // guards got
	got     []string
	changed chan struct{} // a value per apply
}

func (r *folded) apply(m live.Message) {
	r.mu.Lock()
	r.got = append(r.got, string(m.Data))
	r.mu.Unlock()
	r.changed <- struct{}{}
}

// await waits until n publications have been applied and returns them.
func (r *folded) await(t *testing.T, n int) []string {
	t.Helper()
	for {
		r.mu.Lock()
		got := slices.Clone(r.got)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.changed:
		case <-time.After(waitTimeout):
			t.Fatalf("%d publications applied, want %d: %v", len(got), n, got)
		}
	}
}

func publishN(t *testing.T, b live.Broker, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := b.Publish(t.Context(), "c", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

func numbers(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

// startFollower runs f until the end of t.
func startFollower(t *testing.T, f *follower) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	if err := f.wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestFollowerFillsHoles: a follower folds history on start, and when its
// subscription is lost it fills the hole from history: every publication
// once, in order.
func TestFollowerFillsHoles(t *testing.T) {
	b := newCuttable(t)
	publishN(t, b, 1, 3)
	r := &folded{changed: make(chan struct{}, 100)}
	startFollower(t, newFollower(b, "c", allHistory, servertest.Logger(t), r.apply))
	if got := r.await(t, 3); !slices.Equal(got, numbers(1, 3)) {
		t.Errorf("after the start: %v", got)
	}
	publishN(t, b, 4, 4)
	r.await(t, 4)

	for round := range 3 {
		b.cut(t)
		publishN(t, b, 5+3*round, 7+3*round)
		b.restore()
		want := numbers(1, 7+3*round)
		if got := r.await(t, len(want)); !slices.Equal(got, want) {
			t.Fatalf("after cut %d: %v, want %v", round+1, got, want)
		}
	}
	publishN(t, b, 14, 14)
	if got := r.await(t, 14); !slices.Equal(got, numbers(1, 14)) {
		t.Errorf("live again: %v", got)
	}
}

// TestFollowerBacklog: a follower asked for a backlog of n folds only the
// latest n publications before going live.
func TestFollowerBacklog(t *testing.T) {
	b := newCuttable(t)
	publishN(t, b, 1, 5)
	r := &folded{changed: make(chan struct{}, 100)}
	startFollower(t, newFollower(b, "c", 2, servertest.Logger(t), r.apply))
	publishN(t, b, 6, 6)
	if got := r.await(t, 3); !slices.Equal(got, numbers(4, 6)) {
		t.Errorf("got %v, want 4 to 6", got)
	}
}

// TestFollowerCatchUp: catchUp applies from history what the subscription
// has not delivered yet, even on a channel that was empty when the
// follower started, and the subscription then delivers nothing twice.
func TestFollowerCatchUp(t *testing.T) {
	b := newCuttable(t)
	r := &folded{changed: make(chan struct{}, 100)}
	f := newFollower(b, "c", allHistory, servertest.Logger(t), r.apply)
	startFollower(t, f)
	b.cut(t)
	publishN(t, b, 1, 3)
	if err := f.catchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.await(t, 3); !slices.Equal(got, numbers(1, 3)) {
		t.Errorf("after catchUp: %v", got)
	}
	b.restore()
	publishN(t, b, 4, 4)
	if got := r.await(t, 4); !slices.Equal(got, numbers(1, 4)) {
		t.Errorf("after the subscription is back: %v", got)
	}
}
