package brokertest

import (
	"fmt"
	"testing"

	"github.com/go-live/live"
	"golang.org/x/sync/errgroup"
)

// publishKeyed publishes data on channel under key, failing t on an
// error.
func publishKeyed(t *testing.T, b live.Broker, channel, key, data string) live.Position {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	pos, err := b.Publish(live.WithPublishKey(ctx, key), channel, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%q) under key %q: %v", channel, key, err)
	}
	return pos
}

// keyed skips t for a broker that keeps no history: keys are honoured
// while their publication is in it.
func (s *suite) keyed(t *testing.T) {
	t.Helper()
	s.retained(t, 2)
}

// testKeyOnce checks that a publication under a key the broker has taken
// on the channel stores and delivers nothing and returns the position the
// key was taken at, whatever its data, while publications under other
// keys and under none go on.
func (s *suite) testKeyOnce(t *testing.T) {
	s.keyed(t)
	b := s.broker(t)
	channel := channelName(t)
	sub := subscribe(t, b, channel)
	first := publishKeyed(t, b, channel, "k-1", `"first"`)
	if want := after(sub.head, 1); first != want {
		t.Fatalf("first publication under k-1 at %v, want %v", first, want)
	}
	for _, data := range []string{`"first"`, `"again"`} {
		if pos := publishKeyed(t, b, channel, "k-1", data); pos != first {
			t.Errorf("publishing %s again under k-1 = %v, want %v, where k-1 was taken", data, pos, first)
		}
	}
	other := publishKeyed(t, b, channel, "k-2", `"other"`)
	plain := publish(t, b, channel, `"plain"`)
	if other != after(first, 1) || plain != after(first, 2) {
		t.Errorf("after k-1: k-2 at %v and a publication without key at %v, want %v and %v", other, plain, after(first, 1), after(first, 2))
	}
	want := []live.Message{
		message(channel, first, `"first"`),
		message(channel, other, `"other"`),
		message(channel, plain, `"plain"`),
	}
	got := sub.awaitPos(t, plain)
	if diff := diffMessages(want, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	s.checkSince(t, b, channel, sub.head, want)
}

// testKeyPerChannel checks that keys are per channel: one key on two
// channels publishes on both.
func (s *suite) testKeyPerChannel(t *testing.T) {
	s.keyed(t)
	b := s.broker(t)
	a, c := channelName(t)+"-a", channelName(t)+"-c"
	subA, subC := subscribe(t, b, a), subscribe(t, b, c)
	pa := publishKeyed(t, b, a, "shared", `1`)
	pc := publishKeyed(t, b, c, "shared", `2`)
	if pa != after(subA.head, 1) || pc != after(subC.head, 1) {
		t.Errorf("one key on two channels: %v and %v, want %v and %v", pa, pc, after(subA.head, 1), after(subC.head, 1))
	}
	subA.awaitPos(t, pa)
	subC.awaitPos(t, pc)
}

// keyRace checks that of calls under one key racing, on brokers sharing
// a server when there are several, one publishes and all return its
// position.
func keyRace(t *testing.T, brokers []live.Broker, channel string) {
	t.Helper()
	const racers, rounds = 8, 5
	sub := subscribe(t, brokers[0], channel)
	ctx, cancel := timeout(t)
	defer cancel()
	for round := range rounds {
		key := fmt.Sprintf("race-%d", round)
		got := make([]live.Position, racers)
		g, gctx := errgroup.WithContext(ctx)
		for i := range racers {
			b := brokers[i%len(brokers)]
			g.Go(func() error {
				pos, err := b.Publish(live.WithPublishKey(gctx, key), channel, []byte(fmt.Sprintf(`{"round":%d,"racer":%d}`, round, i)))
				if err != nil {
					return fmt.Errorf("racer %d under %s: %w", i, key, err)
				}
				got[i] = pos
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		want := after(sub.head, round+1)
		for i, pos := range got {
			if pos != want {
				t.Errorf("racer %d under %s: %v, want %v (one publication per key)", i, key, pos, want)
			}
		}
	}
	// A last publication, without a key, shows nothing else was taken.
	last := publish(t, brokers[0], channel, `"last"`)
	if want := after(sub.head, rounds+1); last != want {
		t.Errorf("publication after the races at %v, want %v", last, want)
	}
	msgs := sub.awaitPos(t, last)
	checkContiguous(t, "subscriber", sub.head, msgs)
	if len(msgs) != rounds+1 {
		t.Errorf("%d deliveries, want %d: %s", len(msgs), rounds+1, positions(msgs))
	}
	if err := ctx.Err(); err != nil {
		t.Fatal(err)
	}
}

// testKeyRace checks calls under one key racing on one broker.
func (s *suite) testKeyRace(t *testing.T) {
	s.keyed(t)
	keyRace(t, []live.Broker{s.broker(t)}, channelName(t))
}

// testShareKey checks keys between brokers sharing a server.
func (s *suite) testShareKey(t *testing.T) {
	s.keyed(t)
	keyRace(t, []live.Broker{s.broker(t), s.broker(t)}, channelName(t))
}

// testKeyRefused checks that a key no broker could store is refused and
// takes nothing.
func (s *suite) testKeyRefused(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	sub := subscribe(t, b, channel)
	ctx, cancel := timeout(t)
	defer cancel()
	for _, key := range []string{"", "with space", "line\nbreak", string(make([]byte, 129)), "é"} {
		if pos, err := b.Publish(live.WithPublishKey(ctx, key), channel, []byte(`"refused"`)); err == nil {
			t.Errorf("Publish under key %q = %v, want an error", key, pos)
		}
	}
	last := publish(t, b, channel, `"taken"`)
	if want := after(sub.head, 1); last != want {
		t.Errorf("publication after refused ones at %v, want %v", last, want)
	}
}
