package brokertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/follow"
)

// subscriber runs one Subscribe call on its own goroutine and records what
// the broker hands it. Its callbacks never block and never touch a
// testing.T: a broker may call them after the test is over, so misuses of
// the callbacks are kept as faults and reported by the test.
type subscriber struct {
	channel  string
	cancel   context.CancelFunc
	readyc   chan struct{} // closed by the first call of ready
	notify   chan struct{} // signalled after each delivery; buffer of 1
	done     chan struct{} // closed when Subscribe has returned
	err      error         // what Subscribe returned; read after done
	returned atomic.Bool   // Subscribe has returned
	busy     atomic.Int32  // deliver calls running
	ended    atomic.Bool   // the test has taken what Subscribe returned

	mu      sync.Mutex // guards head, readies, msgs and faults
	head    live.Position
	readies int
	msgs    []live.Message
	faults  []string
}

// followed holds the brokers whose subscriptions the suite makes with
// Follow (and stop once the subscription's context ends) instead of
// Subscribe, so that the Subscribe clauses check Follow too.
var followed sync.Map

// throughFollow reports whether the suite subscribes to b with Follow.
func throughFollow(b live.Broker) bool {
	if !reflect.TypeOf(b).Comparable() {
		return false
	}
	_, ok := followed.Load(b)
	return ok
}

// startSubscriber calls b.Subscribe on a new goroutine, which ends when
// Subscribe returns.
func startSubscriber(ctx context.Context, b live.Broker, channel string) *subscriber {
	ctx, cancel := context.WithCancel(ctx)
	s := &subscriber{
		channel: channel,
		cancel:  cancel,
		readyc:  make(chan struct{}),
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	subscribe := b.Subscribe
	if f, ok := b.(live.Follower); ok && throughFollow(b) {
		subscribe = func(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
			start := func(ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
				return f.Follow(channel, ready, deliver, ended)
			}
			return follow.Subscribe(ctx, start, ready, deliver)
		}
	}
	go func() {
		err := subscribe(ctx, channel, s.ready, s.deliver)
		s.returned.Store(true)
		s.err = err
		close(s.done)
	}()
	return s
}

// subscribe subscribes to channel for the rest of t and returns once the
// subscription is ready. When t ends, the subscription is cancelled,
// Subscribe must return nil (unless the test took its result with end or
// wait), and the deliveries must have followed the head without a gap.
func subscribe(t *testing.T, b live.Broker, channel string) *subscriber {
	t.Helper()
	s := startSubscriber(t.Context(), b, channel)
	t.Cleanup(func() {
		if !s.ended.Load() {
			// t.Context() has ended already; this one bounds the wait.
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := s.end(ctx); err != nil {
				t.Errorf("Subscribe(%q) after its context ended: %v, want nil", channel, err)
			}
		}
		s.report(t)
	})
	ctx, cancel := timeout(t)
	defer cancel()
	if err := s.awaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *subscriber) ready(head live.Position) {
	returned := s.returned.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readies++
	if s.readies == 1 {
		s.head = head
		close(s.readyc)
	} else {
		s.faultLocked("ready(%v) called again after ready(%v)", head, s.head)
	}
	if returned {
		s.faultLocked("ready(%v) called after Subscribe returned", head)
	}
}

func (s *subscriber) deliver(m live.Message) {
	if s.busy.Add(1) > 1 {
		s.fault("deliver(%v) called while another deliver was running", m.Pos)
	}
	defer s.busy.Add(-1)
	returned := s.returned.Load()
	s.mu.Lock()
	if s.readies == 0 {
		s.faultLocked("deliver(%v) called before ready", m.Pos)
	}
	if returned {
		s.faultLocked("deliver(%v) called after Subscribe returned", m.Pos)
	}
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *subscriber) fault(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultLocked(format, args...)
}

func (s *subscriber) faultLocked(format string, args ...any) {
	s.faults = append(s.faults, fmt.Sprintf("Subscribe(%q): ", s.channel)+fmt.Sprintf(format, args...))
}

// messages returns a copy of the deliveries so far.
func (s *subscriber) messages() []live.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// awaitReady waits for the first call of ready.
func (s *subscriber) awaitReady(ctx context.Context) error {
	select {
	case <-s.readyc:
		return nil
	case <-s.done:
		select {
		case <-s.readyc:
			return nil
		default:
		}
		return fmt.Errorf("Subscribe(%q) returned %v without calling ready", s.channel, s.err)
	case <-ctx.Done():
		return fmt.Errorf("Subscribe(%q) did not call ready: %w", s.channel, context.Cause(ctx))
	}
}

// waitFor waits until the deliveries so far satisfy enough, and returns
// them.
func (s *subscriber) waitFor(ctx context.Context, enough func([]live.Message) bool) ([]live.Message, error) {
	for {
		msgs := s.messages()
		if enough(msgs) {
			return msgs, nil
		}
		select {
		case <-s.notify:
		case <-s.done:
			if msgs := s.messages(); enough(msgs) {
				return msgs, nil
			}
			return msgs, fmt.Errorf("Subscribe(%q) returned %v while a delivery was awaited; deliveries: %s",
				s.channel, s.err, positions(msgs))
		case <-ctx.Done():
			return msgs, fmt.Errorf("Subscribe(%q): a delivery was awaited in vain: %w; deliveries: %s",
				s.channel, context.Cause(ctx), positions(msgs))
		}
	}
}

// await waits for n deliveries and returns all deliveries so far.
func (s *subscriber) await(t *testing.T, n int) []live.Message {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	msgs, err := s.waitFor(ctx, func(msgs []live.Message) bool { return len(msgs) >= n })
	if err != nil {
		t.Fatalf("awaiting %d deliveries: %v", n, err)
	}
	return msgs
}

// awaitPos waits for the delivery at pos, or one after it, and returns
// all deliveries so far. It returns at once if pos is not after the head.
// Waiting for a position rather than a number of deliveries lets a test
// report a lost or repeated delivery at once, instead of timing out or
// missing it.
func (s *subscriber) awaitPos(t *testing.T, pos live.Position) []live.Message {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	msgs, err := s.waitFor(ctx, func(msgs []live.Message) bool {
		return pos.Seq <= s.head.Seq || len(msgs) > 0 && msgs[len(msgs)-1].Pos.Seq >= pos.Seq
	})
	if err != nil {
		t.Fatalf("awaiting the delivery at %v: %v", pos, err)
	}
	return msgs
}

// end cancels the subscription, waits until Subscribe has returned, and
// returns what it returned.
func (s *subscriber) end(ctx context.Context) error {
	s.cancel()
	return s.wait(ctx)
}

// wait waits until Subscribe has returned, without cancelling it, and
// returns what it returned. The caller then owns that result: the cleanup
// of [subscribe] no longer expects nil.
func (s *subscriber) wait(ctx context.Context) error {
	select {
	case <-s.done:
		s.ended.Store(true)
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("Subscribe(%q) still running: %w", s.channel, context.Cause(ctx))
	}
}

// check returns the faults of the callbacks, and the first delivery that
// does not follow the head or the delivery before it.
func (s *subscriber) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.faults {
		errs = append(errs, errors.New(f))
	}
	if s.readies > 0 {
		for i, m := range s.msgs {
			if want := after(s.head, i+1); m.Pos != want || m.Channel != s.channel {
				errs = append(errs, fmt.Errorf("Subscribe(%q): delivery %d after ready(%v) is %v on %q, want %v",
					s.channel, i+1, s.head, m.Pos, m.Channel, want))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// report fails t with the errors check finds.
func (s *subscriber) report(t *testing.T) {
	t.Helper()
	if err := s.check(); err != nil {
		t.Error(err)
	}
}
