package brokertest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
)

// faultEnv names the fault that TestFaultyMemoryBroker gives its broker.
// It is set only in the child processes of TestRunCatchesFaultyMemoryBrokers.
const faultEnv = "BROKERTEST_FAULT"

// faultyHistorySize is the history the faulty brokers claim to keep.
const faultyHistorySize = 16

// TestRunCatchesFaultyMemoryBrokers checks the suite itself: a memory
// broker with one bug planted must fail the subtest for the clause it
// breaks. A failing suite cannot run under this test's testing.T without
// failing it, so each broker runs in a child process of this test binary.
func TestRunCatchesFaultyMemoryBrokers(t *testing.T) {
	if os.Getenv(faultEnv) != "" {
		t.Skip("in a child process")
	}
	for _, tt := range []struct {
		fault   string
		subtest string // the subtest that must fail; empty: the whole suite must pass
		nodes   bool   // run by RunNodes rather than Run
	}{
		{"none", "", false},
		{"publish ignores a cancelled context", "Publish/CancelledContext", false},
		{"ready reports the head one short", "Subscribe/ReadyAtHead", false},
		{"deliver drops Seq 3", "Subscribe/DeliversExactly", false},
		{"deliver repeats Seq 2", "Subscribe/DeliversExactly", false},
		{"deliver mangles large data", "Subscribe/DeliversExactly", false},
		{"deliver runs on after Subscribe returns", "Subscribe/Cancel", false},
		{"publish hides ErrClosed", "Close/PublishAfterClose", false},
		{"since starts one early", "History/SinceEach", false},
		{"since ignores the epoch", "History/OtherEpoch", false},
		{"history keeps one too few", "History/OlderThanRetained", false},
		{"since misses the newest", "History/VisibleOnReturn", false},
		{"deliver drops meta", "Guard/Meta", false},
		{"none", "", true},
		{"brokers keep their own numbering", "Share/Numbering", true},
		{"since starts one early", "Resume/WebSocket/Missed", true},
		{"lost data keeps the epoch", "Share/DataLoss", true},
		{"deliver drops meta", "Guard", true},
	} {
		test := "TestFaultyMemoryBroker"
		if tt.nodes {
			test = "TestFaultyMemoryNodes"
		}
		t.Run(test+"/"+tt.fault, func(t *testing.T) {
			t.Parallel()
			run := "^" + test + "$"
			for _, name := range strings.Split(tt.subtest, "/") {
				if name != "" {
					run += "/^" + name + "$"
				}
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), faultEnv+"="+tt.fault)
			out, err := cmd.CombinedOutput()
			switch {
			case tt.subtest == "" && err != nil:
				t.Errorf("the suite failed a broker without faults: %v\n%s", err, out)
			case tt.subtest == "" && !strings.Contains(string(out), "--- PASS: "+test+" "):
				t.Errorf("the suite did not run:\n%s", out)
			case tt.subtest != "" && err == nil:
				t.Errorf("the suite passed a broker whose %s:\n%s", tt.fault, out)
			case tt.subtest != "" && !strings.Contains(string(out), "--- FAIL: "+test+"/"+tt.subtest+" "):
				t.Errorf("the suite failed a broker whose %s, but not in %s:\n%s", tt.fault, tt.subtest, out)
			}
		})
	}
}

// TestFaultyMemoryBroker runs the suite on the faulty broker that
// TestRunCatchesFaultyMemoryBrokers asks for.
func TestFaultyMemoryBroker(t *testing.T) {
	fault := os.Getenv(faultEnv)
	if fault == "" {
		t.Skip("run by TestRunCatchesFaultyMemoryBrokers")
	}
	size := faultyHistorySize
	if fault == "history keeps one too few" {
		size--
	}
	brokertest.Run(t, brokertest.Config{
		New: func(*testing.T) live.Broker {
			return &faultyBroker{
				inner:  live.NewMemoryBroker(&live.MemoryOptions{HistorySize: size}),
				fault:  fault,
				epochs: make(map[string]string),
			}
		},
		HistorySize: faultyHistorySize,
	})
}

// TestFaultyMemoryNodes runs RunNodes on the faulty brokers that
// TestRunCatchesFaultyMemoryBrokers asks for, which share a MemoryBroker
// unless the fault is that they do not.
func TestFaultyMemoryNodes(t *testing.T) {
	fault := os.Getenv(faultEnv)
	if fault == "" {
		t.Skip("run by TestRunCatchesFaultyMemoryBrokers")
	}
	s := newMemoryServer(t)
	var lose func(*testing.T)
	if fault == "lost data keeps the epoch" {
		lose = func(*testing.T) {} // subscriptions go on, as if nothing was lost
	} else {
		lose = func(*testing.T) { s.loseData() }
	}
	brokertest.RunNodes(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			if fault == "brokers keep their own numbering" {
				return live.NewMemoryBroker(&live.MemoryOptions{HistorySize: memoryHistorySize})
			}
			return &faultyBroker{inner: memoryClient{s}, fault: fault, epochs: make(map[string]string)}
		},
		HistorySize: memoryHistorySize,
		LoseData:    lose,
	})
}

// faultyBroker is a MemoryBroker, or a client of a memoryServer, with one
// planted bug.
type faultyBroker struct {
	inner interface {
		live.Broker
		live.History
	}
	fault string

	mu     sync.Mutex        // guards epochs
	epochs map[string]string // channel to epoch, for "since ignores the epoch"
}

// Close closes the inner broker, if it can be closed.
func (b *faultyBroker) Close() error {
	if c, ok := b.inner.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

func (b *faultyBroker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	if b.fault == "publish ignores a cancelled context" {
		ctx = context.WithoutCancel(ctx)
	}
	pos, err := b.inner.Publish(ctx, channel, data)
	if b.fault == "publish hides ErrClosed" && errors.Is(err, live.ErrClosed) {
		err = errors.New("faulty: the broker is shut")
	}
	if err == nil {
		b.mu.Lock()
		b.epochs[channel] = pos.Epoch
		b.mu.Unlock()
	}
	return pos, err
}

func (b *faultyBroker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	switch b.fault {
	case "ready reports the head one short":
		inner := ready
		ready = func(head live.Position) {
			if head.Seq > 0 {
				head.Seq--
			}
			inner(head)
		}
	case "deliver drops Seq 3", "deliver repeats Seq 2", "deliver mangles large data", "deliver drops meta":
		inner := deliver
		deliver = func(m live.Message) {
			switch {
			case b.fault == "deliver drops Seq 3" && m.Pos.Seq == 3:
				return
			case b.fault == "deliver repeats Seq 2" && m.Pos.Seq == 2:
				inner(m)
			case b.fault == "deliver mangles large data" && len(m.Data) > 8000:
				m.Data = m.Data[:8000]
			case b.fault == "deliver drops meta":
				m.Meta = nil
			}
			inner(m)
		}
	case "deliver runs on after Subscribe returns":
		// The inner subscription outlives the call, until Close.
		go b.inner.Subscribe(context.WithoutCancel(ctx), channel, ready, deliver)
		<-ctx.Done()
		return nil
	}
	return b.inner.Subscribe(ctx, channel, ready, deliver)
}

func (b *faultyBroker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	switch b.fault {
	case "since starts one early":
		if after.Seq > 0 {
			after.Seq--
		}
	case "since ignores the epoch":
		b.mu.Lock()
		if epoch, ok := b.epochs[channel]; ok {
			after.Epoch = epoch
		}
		b.mu.Unlock()
	}
	msgs, err := b.inner.Since(ctx, channel, after)
	if b.fault == "since misses the newest" && len(msgs) > 0 {
		msgs = msgs[:len(msgs)-1]
	}
	return msgs, err
}
