package brokertest

import (
	"errors"
	"testing"

	"github.com/go-live/live"
)

// snapshots returns a broker with Snapshots for t, or skips t.
func (s *suite) snapshots(t *testing.T) (live.Broker, live.Snapshots) {
	t.Helper()
	b := s.broker(t)
	sn, ok := b.(live.Snapshots)
	if !ok {
		t.Skipf("%T does not implement live.Snapshots", b)
	}
	return b, sn
}

// checkSnapshot reports unless the snapshot of channel is data at want.
func checkSnapshot(t *testing.T, sn live.Snapshots, channel string, want live.Position, data string) {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	pos, got, err := sn.Snapshot(ctx, channel)
	if err != nil || pos != want || string(got) != data {
		t.Errorf("Snapshot = %v, %.80s, %v; want %v, %.80s", pos, got, err, want, data)
	}
}

// save calls SaveSnapshot with a bounded context, failing t if it fails.
func save(t *testing.T, sn live.Snapshots, channel string, pos live.Position, data string) {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	if err := sn.SaveSnapshot(ctx, channel, pos, []byte(data)); err != nil {
		t.Fatalf("SaveSnapshot(%v): %v", pos, err)
	}
}

// A channel without a snapshot has none to give.
func (s *suite) testSnapshotNone(t *testing.T) {
	b, sn := s.snapshots(t)
	channel := channelName(t)
	publish(t, b, channel, `1`)
	ctx, cancel := timeout(t)
	defer cancel()
	if pos, data, err := sn.Snapshot(ctx, channel); !errors.Is(err, live.ErrGone) {
		t.Errorf("Snapshot of a channel without one = %v, %.80s, %v; want ErrGone", pos, data, err)
	}
}

// The latest snapshot is kept: a later one replaces it, an earlier one
// (a slower writer's) does not.
func (s *suite) testSnapshotLatest(t *testing.T) {
	b, sn := s.snapshots(t)
	channel := channelName(t)
	first := publish(t, b, channel, `{"n":1}`)
	second := publish(t, b, channel, `{"n":2}`)
	save(t, sn, channel, first, `{"n":1}`)
	checkSnapshot(t, sn, channel, first, `{"n":1}`)
	big := `{"text":"` + bigText + `"}`
	save(t, sn, channel, second, big)
	checkSnapshot(t, sn, channel, second, big)
	save(t, sn, channel, first, `{"n":1}`)
	checkSnapshot(t, sn, channel, second, big)
	// Channels keep their own.
	other := channelName(t) + "-other"
	publish(t, b, other, `3`)
	checkSnapshot(t, sn, channel, second, big)
}

// bigText is 200 KiB of text, as a large State value would be.
var bigText = func() string {
	b := make([]byte, 200<<10)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}()
