package announce_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// drain drains q on a goroutine until it fails or ctx ends, and returns
// what it handled and returned.
func drain(ctx context.Context, q *announce.Queue) (<-chan string, <-chan error) {
	got := make(chan string, announce.MaxLen+1)
	done := make(chan error, 1)
	go func() {
		done <- q.Drain(ctx, func(a string) error {
			got <- a
			if a == "bad" {
				return errors.New("bad announcement")
			}
			return nil
		})
	}()
	return got, done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return")
	}
	panic("unreachable")
}

// What was pushed before a failure is handled, in order, then the failure
// ends Drain; nothing pushed after it is taken.
func TestFailAfterPushes(t *testing.T) {
	q := announce.New()
	for i := range 3 {
		q.Push(strconv.Itoa(i))
	}
	cause := errors.New("connection lost")
	q.Fail(cause)
	q.Fail(errors.New("later"))
	q.Push("after")
	got, done := drain(t.Context(), q)
	if err := wait(t, done); !errors.Is(err, cause) {
		t.Errorf("Drain = %v, want %v", err, cause)
	}
	var all []string
	for len(got) > 0 {
		all = append(all, <-got)
	}
	if diff := cmp.Diff([]string{"0", "1", "2"}, all); diff != "" {
		t.Errorf("handled (-want +got):\n%s", diff)
	}
}

// A queue fails with ErrBehind past either bound, and drops what it held.
func TestBounds(t *testing.T) {
	for _, tt := range []struct {
		name string
		push func(q *announce.Queue)
	}{
		{"MaxLen", func(q *announce.Queue) {
			for range announce.MaxLen + 1 {
				q.Push("a")
			}
		}},
		{"MaxBytes", func(q *announce.Queue) {
			big := strings.Repeat("x", announce.MaxBytes/2)
			for range 3 {
				q.Push(big)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := announce.New()
			tt.push(q)
			got, done := drain(t.Context(), q)
			if err := wait(t, done); !errors.Is(err, announce.ErrBehind) {
				t.Errorf("Drain = %v, want ErrBehind", err)
			}
			if len(got) != 0 {
				t.Errorf("handled %d announcements of a queue that fell behind", len(got))
			}
		})
	}
}

// Drain hands over announcements as they come, returns handle's error,
// and returns nil once its context ends.
func TestDrain(t *testing.T) {
	q := announce.New()
	got, done := drain(t.Context(), q)
	for i := range 100 {
		q.Push(strconv.Itoa(i))
		if a := <-got; a != strconv.Itoa(i) {
			t.Fatalf("handled %q, want %d", a, i)
		}
	}
	q.Push("bad")
	if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "bad announcement") {
		t.Errorf("Drain = %v, want handle's error", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	_, done = drain(ctx, announce.New())
	cancel()
	if err := wait(t, done); err != nil {
		t.Errorf("Drain after its context ended = %v, want nil", err)
	}
}

// Await returns when the subscription is active, keeping what was pushed,
// or with the failure.
func TestAwait(t *testing.T) {
	q := announce.New()
	active := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- q.Await(t.Context(), active) }()
	q.Push("early")
	close(active)
	if err := wait(t, done); err != nil {
		t.Errorf("Await = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	got, drained := drain(ctx, q)
	if a := <-got; a != "early" {
		t.Errorf("first announcement after Await = %q, want early", a)
	}
	cancel()
	if err := wait(t, drained); err != nil {
		t.Errorf("Drain after its context ended = %v, want nil", err)
	}

	q = announce.New()
	cause := errors.New("listener lost")
	go func() { done <- q.Await(t.Context(), make(chan struct{})) }()
	q.Fail(cause)
	if err := wait(t, done); !errors.Is(err, cause) {
		t.Errorf("Await = %v, want %v", err, cause)
	}
}

// Deliver delivers the publication after the last one from what the
// announcement carries, or reads it and those after it from the store;
// it skips an announcement at or before the last one, and fails on one
// out of turn or malformed.
func TestDeliver(t *testing.T) {
	stored := []live.Message{
		{Channel: "c", Pos: live.Position{Epoch: "e", Seq: 2}, Data: []byte("two")},
		{Channel: "c", Pos: live.Position{Epoch: "e", Seq: 3}, Data: []byte("three")},
	}
	for _, tt := range []struct {
		name, a string
		store   []live.Message // what the store holds after Seq 1
		want    []live.Message
		err     string // in the error; "" for none
	}{
		{"Data", "e 2 d{}", nil, []live.Message{{Channel: "c", Pos: live.Position{Epoch: "e", Seq: 2}, Data: []byte("{}")}}, ""},
		{"Meta", "e 2 m3 abc{}", nil, []live.Message{{Channel: "c", Pos: live.Position{Epoch: "e", Seq: 2}, Data: []byte("{}"), Meta: []byte("abc")}}, ""},
		{"Read", "e 2 r", stored, stored, ""},
		{"Old", "e 1 d{}", nil, nil, ""},
		{"Gap", "e 3 d{}", nil, nil, "missing"},
		{"Epoch", "f 2 d{}", nil, nil, "epoch changed"},
		{"Malformed", "e 2 x", nil, nil, "malformed"},
		{"BadMeta", "e 2 m9 abc", nil, nil, "malformed"},
		{"NotStored", "e 2 r", nil, nil, "not in the store"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			last := live.Position{Epoch: "e", Seq: 1}
			read := func(after live.Position) ([]live.Message, error) {
				if after != (live.Position{Epoch: "e", Seq: 1}) {
					t.Errorf("read after %v", after)
				}
				return tt.store, nil
			}
			var got []live.Message
			err := announce.Deliver("c", &last, tt.a, "the store", read, func(m live.Message) { got = append(got, m) })
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Deliver(%q) = %v, want an error about %q", tt.a, err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("delivered (-want +got):\n%s", diff)
			}
			want := live.Position{Epoch: "e", Seq: 1}
			if len(tt.want) > 0 {
				want = tt.want[len(tt.want)-1].Pos
			}
			if last != want {
				t.Errorf("last = %v, want %v", last, want)
			}
		})
	}
}
