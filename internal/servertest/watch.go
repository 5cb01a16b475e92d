package servertest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
)

// A Watcher runs one Subscribe call and records what the broker hands it.
type Watcher struct {
	readyc chan live.Position
	msgs   chan live.Message
	done   chan error
}

// Watch calls b.Subscribe on a new goroutine, cancelled and waited for at
// the end of t.
func Watch(t testing.TB, b live.Broker, channel string) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		readyc: make(chan live.Position, 1),
		msgs:   make(chan live.Message, 1<<14),
		done:   make(chan error, 1),
	}
	go func() {
		w.done <- b.Subscribe(ctx, channel,
			func(head live.Position) { w.readyc <- head },
			func(m live.Message) {
				select {
				case w.msgs <- m:
				default:
					panic("servertest: too many deliveries for a Watcher")
				}
			})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(Timeout):
			t.Errorf("Subscribe(%q) did not return after its context ended", channel)
		}
	})
	return w
}

// Ready waits for the call of ready and returns the head it was given.
func (w *Watcher) Ready(t testing.TB) live.Position {
	t.Helper()
	select {
	case head := <-w.readyc:
		return head
	case err := <-w.done:
		w.done <- err
		t.Fatalf("Subscribe returned %v before ready", err)
	case <-time.After(Timeout):
		t.Fatal("Subscribe did not call ready")
	}
	panic("unreachable")
}

// Next waits for the next delivery.
func (w *Watcher) Next(t testing.TB) live.Message {
	t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case err := <-w.done:
		w.done <- err
		t.Fatalf("Subscribe returned %v while a delivery was awaited", err)
	case <-time.After(Timeout):
		t.Fatal("no delivery")
	}
	panic("unreachable")
}

// NextN waits for the next n deliveries.
func (w *Watcher) NextN(t testing.TB, n int) []live.Message {
	t.Helper()
	got := make([]live.Message, 0, n)
	for range n {
		got = append(got, w.Next(t))
	}
	return got
}

// Pending returns the deliveries that Next has not returned yet, without
// waiting for more.
func (w *Watcher) Pending() []live.Message {
	var msgs []live.Message
	for {
		select {
		case m := <-w.msgs:
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
}

// Failure waits up to d for Subscribe to return, and returns its error,
// which must not be nil.
func (w *Watcher) Failure(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err
		if err == nil {
			t.Fatal("Subscribe returned nil before its context ended")
		}
		return err
	case <-time.After(d):
		t.Fatalf("Subscribe still running after %v", d)
	}
	panic("unreachable")
}

// ExpectFailed waits for Subscribe to return an error that mentions want,
// and checks that it delivered nothing that Next has not returned.
func (w *Watcher) ExpectFailed(t testing.TB, want string) {
	t.Helper()
	if err := w.Failure(t, Timeout); !strings.Contains(err.Error(), want) {
		t.Errorf("Subscribe = %v, want an error about %q", err, want)
	}
	if extra := w.Pending(); len(extra) > 0 {
		t.Errorf("delivered %v", extra)
	}
}
