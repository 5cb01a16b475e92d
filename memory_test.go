package live_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestMemoryBrokerConformance(t *testing.T) {
	for _, tt := range []struct {
		name        string
		opts        *live.MemoryOptions
		historySize int
	}{
		{"HistorySize64", &live.MemoryOptions{HistorySize: 64}, 64},
		{"Defaults", nil, 1024},
		{"NoHistory", &live.MemoryOptions{HistorySize: -1}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			brokertest.Run(t, brokertest.Config{
				New:         func(*testing.T) live.Broker { return live.NewMemoryBroker(tt.opts) },
				HistorySize: tt.historySize,
			})
		})
	}
}

// memHistoryStep is one step of a history scenario: wait, publish, then
// read the history from a position in the channel's epoch.
type memHistoryStep struct {
	sleep   time.Duration // on the fake clock, before publishing
	publish int           // publications to make
	since   uint64        // Seq to read the history after
	want    []uint64      // Seqs Since returns, unless gone
	gone    bool          // Since returns ErrGone
}

// TestMemoryBrokerHistory follows the ring that holds a channel's history
// through growth, expiry and overwriting, on synctest's fake clock.
// Every step checks that Since returns the retained publications oldest
// first, which is where a ring's index arithmetic goes wrong.
func TestMemoryBrokerHistory(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  live.MemoryOptions
		steps []memHistoryStep
	}{
		{
			name: "size bounds history",
			opts: live.MemoryOptions{HistorySize: 64, HistoryAge: -1},
			steps: []memHistoryStep{
				{publish: 100, since: 36, want: memSeqs(37, 100)},
				{since: 35, gone: true},
				{since: 0, gone: true},
				{since: 99, want: memSeqs(100, 100)},
				{since: 100, want: nil},
			},
		},
		{
			name: "ring grows past its initial capacity in order",
			opts: live.MemoryOptions{HistorySize: 64},
			steps: []memHistoryStep{
				{publish: 10, since: 0, want: memSeqs(1, 10)},
				{publish: 10, since: 0, want: memSeqs(1, 20)},
				{publish: 44, since: 0, want: memSeqs(1, 64)},
				{publish: 1, since: 0, gone: true},
				{since: 1, want: memSeqs(2, 65)},
			},
		},
		{
			name: "age expires publications",
			opts: live.MemoryOptions{HistorySize: 64, HistoryAge: time.Minute},
			steps: []memHistoryStep{
				{publish: 3, since: 0, want: memSeqs(1, 3)},
				{sleep: 30 * time.Second, publish: 2, since: 0, want: memSeqs(1, 5)},
				{sleep: 30 * time.Second, since: 0, want: memSeqs(1, 5)}, // exactly HistoryAge old: not older
				{sleep: time.Second, since: 0, gone: true},
				{since: 3, want: memSeqs(4, 5)},
				{sleep: 2 * time.Minute, since: 3, gone: true},
				{since: 5, want: nil}, // from the head nothing is missing
				{publish: 1, since: 5, want: memSeqs(6, 6)},
				{since: 4, gone: true},
			},
		},
		{
			// Expiry leaves free slots in the middle of the ring; filling
			// them wraps around, and growing a wrapped ring must unwrap it.
			name: "expiry frees slots and growth keeps order",
			opts: live.MemoryOptions{HistorySize: 64, HistoryAge: time.Minute},
			steps: []memHistoryStep{
				{publish: 10, since: 0, want: memSeqs(1, 10)},                           // t=0
				{sleep: 30 * time.Second, publish: 6, since: 0, want: memSeqs(1, 16)},   // t=30s, ring full at 16
				{sleep: 45 * time.Second, publish: 1, since: 10, want: memSeqs(11, 17)}, // t=75s, 1-10 expired
				{since: 9, gone: true},
				{publish: 9, since: 10, want: memSeqs(11, 26)},                          // fills the freed slots
				{publish: 1, since: 10, want: memSeqs(11, 27)},                          // grows a wrapped ring
				{publish: 30, since: 10, want: memSeqs(11, 57)},                         // grows further
				{sleep: 50 * time.Second, publish: 1, since: 16, want: memSeqs(17, 58)}, // t=125s, 11-16 expired
				{since: 15, gone: true},
				{publish: 30, since: 24, want: memSeqs(25, 88)}, // full: the oldest are overwritten
				{since: 23, gone: true},
				{sleep: 2 * time.Minute, since: 87, gone: true}, // all expired
				{since: 88, want: nil},
				{publish: 1, since: 88, want: memSeqs(89, 89)},
			},
		},
		{
			name: "negative HistorySize keeps nothing",
			opts: live.MemoryOptions{HistorySize: -1},
			steps: []memHistoryStep{
				{publish: 3, since: 3, want: nil},
				{since: 2, gone: true},
				{since: 0, gone: true},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := live.NewMemoryBroker(&tt.opts)
				defer b.Close()
				const channel = "history"
				ctx := t.Context()
				var published []live.Message // published[i] is at Seq i+1
				for i, step := range tt.steps {
					time.Sleep(step.sleep)
					for range step.publish {
						data := strconv.Itoa(len(published) + 1)
						pos, err := b.Publish(ctx, channel, []byte(data))
						if err != nil {
							t.Fatalf("step %d: Publish: %v", i, err)
						}
						published = append(published, live.Message{Channel: channel, Pos: pos, Data: []byte(data)})
					}
					after := live.Position{Epoch: published[0].Pos.Epoch, Seq: step.since}
					got, err := b.Since(ctx, channel, after)
					if step.gone {
						if !errors.Is(err, live.ErrGone) {
							t.Errorf("step %d: Since(%v) = %d messages, %v; want ErrGone", i, after, len(got), err)
						}
						continue
					}
					if err != nil {
						t.Errorf("step %d: Since(%v): %v", i, after, err)
						continue
					}
					var want []live.Message
					for _, seq := range step.want {
						want = append(want, published[seq-1])
					}
					if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
						t.Errorf("step %d: Since(%v) (-want +got):\n%s", i, after, diff)
					}
				}
			})
		})
	}
}

// memSeqs returns the Seqs from to to, inclusive.
func memSeqs(from, to uint64) []uint64 {
	var s []uint64
	for seq := from; seq <= to; seq++ {
		s = append(s, seq)
	}
	return s
}

// TestMemoryBrokerForgetsChannels checks that a channel with neither
// subscribers nor history is forgotten, and that when it is used again
// its new epoch sends old cursors to ErrGone instead of resuming them
// into the new numbering. The broker sweeps once every 1024
// publications, so each case publishes that many on another channel.
func TestMemoryBrokerForgetsChannels(t *testing.T) {
	for _, tt := range []struct {
		name       string
		opts       live.MemoryOptions
		subscribed bool
		idle       time.Duration
		forgotten  bool
	}{
		{name: "no history", opts: live.MemoryOptions{HistorySize: -1}, forgotten: true},
		{name: "history expired", opts: live.MemoryOptions{HistorySize: 64, HistoryAge: time.Minute}, idle: 2 * time.Minute, forgotten: true},
		{name: "history kept", opts: live.MemoryOptions{HistorySize: 64, HistoryAge: time.Minute}, idle: 30 * time.Second},
		{name: "subscribed", opts: live.MemoryOptions{HistorySize: -1}, subscribed: true},
		{name: "subscribed, history expired", opts: live.MemoryOptions{HistorySize: 64, HistoryAge: time.Minute}, subscribed: true, idle: 2 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := live.NewMemoryBroker(&tt.opts)
				defer b.Close()
				ctx := t.Context()
				const channel = "forgettable"
				if tt.subscribed {
					subCtx, cancel := context.WithCancel(ctx)
					ready := make(chan struct{})
					done := make(chan error)
					go func() {
						done <- b.Subscribe(subCtx, channel, func(live.Position) { close(ready) }, func(live.Message) {})
					}()
					<-ready
					defer func() {
						cancel()
						if err := <-done; err != nil {
							t.Errorf("Subscribe: %v", err)
						}
					}()
				}
				old, err := b.Publish(ctx, channel, []byte(`"old"`))
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(tt.idle)
				for range 1024 {
					if _, err := b.Publish(ctx, "busy", []byte(`0`)); err != nil {
						t.Fatal(err)
					}
				}

				msgs, err := b.Since(ctx, channel, old)
				if tt.forgotten {
					if !errors.Is(err, live.ErrGone) {
						t.Errorf("Since(%v) on a forgotten channel = %d messages, %v; want ErrGone", old, len(msgs), err)
					}
				} else if err != nil || len(msgs) > 0 {
					t.Errorf("Since(head %v) on a remembered channel = %d messages, %v; want nothing", old, len(msgs), err)
				}

				pos, err := b.Publish(ctx, channel, []byte(`"new"`))
				if err != nil {
					t.Fatal(err)
				}
				if tt.forgotten {
					if pos.Seq != 1 || pos.Epoch == old.Epoch {
						t.Errorf("Publish on a forgotten channel last at %v = %v; want Seq 1 in a new epoch", old, pos)
					}
					if msgs, err := b.Since(ctx, channel, old); !errors.Is(err, live.ErrGone) {
						t.Errorf("Since(%v) from the old epoch = %d messages, %v; want ErrGone", old, len(msgs), err)
					}
				} else if want := (live.Position{Epoch: old.Epoch, Seq: old.Seq + 1}); pos != want {
					t.Errorf("Publish on a remembered channel last at %v = %v, want %v", old, pos, want)
				}
			})
		})
	}
}

// TestMemoryBrokerDeliversSynchronously checks the promise on
// MemoryBroker that Publish has called every subscriber's deliver by the
// time it returns, which the Hub's own tests use to avoid waiting.
func TestMemoryBrokerDeliversSynchronously(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	defer b.Close()
	ctx, cancel := context.WithCancel(t.Context())
	const subscribers = 3
	var (
		mu  sync.Mutex // guards got
		got [subscribers][]live.Message
	)
	var wg sync.WaitGroup
	ready := make(chan struct{}, subscribers)
	for i := range subscribers {
		wg.Go(func() {
			err := b.Subscribe(ctx, "sync", func(live.Position) { ready <- struct{}{} }, func(m live.Message) {
				mu.Lock()
				got[i] = append(got[i], m)
				mu.Unlock()
			})
			if err != nil {
				t.Errorf("Subscribe: %v", err)
			}
		})
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	for range subscribers {
		<-ready
	}

	var want []live.Message
	for i := range 3 {
		data := strconv.Itoa(i)
		pos, err := b.Publish(ctx, "sync", []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, live.Message{Channel: "sync", Pos: pos, Data: []byte(data)})
		mu.Lock()
		for s := range subscribers {
			if diff := cmp.Diff(want, got[s]); diff != "" {
				t.Errorf("subscriber %d once Publish returned (-want +got):\n%s", s, diff)
			}
		}
		mu.Unlock()
	}
}

// TestMemoryBrokerClose checks what MemoryBroker.Close documents beyond
// the Broker contract: a second Close is harmless, and History fails
// with ErrClosed too.
func TestMemoryBrokerClose(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	ctx := t.Context()
	pos, err := b.Publish(ctx, "closing", []byte(`1`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := b.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"Publish", func() error {
			_, err := b.Publish(ctx, "closing", []byte(`2`))
			return err
		}},
		{"Subscribe", func() error {
			return b.Subscribe(ctx, "closing", func(live.Position) {}, func(live.Message) {})
		}},
		{"Since", func() error {
			_, err := b.Since(ctx, "closing", live.Position{Epoch: pos.Epoch})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, live.ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", tt.name, err)
			}
		})
	}
}
