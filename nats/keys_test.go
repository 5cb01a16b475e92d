package natsbroker_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// publishKeyed publishes data on channel under key, failing t on an error.
func publishKeyed(t *testing.T, b live.Broker, channel, key, data string) live.Position {
	t.Helper()
	pos, err := b.Publish(live.WithPublishKey(t.Context(), key), channel, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%s) under key %q: %v", data, key, err)
	}
	return pos
}

// publishKeyedIf is PublishIf under key.
func publishKeyedIf(t *testing.T, b *natsbroker.Broker, channel, key string, head live.Position, data string) (live.Position, error) {
	t.Helper()
	return b.PublishIf(live.WithPublishKey(t.Context(), key), channel, head, []byte(data))
}

// stream returns the stream of prefix.
func stream(t *testing.T, url, prefix string) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkHistory checks that the channel's history after from is want, in
// order, with nothing else.
func checkHistory(t *testing.T, b *natsbroker.Broker, channel string, from live.Position, want []string) {
	t.Helper()
	msgs, err := b.Since(t.Context(), channel, from)
	if err != nil {
		t.Fatalf("Since(%v): %v", from, err)
	}
	var got []string
	for i, m := range msgs {
		got = append(got, string(m.Data))
		if m.Pos != (live.Position{Epoch: from.Epoch, Seq: from.Seq + uint64(i) + 1}) {
			t.Errorf("history: %s at %v, want Seq %d", m.Data, m.Pos, from.Seq+uint64(i)+1)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("history after %v (-want +got):\n%s", from, diff)
	}
}

// A key taken on one broker is honoured on another sharing the stream,
// long after, whatever each knows of the channel's tail; the keyed
// publication is a message of its own, carrying Nats-Msg-Id.
func TestPublishKeyAcrossBrokers(t *testing.T) {
	url := natsURL(t)
	a, _, prefix := newBroker(t, url, nil)
	b, _, _ := newBroker(t, url, &natsbroker.Options{Prefix: prefix})
	channel := channelName(t)
	start := servertest.Publish(t, a, channel, `"start"`)
	taken := publishKeyed(t, a, channel, "k", `"keyed"`)
	if want := (live.Position{Epoch: start.Epoch, Seq: start.Seq + 1}); taken != want {
		t.Fatalf("keyed publication at %v, want %v", taken, want)
	}
	servertest.Publish(t, a, channel, `"a"`)
	servertest.Publish(t, b, channel, `"b"`)
	for _, br := range []*natsbroker.Broker{b, a, b} {
		if pos := publishKeyed(t, br, channel, "k", `"again"`); pos != taken {
			t.Errorf("the key again = %v, want %v, where it was taken", pos, taken)
		}
	}
	// The same key on another channel is another key.
	other := channel + "-other"
	if pos := publishKeyed(t, b, other, "k", `"other"`); pos.Seq != 1 {
		t.Errorf("the key on %s at %v, want Seq 1", other, pos)
	}
	last := servertest.Publish(t, b, channel, `"last"`)
	if last.Seq != start.Seq+4 {
		t.Errorf("last publication at %v, want Seq %d", last, start.Seq+4)
	}
	checkHistory(t, a, channel, start, []string{`"keyed"`, `"a"`, `"b"`, `"last"`})

	s := stream(t, url, prefix)
	raw, err := s.GetMsg(t.Context(), 2) // the keyed one: start is at 1
	if err != nil {
		t.Fatal(err)
	}
	got := []string{string(raw.Data), raw.Header.Get("Live-Seq"), raw.Header.Get("Live-Count"), raw.Header.Get("Nats-Msg-Id")}
	if diff := cmp.Diff([]string{`"keyed"`, fmt.Sprint(taken.Seq), "", channel + " k"}, got); diff != "" {
		t.Errorf("the keyed message's data and Live-Seq, Live-Count and Nats-Msg-Id headers (-want +got):\n%s", diff)
	}
}

// A keyed publication queued among others goes alone, and they keep
// their order and positions.
func TestPublishKeyAmongQueued(t *testing.T) {
	url := natsURL(t)
	b, _, prefix := newBroker(t, url, nil)
	channel := channelName(t)
	start := servertest.Publish(t, b, channel, `"start"`)
	const n = 24
	type result struct {
		i   int
		pos live.Position
		err error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			ctx := t.Context()
			if i%3 == 0 {
				ctx = live.WithPublishKey(ctx, fmt.Sprintf("k%d", i))
			}
			pos, err := b.Publish(ctx, channel, []byte(fmt.Sprint(i)))
			results <- result{i, pos, err}
		}()
	}
	byPos := make(map[uint64]int)
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("publication %d: %v", r.i, r.err)
		}
		byPos[r.pos.Seq] = r.i
	}
	var want []string
	for seq := start.Seq + 1; seq <= start.Seq+n; seq++ {
		i, ok := byPos[seq]
		if !ok {
			t.Fatalf("no publication at Seq %d: %v", seq, byPos)
		}
		want = append(want, fmt.Sprint(i))
	}
	checkHistory(t, b, channel, start, want)
	s := stream(t, url, prefix)
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	keyed := 0
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if id := raw.Header.Get("Nats-Msg-Id"); id != "" {
			keyed++
			if c := raw.Header.Get("Live-Count"); c != "" {
				t.Errorf("message %d, under %q, holds %s publications", seq, id, c)
			}
		}
	}
	if keyed != n/3 {
		t.Errorf("%d messages carry Nats-Msg-Id, want %d", keyed, n/3)
	}
	// Every key is taken now.
	for i := 0; i < n; i += 3 {
		if pos := publishKeyed(t, b, channel, fmt.Sprintf("k%d", i), `"again"`); byPos[pos.Seq] != i {
			t.Errorf("key k%d again at %v, where %d was", i, pos, byPos[pos.Seq])
		}
	}
}

// A conditional publication under a key taken returns the key's position,
// whatever the head; under a key not taken, the condition decides.
func TestPublishKeyIf(t *testing.T) {
	url := natsURL(t)
	a, _, prefix := newBroker(t, url, nil)
	b, _, _ := newBroker(t, url, &natsbroker.Options{Prefix: prefix})
	channel := channelName(t)
	head := servertest.Publish(t, a, channel, `"start"`)
	taken, err := publishKeyedIf(t, a, channel, "k", head, `"if"`)
	if want := (live.Position{Epoch: head.Epoch, Seq: head.Seq + 1}); err != nil || taken != want {
		t.Fatalf("PublishIf at the head under k = %v, %v; want %v", taken, err, want)
	}
	for _, tt := range []struct {
		name string
		b    *natsbroker.Broker
		head live.Position
	}{
		{"same head", a, head},
		{"same head, other broker", b, head},
		{"head moved on", a, taken},
		{"head moved on, other broker", b, taken},
		{"head unknown", b, live.Position{Epoch: "other", Seq: 7}},
	} {
		if pos, err := publishKeyedIf(t, tt.b, channel, "k", tt.head, `"again"`); err != nil || pos != taken {
			t.Errorf("%s: PublishIf(%v) under k = %v, %v; want %v", tt.name, tt.head, pos, err, taken)
		}
	}
	for _, br := range []*natsbroker.Broker{a, b} {
		if pos, err := publishKeyedIf(t, br, channel, "k2", head, `"late"`); !errors.Is(err, live.ErrConflict) {
			t.Errorf("PublishIf(%v) under a key not taken, the channel at %v = %v, %v; want ErrConflict", head, taken, pos, err)
		}
	}
	last := servertest.Publish(t, b, channel, `"last"`)
	checkHistory(t, a, channel, head, []string{`"if"`, `"last"`})
	if last.Seq != taken.Seq+1 {
		t.Errorf("last publication at %v, want Seq %d", last, taken.Seq+1)
	}
}

// A key whose publication the stream dropped (HistorySize) within the
// duplicate window is still honoured: its position is read from the
// channel's next message while that one is kept, and unknown after; then
// Publish says so with ErrGone, and still stores nothing.
func TestPublishKeyAfterTrim(t *testing.T) {
	url := natsURL(t)
	b, _, _ := newBroker(t, url, &natsbroker.Options{HistorySize: 2})
	channel := channelName(t)
	taken := publishKeyed(t, b, channel, "k", `"keyed"`)
	servertest.Publish(t, b, channel, `"1"`)
	servertest.Publish(t, b, channel, `"2"`) // drops the keyed message
	if pos := publishKeyed(t, b, channel, "k", `"again"`); pos != taken {
		t.Errorf("the key again, its message dropped = %v, want %v", pos, taken)
	}
	head := servertest.Publish(t, b, channel, `"3"`) // drops the message after it
	pos, err := b.Publish(live.WithPublishKey(t.Context(), "k"), channel, []byte(`"again"`))
	if !errors.Is(err, live.ErrGone) {
		t.Errorf("the key again, its message and the next dropped = %v, %v; want ErrGone", pos, err)
	}
	if next := servertest.Publish(t, b, channel, `"4"`); next.Seq != head.Seq+1 {
		t.Errorf("publication after at %v, want Seq %d", next, head.Seq+1)
	}
}

// The stream's duplicate window is KeyWindow, by default HistoryAge; an
// existing stream's shorter window is lengthened, a longer one kept.
func TestKeyWindow(t *testing.T) {
	url := natsURL(t)
	for _, tt := range []struct {
		name string
		opts natsbroker.Options
		want time.Duration
	}{
		{"Default", natsbroker.Options{}, 10 * time.Minute},
		{"HistoryAge", natsbroker.Options{HistoryAge: time.Hour}, time.Hour},
		{"NoHistoryAge", natsbroker.Options{HistoryAge: -1}, 10 * time.Minute},
		{"Short", natsbroker.Options{HistoryAge: 50 * time.Millisecond}, 100 * time.Millisecond},
		{"KeyWindow", natsbroker.Options{KeyWindow: time.Minute}, time.Minute},
		{"BeyondMaxAge", natsbroker.Options{KeyWindow: 48 * time.Hour}, 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, _, prefix := newBroker(t, url, &tt.opts)
			servertest.Publish(t, b, channelName(t), `1`)
			if got := stream(t, url, prefix).CachedInfo().Config.Duplicates; got != tt.want {
				t.Errorf("Duplicates = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("Existing", func(t *testing.T) {
		prefix := testPrefix(t, url)
		for _, step := range []struct {
			window, want time.Duration
		}{
			{2 * time.Minute, 2 * time.Minute},
			{5 * time.Minute, 5 * time.Minute}, // lengthened
			{time.Minute, 5 * time.Minute},     // kept
		} {
			b, _, _ := newBroker(t, url, &natsbroker.Options{Prefix: prefix, KeyWindow: step.window})
			servertest.Publish(t, b, channelName(t), `1`)
			if got := stream(t, url, prefix).CachedInfo().Config.Duplicates; got != step.want {
				t.Errorf("after a broker with KeyWindow %v: Duplicates = %v, want %v", step.window, got, step.want)
			}
		}
	})
}
