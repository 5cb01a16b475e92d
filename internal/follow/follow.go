// Package follow helps a broker offer both ways of following a channel:
// live.Follower's, which holds no goroutine of the caller's, and
// live.Broker's Subscribe, which blocks, made here from the first. It
// does not import live, so that the root package uses it too.
package follow

import (
	"context"
	"errors"
	"sync"
)

// A Gate passes a follow's callbacks on, one at a time, until the follow
// ends or is stopped: once Shut has returned, no callback runs or will
// run. The broker calls its methods instead of the callbacks. Make one
// with New.
type Gate[P, M any] struct {
	mu      sync.Mutex // held while a callback runs; guards shut
	shut    bool
	ready   func(P)
	deliver func(M)
	ended   func(error)
}

// New returns an open gate in front of the three callbacks.
func New[P, M any](ready func(P), deliver func(M), ended func(error)) *Gate[P, M] {
	return &Gate[P, M]{ready: ready, deliver: deliver, ended: ended}
}

// Ready calls ready unless the gate is shut.
func (g *Gate[P, M]) Ready(p P) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.ready(p)
	}
}

// Deliver calls deliver unless the gate is shut.
func (g *Gate[P, M]) Deliver(m M) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.deliver(m)
	}
}

// End calls ended with err and shuts the gate, unless it is shut already.
func (g *Gate[P, M]) End(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.shut = true
		g.ended(err)
	}
}

// Shut shuts the gate, waiting for a callback that is running, and
// reports whether it was open.
func (g *Gate[P, M]) Shut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	open := !g.shut
	g.shut = true
	return open
}

// Subscribe follows with start until ctx ends, then stops and returns nil;
// if the follow ends first, it returns the error it ended with. An error
// from start is returned as it is. It is live.Broker's Subscribe for a
// broker that has live.Follower's Follow.
func Subscribe[P, M any](ctx context.Context, start func(ready func(P), deliver func(M), ended func(error)) (stop func(), err error), ready func(P), deliver func(M)) error {
	end := make(chan error, 1)
	stop, err := start(ready, deliver, func(err error) { end <- err })
	if err != nil {
		return err
	}
	defer stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-end:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// Start follows with subscribe, a blocking subscription, on a goroutine of
// its own that ends when stop is called or the subscription ends. It is
// live.Follower's Follow for a wrapper that changes a broker's Subscribe.
func Start[P, M any](subscribe func(ctx context.Context, ready func(P), deliver func(M)) error, ready func(P), deliver func(M), ended func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	g := New(ready, deliver, ended)
	go func() {
		err := subscribe(ctx, g.Ready, g.Deliver)
		if err == nil {
			err = errors.New("subscription ended early")
		}
		if ctx.Err() == nil {
			g.End(err)
		}
		cancel()
	}()
	return func() {
		cancel()
		g.Shut()
	}
}
