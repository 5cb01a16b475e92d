package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"golang.org/x/sync/errgroup"
)

// conditional returns b as a live.Conditional, or skips t.
func conditional(t *testing.T, b live.Broker) live.Conditional {
	t.Helper()
	c, ok := b.(live.Conditional)
	if !ok {
		t.Skipf("%T does not implement live.Conditional", b)
	}
	return c
}

// publishIf calls PublishIf, failing t on an error other than a conflict.
func publishIf(t *testing.T, c live.Conditional, channel string, head live.Position, data string) (live.Position, bool) {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	pos, err := c.PublishIf(ctx, channel, head, []byte(data))
	if errors.Is(err, live.ErrConflict) {
		return pos, false
	}
	if err != nil {
		t.Fatalf("PublishIf(%q, %v, %.40s): %v", channel, head, data, err)
	}
	return pos, true
}

// testPublishIfAtHead checks that PublishIf publishes at the head only:
// on a fresh channel at the head ready reported, and never on a position
// that is behind, ahead or in another epoch, which take nothing.
func (s *suite) testPublishIfAtHead(t *testing.T) {
	b := s.broker(t)
	c := conditional(t, b)
	channel := channelName(t)
	sub := subscribe(t, b, channel)
	head := sub.head

	var want []live.Message
	pos, ok := publishIf(t, c, channel, head, `"first"`)
	if !ok || pos != after(head, 1) {
		t.Fatalf("PublishIf at the fresh channel's head %v = %v, published %v; want %v", head, pos, ok, after(head, 1))
	}
	want = append(want, message(channel, pos, `"first"`))
	for _, stale := range []struct {
		name string
		head live.Position
	}{
		{"behind", head},
		{"ahead", after(head, 2)},
		{"far ahead", after(head, 1000)},
		{"another epoch", live.Position{Epoch: "x" + head.Epoch, Seq: 1}},
		{"no epoch", live.Position{Seq: 1}},
	} {
		if pos, ok := publishIf(t, c, channel, stale.head, `"stale"`); ok {
			t.Errorf("PublishIf at %v (%s) with the head at %v = %v, want ErrConflict", stale.head, stale.name, after(head, 1), pos)
		}
	}
	pos, ok = publishIf(t, c, channel, after(head, 1), `"second"`)
	if !ok || pos != after(head, 2) {
		t.Errorf("PublishIf at the head %v = %v, published %v; want %v", after(head, 1), pos, ok, after(head, 2))
	}
	want = append(want, message(channel, pos, `"second"`))
	last := publish(t, b, channel, `"plain"`)
	want = append(want, message(channel, last, `"plain"`))
	if diff := diffMessages(want, sub.awaitPos(t, last)); diff != "" {
		t.Errorf("deliveries (-want +got): the refused publications must take nothing:\n%s", diff)
	}
}

// testPublishIfRace sends PublishIf calls at one head at once, round
// after round: exactly one of each round wins.
func (s *suite) testPublishIfRace(t *testing.T) {
	const racers, rounds = 8, 10
	b := s.broker(t)
	c := conditional(t, b)
	channel := channelName(t)
	head := publish(t, b, channel, `"before"`)
	for r := range rounds {
		var mu sync.Mutex // guards won
		var won []live.Position
		var g errgroup.Group
		for i := range racers {
			g.Go(func() error {
				ctx, cancel := timeout(t)
				defer cancel()
				pos, err := c.PublishIf(ctx, channel, head, fmt.Appendf(nil, `{"round":%d,"racer":%d}`, r, i))
				if errors.Is(err, live.ErrConflict) {
					return nil
				}
				if err != nil {
					return err
				}
				mu.Lock()
				won = append(won, pos)
				mu.Unlock()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatalf("round %d: PublishIf: %v", r, err)
		}
		if len(won) != 1 || won[0] != after(head, 1) {
			t.Fatalf("round %d: %d PublishIf calls at %v published at %v; want exactly one, at %v", r, racers, head, won, after(head, 1))
		}
		head = won[0]
	}
}

// testPublishIfCounter checks PublishIf among other publications on one
// broker, where brokers that batch concurrent publications carry
// conditional and plain ones together.
func (s *suite) testPublishIfCounter(t *testing.T) {
	b := s.broker(t)
	conditional(t, b)
	publishIfConcurrently(t, []live.Broker{b}, channelName(t))
}

// testSharePublishIf checks PublishIf between brokers sharing a server.
func (s *suite) testSharePublishIf(t *testing.T) {
	a, b := s.broker(t), s.broker(t)
	conditional(t, a)
	publishIfConcurrently(t, []live.Broker{a, b}, channelName(t))
}

// counted is what publishIfConcurrently publishes: the Seq of the
// position each publication is conditional on, or -1 for the plain ones.
type counted struct {
	Writer int   `json:"writer"`
	After  int64 `json:"after"`
}

// publishIfConcurrently runs writers that each publish on condition that
// the channel is at the latest position a subscriber has seen, trying
// again after a conflict once the subscriber has seen more, spread over
// brokers, while a plain publisher publishes among them. Every
// conditional publication must land right after the position it was
// conditional on, and every conflict must be a real one.
func publishIfConcurrently(t *testing.T, brokers []live.Broker, channel string) {
	t.Helper()
	const writers, each, plain = 6, 10, 30
	sub := subscribe(t, brokers[0], channel)
	latest := func(msgs []live.Message) live.Position {
		if len(msgs) == 0 {
			return sub.head
		}
		return msgs[len(msgs)-1].Pos
	}
	ctx, cancel := timeout(t)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		b := brokers[len(brokers)-1]
		for range plain {
			if _, err := b.Publish(ctx, channel, []byte(`{"writer":-1,"after":-1}`)); err != nil {
				return fmt.Errorf("Publish: %w", err)
			}
		}
		return nil
	})
	for w := range writers {
		c := brokers[w%len(brokers)].(live.Conditional)
		g.Go(func() error {
			for range each {
				for {
					head := latest(sub.messages())
					data, _ := json.Marshal(counted{Writer: w, After: int64(head.Seq)})
					pos, err := c.PublishIf(ctx, channel, head, data)
					if err == nil {
						if pos != after(head, 1) {
							return fmt.Errorf("writer %d: PublishIf at %v = %v, want %v", w, head, pos, after(head, 1))
						}
						break
					}
					if !errors.Is(err, live.ErrConflict) {
						return fmt.Errorf("writer %d: PublishIf: %w", w, err)
					}
					// Someone published after head: wait to see it.
					if _, err := sub.waitFor(ctx, func(msgs []live.Message) bool {
						return latest(msgs) != head
					}); err != nil {
						return fmt.Errorf("writer %d: PublishIf at %v refused, and nothing came after it: %w", w, head, err)
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	total := writers*each + plain
	msgs := sub.await(t, total)
	checkContiguous(t, "subscriber", sub.head, msgs)
	n := 0
	for i, m := range msgs {
		var c counted
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Fatalf("delivery at %v: %s: %v", m.Pos, m.Data, err)
		}
		if c.Writer < 0 {
			continue
		}
		n++
		prev := sub.head
		if i > 0 {
			prev = msgs[i-1].Pos
		}
		if uint64(c.After) != prev.Seq {
			t.Errorf("writer %d's publication conditional on Seq %d was taken at %v, after %v", c.Writer, c.After, m.Pos, prev)
		}
	}
	if n != writers*each || len(msgs) != total {
		t.Errorf("%d deliveries, %d conditional; want %d, %d", len(msgs), n, total, writers*each)
	}
}

// testGuardPublishIf checks that a conditional publication no Hub made
// passes the guard Publish does: on a channel reserved for the hubs, or
// with data that is not one JSON value, it is refused for that, not for
// its condition, even at the head, and takes nothing; taken, its data is
// compacted and carries no meta.
func (s *suite) testGuardPublishIf(t *testing.T) {
	b := s.broker(t)
	c := conditional(t, b)
	for _, channel := range []string{"@live:control", "@live:presence"} {
		w := servertest.Watch(t, b, channel)
		head := w.Ready(t)
		ctx, cancel := timeout(t)
		pos, err := c.PublishIf(ctx, channel, head, []byte(forgedControl))
		cancel()
		if err == nil || errors.Is(err, live.ErrConflict) {
			t.Errorf("PublishIf(%q, %v) = %v, %v; want a refusal: the channel is the hubs'", channel, head, pos, err)
		}
		if again := servertest.Watch(t, b, channel).Ready(t); again != head {
			t.Errorf("%s: head %v after the refused publication, was %v", channel, again, head)
		}
		if extra := w.Pending(); len(extra) > 0 {
			t.Errorf("%s: delivered %v", channel, extra)
		}
	}
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	for _, bad := range []string{``, `{"a":`, `1 2`, "\"\xff\""} {
		ctx, cancel := timeout(t)
		pos, err := c.PublishIf(ctx, channel, head, []byte(bad))
		cancel()
		if err == nil || errors.Is(err, live.ErrConflict) {
			t.Errorf("PublishIf(%q) = %v, %v; want a refusal: not one JSON value", bad, pos, err)
		}
	}
	data := `{"@live:except": {"user": "victim"},
	"data": 1}`
	pos, ok := publishIf(t, c, channel, head, data)
	if !ok || pos != after(head, 1) {
		t.Fatalf("PublishIf at the head %v after the refused ones = %v, published %v; want %v", head, pos, ok, after(head, 1))
	}
	want := []live.Message{message(channel, pos, compact(data))}
	if diff := diffMessages(want, w.NextN(t, 1)); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	s.checkSince(t, b, channel, head, want)
}

// testGuardMetaIf checks that a Hub's conditional publications carry its
// meta beside their data, as its other publications do: a State's writes
// (which a Hub publishes with PublishIf on a Conditional broker) made with
// an exclusion reach a subscriber and history with it, small and large,
// and one made without reaches them without.
func (s *suite) testGuardMetaIf(t *testing.T) {
	b := s.broker(t)
	conditional(t, b)
	hub := servertest.NewNode(t, b, nil).Hub
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	ctx, cancel := timeout(t)
	defer cancel()
	st, err := hub.State(ctx, channel, nil)
	if err != nil {
		t.Fatal(err)
	}
	except := live.Except(ctx, "", "user-zoë-😀 \"\n")
	writes := []struct {
		ctx  context.Context
		v    any
		meta bool
	}{
		{except, map[string]int{"n": 1}, true},
		{ctx, map[string]int{"n": 2}, false},
		{except, json.RawMessage(bigPayload), true}, // a whole value, too large to announce
	}
	for i, wr := range writes {
		if v, err := st.Set(wr.ctx, wr.v); err != nil || v != after(head, i+1).Seq {
			t.Fatalf("write %d: Set = %d, %v; want version %d", i, v, err, after(head, i+1).Seq)
		}
	}
	got := w.NextN(t, len(writes))
	checkContiguous(t, "subscriber", head, got)
	for i, m := range got {
		if hasMeta := len(m.Meta) > 0; hasMeta != writes[i].meta {
			t.Errorf("write %d delivered with meta %q; want meta only with an exclusion", i, m.Meta)
		}
	}
	if big := got[2]; !strings.Contains(string(big.Data), bigPayload) {
		t.Errorf("large write delivered with %d bytes of data; want the value whole", len(big.Data))
	}
	s.checkSince(t, b, channel, head, got)
}
