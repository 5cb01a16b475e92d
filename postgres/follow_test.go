package pgbroker_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/announce"
	"github.com/go-live/live/internal/servertest"
	"github.com/google/go-cmp/cmp"
)

// A followed records what a Follow call delivered and how it ended.
type followed struct {
	mu    sync.Mutex // guards head, msgs and err
	head  live.Position
	msgs  []live.Position
	err   error
	ready chan struct{}
	event chan struct{} // a delivery or the end; buffer of 1
	stop  func()
}

func follow(t *testing.T, b live.Follower, channel string) *followed {
	t.Helper()
	f := &followed{ready: make(chan struct{}), event: make(chan struct{}, 1)}
	signal := func() {
		select {
		case f.event <- struct{}{}:
		default:
		}
	}
	stop, err := b.Follow(channel, func(p live.Position) {
		f.mu.Lock()
		f.head = p
		f.mu.Unlock()
		close(f.ready)
	}, func(m live.Message) {
		f.mu.Lock()
		f.msgs = append(f.msgs, m.Pos)
		f.mu.Unlock()
		signal()
	}, func(err error) {
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		signal()
	})
	if err != nil {
		t.Fatalf("Follow(%q): %v", channel, err)
	}
	f.stop = stop
	t.Cleanup(stop)
	select {
	case <-f.ready:
	case <-time.After(waitTimeout):
		t.Fatalf("Follow(%q) was not ready within %v", channel, waitTimeout)
	}
	return f
}

// wait waits until done reports true of what f holds, or f ends, and
// returns f's error.
func (f *followed) wait(t *testing.T, done func(msgs []live.Position) bool) error {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		ok, err := done(f.msgs), f.err
		f.mu.Unlock()
		if ok || err != nil {
			return err
		}
		select {
		case <-f.event:
		case <-timer.C:
			t.Fatalf("nothing more within %v", waitTimeout)
		}
	}
}

// Small publications, delivered by the listener, and large ones, read
// from the table by a goroutine of the follow's, reach every follower of
// a channel in order, each once, while one of them stops halfway.
func TestFollowMixedSizes(t *testing.T) {
	b, _, _ := newBroker(t, pgURL(t), nil)
	channel := servertest.ChannelName(t)
	fs := []*followed{follow(t, b, channel), follow(t, b, channel), follow(t, b, channel)}
	const n = 60
	var want []live.Position
	for i := range n {
		size := 10
		if i%3 == 1 {
			size = 10000 // over NOTIFY's limit
		}
		want = append(want, servertest.Publish(t, b, channel, `"`+strings.Repeat("x", size)+`"`))
		if i == n/2 {
			fs[2].stop()
		}
	}
	for i, f := range fs[:2] {
		if err := f.wait(t, func(msgs []live.Position) bool { return len(msgs) >= n }); err != nil {
			t.Fatalf("follower %d ended: %v", i, err)
		}
		f.mu.Lock()
		if diff := cmp.Diff(want, f.msgs); diff != "" {
			t.Errorf("follower %d (-want +got):\n%s", i, diff)
		}
		f.mu.Unlock()
	}
	fs[2].mu.Lock()
	defer fs[2].mu.Unlock()
	if got := fs[2].msgs; len(got) > n/2+1 || !slicesPrefix(want, got) {
		t.Errorf("the follower stopped after %d publications got %v", n/2+1, got)
	}
	if fs[2].err != nil {
		t.Errorf("the stopped follower ended: %v", fs[2].err)
	}
}

func slicesPrefix(all, prefix []live.Position) bool {
	return len(prefix) <= len(all) && cmp.Equal(all[:len(prefix)], prefix)
}

// While a follow waits for the table, the listener goes on delivering to
// the other channels, and the follow's announcements queue up to their
// bound, past which it ends with "fell behind".
func TestFollowWaitingForTable(t *testing.T) {
	b, pool, schema := newBroker(t, pgURL(t), nil)
	slow, other := servertest.ChannelName(t)+"-slow", servertest.ChannelName(t)+"-other"
	head := servertest.Publish(t, b, slow, `1`)
	fslow, fother := follow(t, b, slow), follow(t, b, other)

	// Hold the table so that reading it waits, and announce a publication
	// whose data is there.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	if _, err := tx.Exec(t.Context(), "LOCK TABLE "+schema+".messages IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	notify := schema + ":" + notifyHash(slow)
	if _, err := pool.Exec(t.Context(), "SELECT pg_notify($1, $2)", notify, fmt.Sprintf("%s %s 2 r", slow, head.Epoch)); err != nil {
		t.Fatal(err)
	}

	// The other channel is delivered meanwhile, by a connection that does
	// not touch the table.
	if _, err := pool.Exec(t.Context(), "SELECT pg_notify($1, $2)", schema+":"+notifyHash(other), fmt.Sprintf("%s %s 1 d1", other, fother.head.Epoch)); err != nil {
		t.Fatal(err)
	}
	if err := fother.wait(t, func(msgs []live.Position) bool { return len(msgs) == 1 }); err != nil {
		t.Fatalf("the other channel's follow ended: %v", err)
	}

	// The slow follow's backlog overflows.
	if _, err := pool.Exec(t.Context(), "SELECT pg_notify($1, $2 || g || ' d' || g) FROM generate_series(3, $3::int) g", notify, fmt.Sprintf("%s %s ", slow, head.Epoch), announce.MaxLen+3); err != nil {
		t.Fatal(err)
	}
	err = fslow.wait(t, func([]live.Position) bool { return false })
	if !errors.Is(err, announce.ErrBehind) {
		t.Errorf("the slow follow ended with %v, want %v", err, announce.ErrBehind)
	}
	fslow.mu.Lock()
	defer fslow.mu.Unlock()
	if len(fslow.msgs) > 0 {
		t.Errorf("the slow follow delivered %v", fslow.msgs)
	}
}
