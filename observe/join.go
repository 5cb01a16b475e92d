package observe

import (
	"context"
	"time"
)

// Join returns Hooks that call those of each of hooks in turn, as when a
// Prometheus collector and a tracer both watch a Hub. A field no hook
// sets stays nil, so the hub still skips it. Inject returns the first
// non-empty trace the hooks' Inject return (one trace travels with a
// publication); the done of Inject and of FanOut call every done
// returned. Nil hooks are skipped.
func Join(hooks ...*Hooks) *Hooks {
	var j Hooks
	j.Published = join(hooks, func(h *Hooks) (func(string, time.Duration, error), bool) { return h.Published, h.Published != nil },
		func(fs []func(string, time.Duration, error)) func(string, time.Duration, error) {
			return func(c string, d time.Duration, err error) {
				for _, f := range fs {
					f(c, d, err)
				}
			}
		})
	j.Wrote = join(hooks, func(h *Hooks) (func(string, int, time.Duration), bool) { return h.Wrote, h.Wrote != nil },
		func(fs []func(string, int, time.Duration)) func(string, int, time.Duration) {
			return func(tr string, n int, d time.Duration) {
				for _, f := range fs {
					f(tr, n, d)
				}
			}
		})
	durations := func(fs []func(time.Duration)) func(time.Duration) {
		return func(d time.Duration) {
			for _, f := range fs {
				f(d)
			}
		}
	}
	j.Waited = join(hooks, func(h *Hooks) (func(time.Duration), bool) { return h.Waited, h.Waited != nil }, durations)
	j.PollHeld = join(hooks, func(h *Hooks) (func(time.Duration), bool) { return h.PollHeld, h.PollHeld != nil }, durations)
	j.Pong = join(hooks, func(h *Hooks) (func(time.Duration), bool) { return h.Pong, h.Pong != nil }, durations)
	j.Inject = join(hooks, func(h *Hooks) (func(context.Context, string) (string, func(error)), bool) {
		return h.Inject, h.Inject != nil
	},
		func(fs []func(context.Context, string) (string, func(error))) func(context.Context, string) (string, func(error)) {
			return func(ctx context.Context, channel string) (string, func(error)) {
				trace := ""
				var dones []func(error)
				for _, f := range fs {
					t, done := f(ctx, channel)
					if trace == "" {
						trace = t
					}
					if done != nil {
						dones = append(dones, done)
					}
				}
				switch len(dones) {
				case 0:
					return trace, nil
				case 1:
					return trace, dones[0]
				}
				return trace, func(err error) {
					for _, d := range dones {
						d(err)
					}
				}
			}
		})
	j.FanOut = join(hooks, func(h *Hooks) (func(string, string) func(), bool) { return h.FanOut, h.FanOut != nil },
		func(fs []func(string, string) func()) func(string, string) func() {
			return func(channel, trace string) func() {
				var dones []func()
				for _, f := range fs {
					if d := f(channel, trace); d != nil {
						dones = append(dones, d)
					}
				}
				switch len(dones) {
				case 0:
					return nil
				case 1:
					return dones[0]
				}
				return func() {
					for _, d := range dones {
						d()
					}
				}
			}
		})
	return &j
}

// join returns the one hook field of hooks that is set, all of them
// joined by all when several are, or nil when none is.
func join[F any](hooks []*Hooks, field func(*Hooks) (F, bool), all func([]F) F) F {
	var fs []F
	for _, h := range hooks {
		if h == nil {
			continue
		}
		if f, ok := field(h); ok {
			fs = append(fs, f)
		}
	}
	switch len(fs) {
	case 0:
		var zero F
		return zero
	case 1:
		return fs[0]
	}
	return all(fs)
}
