package brokertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/go-live/live"
)

// history returns a broker with History for t, or skips t.
func (s *suite) history(t *testing.T) (live.Broker, live.History) {
	t.Helper()
	b := s.broker(t)
	h, ok := b.(live.History)
	if !ok {
		t.Skipf("%T does not implement live.History", b)
	}
	return b, h
}

// retained returns how many of want publications the broker keeps, or
// skips t if it keeps none.
func (s *suite) retained(t *testing.T, want int) int {
	t.Helper()
	if s.cfg.HistorySize <= 0 {
		t.Skip("Config.HistorySize is 0: the broker keeps no publications to replay")
	}
	return min(want, s.cfg.HistorySize)
}

// since calls h.Since with a bounded context.
func since(t *testing.T, h live.History, channel string, after live.Position) ([]live.Message, error) {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	return h.Since(ctx, channel, after)
}

// checkGone reports unless Since from after fails with ErrGone.
func checkGone(t *testing.T, h live.History, channel string, after live.Position, why string) {
	t.Helper()
	msgs, err := since(t, h, channel, after)
	if !errors.Is(err, live.ErrGone) {
		t.Errorf("Since(%v) = [%s], %v; want ErrGone: %s", after, positions(msgs), err, why)
	}
}

// otherEpoch returns a valid epoch that differs from e in its last
// character only, which catches brokers that compare epochs loosely.
func otherEpoch(e string) string {
	if e == "" {
		return "a"
	}
	last := byte('a')
	if e[len(e)-1] == 'a' {
		last = 'b'
	}
	return e[:len(e)-1] + string(last)
}

// publishN publishes n numbered values and returns the messages a
// subscriber expects for them.
func publishN(t *testing.T, b live.Broker, channel string, n int) []live.Message {
	t.Helper()
	msgs := make([]live.Message, n)
	for i := range msgs {
		data := fmt.Sprintf(`{"n":%d}`, i+1)
		msgs[i] = message(channel, publish(t, b, channel, data), data)
	}
	return msgs
}

func (s *suite) testSinceHead(t *testing.T) {
	b, h := s.history(t)
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, channel string) live.Position
	}{
		{"AfterPublications", func(t *testing.T, channel string) live.Position {
			msgs := publishN(t, b, channel, 3)
			return msgs[2].Pos
		}},
		// The Hub asks for history from the head that ready gave it,
		// which on a new channel is Seq 0 in an epoch nothing was
		// published in yet.
		{"FreshChannelWhileSubscribed", func(t *testing.T, channel string) live.Position {
			return subscribe(t, b, channel).head
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			channel := channelName(t)
			head := tt.setup(t, channel)
			msgs, err := since(t, h, channel, head)
			if err != nil || len(msgs) != 0 {
				t.Errorf("Since(head %v) = [%s], %v; want nothing and no error", head, positions(msgs), err)
			}
		})
	}
}

// testSinceCancelled checks that Since gives up once its context has
// ended, as the Hub's does when a resuming client leaves.
func (s *suite) testSinceCancelled(t *testing.T) {
	b, h := s.history(t)
	channel := channelName(t)
	head := publish(t, b, channel, `1`)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, ch := range []string{channel, channelName(t)} {
		if msgs, err := h.Since(ctx, ch, live.Position{Epoch: head.Epoch}); !errors.Is(err, context.Canceled) {
			t.Errorf("Since(%q) with a cancelled context = [%s], %v; want an error matching context.Canceled",
				ch, positions(msgs), err)
		}
	}
}

func (s *suite) testSinceEach(t *testing.T) {
	b, h := s.history(t)
	n := s.retained(t, 10)
	channel := channelName(t)
	want := publishN(t, b, channel, n)
	for k := 0; k <= n; k++ {
		from := live.Position{Epoch: want[0].Pos.Epoch, Seq: uint64(k)}
		got, err := since(t, h, channel, from)
		if err != nil {
			t.Errorf("Since(%v): %v", from, err)
			continue
		}
		if diff := diffMessages(want[k:], got); diff != "" {
			t.Errorf("Since(%v) (-want +got):\n%s", from, diff)
		}
	}
}

func (s *suite) testOtherEpoch(t *testing.T) {
	b, h := s.history(t)
	channel := channelName(t)
	head := publish(t, b, channel, `1`)
	head = publish(t, b, channel, `2`)
	other := otherEpoch(head.Epoch)
	for _, after := range []live.Position{
		{Epoch: other, Seq: head.Seq},
		{Epoch: other, Seq: 1},
		{Epoch: other, Seq: 0},
		{Epoch: "", Seq: head.Seq},
		{Epoch: "", Seq: 0},
	} {
		checkGone(t, h, channel, after, fmt.Sprintf("the channel's epoch is %q", head.Epoch))
	}
}

func (s *suite) testBeyondHead(t *testing.T) {
	b, h := s.history(t)
	channel := channelName(t)
	head := publishN(t, b, channel, 3)[2].Pos
	for _, n := range []uint64{1, 2, 1000, math.MaxUint64 - head.Seq} {
		checkGone(t, h, channel, live.Position{Epoch: head.Epoch, Seq: head.Seq + n},
			fmt.Sprintf("the head is %v", head))
	}
}

func (s *suite) testUnknownChannel(t *testing.T) {
	_, h := s.history(t)
	channel := channelName(t)
	epoch := "x" + strconv.FormatUint(rand.Uint64(), 36)
	for _, after := range []live.Position{{Epoch: epoch, Seq: 0}, {Epoch: epoch, Seq: 1}, {Epoch: "", Seq: 0}} {
		checkGone(t, h, channel, after, "nothing was published on the channel, so the broker cannot vouch for the epoch")
	}
}

func (s *suite) testOlderThanRetained(t *testing.T) {
	b, h := s.history(t)
	size := s.retained(t, s.cfg.HistorySize)
	channel := channelName(t)
	msgs := publishN(t, b, channel, size+1)
	epoch := msgs[0].Pos.Epoch
	checkGone(t, h, channel, live.Position{Epoch: epoch, Seq: 0},
		fmt.Sprintf("publication 1 of %d is older than the %d kept", size+1, size))
	from := live.Position{Epoch: epoch, Seq: 1}
	got, err := since(t, h, channel, from)
	if err != nil {
		t.Fatalf("Since(%v) with %d publications and HistorySize %d: %v", from, size+1, size, err)
	}
	if diff := diffMessages(msgs[1:], got); diff != "" {
		t.Errorf("Since(%v) (-want +got):\n%s", from, diff)
	}
}

func (s *suite) testVisibleOnReturn(t *testing.T) {
	b, h := s.history(t)
	s.retained(t, 1)
	channel := channelName(t)
	for i := range 5 {
		data := strconv.Itoa(i)
		pos := publish(t, b, channel, data)
		from := live.Position{Epoch: pos.Epoch, Seq: pos.Seq - 1}
		got, err := since(t, h, channel, from)
		if err != nil {
			t.Fatalf("Since(%v) once Publish returned %v: %v", from, pos, err)
		}
		if diff := diffMessages([]live.Message{message(channel, pos, data)}, got); diff != "" {
			t.Errorf("Since(%v) once Publish returned %v (-want +got):\n%s", from, pos, diff)
		}
	}
}

// testVisibleBeforeDelivery checks the order a network broker can get
// wrong: announcing a publication before storing it. The Hub fills holes
// from History as soon as it sees a delivery, so the delivery must not
// outrun the history.
func (s *suite) testVisibleBeforeDelivery(t *testing.T) {
	b, h := s.history(t)
	n := s.retained(t, 20)
	channel := channelName(t)
	sub := subscribe(t, b, channel)

	ctx, cancel := timeout(t)
	pub := startPublisher(ctx, b, channel, n, strconv.Itoa)
	defer func() {
		cancel()
		pub.wait()
	}()

	for i := range n {
		m := sub.await(t, i+1)[i]
		from := live.Position{Epoch: m.Pos.Epoch, Seq: m.Pos.Seq - 1}
		got, err := since(t, h, channel, from)
		if err != nil {
			t.Fatalf("Since(%v) once %v was delivered: %v", from, m.Pos, err)
		}
		if len(got) == 0 {
			t.Fatalf("Since(%v) once %v was delivered returned nothing", from, m.Pos)
		}
		if diff := diffMessages(m, got[0]); diff != "" {
			t.Errorf("Since(%v) once %v was delivered: first message (-want +got):\n%s", from, m.Pos, diff)
		}
	}
	if err := pub.wait(); err != nil {
		t.Error(err)
	}
}

// testSeam checks what the Hub relies on to resume a client without loss
// or duplicates: it subscribes, then reads history from the client's
// cursor, while publications continue. History read after ready must
// reach at least the head ready gave, and from there on the deliveries
// take over, so together they cover everything after the cursor.
func (s *suite) testSeam(t *testing.T) {
	b, h := s.history(t)
	const before = 3
	cursor := uint64(before - 1) // a client that missed one publication
	n := s.retained(t, 50+before-int(cursor)) - (before - int(cursor))
	if n < 1 {
		t.Skipf("HistorySize %d is too small to publish during the subscription", s.cfg.HistorySize)
	}
	for round := range 20 {
		s.seamRound(t, b, h, round, before, cursor, n)
	}
}

func (s *suite) seamRound(t *testing.T, b live.Broker, h live.History, round, before int, cursor uint64, n int) {
	t.Helper()
	channel := channelName(t)
	all := publishN(t, b, channel, before)
	epoch := all[0].Pos.Epoch

	ctx, cancel := timeout(t)
	pub := startPublisher(ctx, b, channel, n, func(i int) string {
		return fmt.Sprintf(`{"round":%d,"n":%d}`, round, before+i+1)
	})
	sub := startSubscriber(ctx, b, channel)
	defer func() {
		cancel()
		pub.wait()
		wait, stop := context.WithTimeout(context.Background(), waitTimeout)
		defer stop()
		if err := sub.end(wait); err != nil {
			t.Errorf("round %d: Subscribe after its context ended: %v", round, err)
		}
		sub.report(t)
	}()

	if err := sub.awaitReady(ctx); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	from := live.Position{Epoch: epoch, Seq: cursor}
	replayed, sinceErr := since(t, h, channel, from)
	if err := pub.wait(); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	if sinceErr != nil {
		t.Fatalf("round %d: Since(%v) after ready(%v): %v", round, from, sub.head, sinceErr)
	}
	all = append(all, pub.msgs...)
	head := sub.head
	if head.Epoch != epoch || head.Seq < uint64(before) || head.Seq > uint64(len(all)) {
		t.Fatalf("round %d: ready(%v) during publications %d to %d in epoch %q",
			round, head, before+1, len(all), epoch)
	}
	delivered := sub.awaitPos(t, all[len(all)-1].Pos)

	if end := cursor + uint64(len(replayed)); end < head.Seq {
		t.Errorf("round %d: Since(%v) after ready(%v) ends at %d, short of the head: %d publications are lost",
			round, from, head, end, head.Seq-end)
	} else if end > uint64(len(all)) {
		t.Errorf("round %d: Since(%v) returned %d messages, but only %d publications followed",
			round, from, len(replayed), len(all)-int(cursor))
	} else if diff := diffMessages(all[cursor:end], replayed); diff != "" {
		t.Errorf("round %d: Since(%v) (-want +got):\n%s", round, from, diff)
	}
	if diff := diffMessages(all[head.Seq:], delivered); diff != "" {
		t.Errorf("round %d: deliveries after ready(%v) (-want +got):\n%s", round, head, diff)
	}
}

// publisher publishes on its own goroutine while a test watches.
type publisher struct {
	done chan struct{}
	msgs []live.Message // what was published; read after done
	err  error          // the first failure; read after done
}

// startPublisher publishes data(0) to data(n-1) on channel, one after the
// other, until ctx ends.
func startPublisher(ctx context.Context, b live.Broker, channel string, n int, data func(i int) string) *publisher {
	p := &publisher{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := range n {
			d := data(i)
			pos, err := b.Publish(ctx, channel, []byte(d))
			if err != nil {
				p.err = fmt.Errorf("Publish(%q, %.40s): %w", channel, d, err)
				return
			}
			p.msgs = append(p.msgs, message(channel, pos, d))
		}
	}()
	return p
}

// wait waits until the publisher has finished and returns its failure.
func (p *publisher) wait() error {
	<-p.done
	return p.err
}

// testPages checks [live.PagedHistory]: pages that start where the one
// before ended, within both bounds but never empty before the head, give
// what Since gives, and the errors are Since's.
func (s *suite) testPages(t *testing.T) {
	b, h := s.history(t)
	ph, ok := h.(live.PagedHistory)
	if !ok {
		t.Skipf("%T does not implement live.PagedHistory", b)
	}
	// More than 64, which some brokers read differently from the head.
	n := s.retained(t, 100)
	channel := channelName(t)
	var want []live.Message
	for i := range n {
		// Sizes vary, and one publication is larger than the byte bound.
		data := fmt.Sprintf(`{"n":%d,"pad":%q}`, i+1, strings.Repeat("x", (i%3)*40))
		if i == n/2 {
			data = fmt.Sprintf(`{"n":%d,"pad":%q}`, i+1, strings.Repeat("y", 1000))
		}
		want = append(want, message(channel, publish(t, b, channel, data), data))
	}
	start := live.Position{Epoch: want[0].Pos.Epoch}
	for _, tt := range []struct {
		name               string
		maxMessages, bytes int
	}{
		{"OneAtATime", 1, 1 << 20},
		{"ByCount", 5, 1 << 20},
		{"ByBytes", 1000, 150},
		{"LessThanOne", 1000, 1},
		{"Whole", 1000, 1 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []live.Message
			for from := start; ; {
				ctx, cancel := timeout(t)
				page, err := ph.SincePage(ctx, channel, from, tt.maxMessages, tt.bytes)
				cancel()
				if err != nil {
					t.Fatalf("SincePage(%v, %d, %d): %v", from, tt.maxMessages, tt.bytes, err)
				}
				if len(page) == 0 {
					break
				}
				size := 0
				for _, m := range page {
					size += len(m.Data)
				}
				if len(page) > tt.maxMessages || len(page) > 1 && size > tt.bytes {
					t.Errorf("SincePage(%v, %d, %d) = %d publications of %d bytes: beyond the bounds",
						from, tt.maxMessages, tt.bytes, len(page), size)
				}
				if len(got)+len(page) > n {
					t.Fatalf("SincePage(%v) goes on past the head: [%s]", from, positions(page))
				}
				got = append(got, page...)
				from = page[len(page)-1].Pos
			}
			if diff := diffMessages(want, got); diff != "" {
				t.Errorf("pages (-want +got):\n%s", diff)
			}
		})
	}
	for _, tt := range []struct {
		name string
		from live.Position
	}{
		{"OtherEpoch", live.Position{Epoch: otherEpoch(start.Epoch)}},
		{"BeyondHead", after(want[n-1].Pos, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := timeout(t)
			defer cancel()
			if page, err := ph.SincePage(ctx, channel, tt.from, 4, 1<<20); !errors.Is(err, live.ErrGone) {
				t.Errorf("SincePage(%v) = [%s], %v; want ErrGone", tt.from, positions(page), err)
			}
		})
	}
}
