package natsbroker_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestConformance(t *testing.T) {
	url := natsURL(t)
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			nc := connect(t, url)
			return natsbroker.New(nc, &natsbroker.Options{HistorySize: 64, Prefix: testPrefix(t, url), Logger: servertest.Logger(t)})
		},
		HistorySize: 64,
	})
}

// Processes of one application, each with its own Hub and connection,
// share the numbering, and a client resumes on any of them with exactly
// what it missed, or a reset when that is older than the history or was
// lost with the stream.
func TestNodes(t *testing.T) {
	url := natsURL(t)
	prefix := testPrefix(t, url)
	brokertest.RunNodes(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			return natsbroker.New(connect(t, url), &natsbroker.Options{HistorySize: 16, Prefix: prefix, Logger: servertest.Logger(t)})
		},
		HistorySize: 16,
		LoseData:    func(t *testing.T) { deleteStream(t, url, prefix) },
		Cut: func(t *testing.T) (live.Broker, func()) {
			p := servertest.NewProxy(t, servertest.HostOf(t, url))
			return natsbroker.New(connect(t, servertest.ViaProxy(t, url, p)), &natsbroker.Options{HistorySize: 16, Prefix: prefix, Logger: servertest.Logger(t)}), p.Cut
		},
	})
}

// A broker that keeps no history still numbers and delivers everything.
func TestConformanceWithoutHistory(t *testing.T) {
	url := natsURL(t)
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			nc := connect(t, url)
			return natsbroker.New(nc, &natsbroker.Options{HistorySize: -1, Prefix: testPrefix(t, url), Logger: servertest.Logger(t)})
		},
	})
}

// The stream layout is documented, because operators look at it: one
// subject per channel with "." and "=" escaped, positions in headers, each
// message pointing at the one before, at most HistorySize per channel,
// republished for subscribers.
func TestStreamLayout(t *testing.T) {
	url := natsURL(t)
	b, nc, prefix := newBroker(t, url, &natsbroker.Options{HistorySize: 8})
	channel := "room.1=a:b@c+d_e-f"
	var last live.Position
	for i := range 10 {
		last = servertest.Publish(t, b, channel, strconv.Itoa(i))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if diff := cmp.Diff([]string{prefix + ".c.>"}, cfg.Subjects); diff != "" {
		t.Errorf("stream subjects (-want +got):\n%s", diff)
	}
	if cfg.MaxMsgsPerSubject != 8 || cfg.MaxAge != 24*time.Hour || cfg.RePublish == nil ||
		cfg.RePublish.Destination != prefix+".r.>" {
		t.Errorf("stream config: MaxMsgsPerSubject %d, MaxAge %v, RePublish %+v", cfg.MaxMsgsPerSubject, cfg.MaxAge, cfg.RePublish)
	}
	subject := prefix + ".c.room=2E1=3Da:b@c+d_e-f"
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(prefix+".c.>"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]uint64{subject: 8}, info.State.Subjects); diff != "" {
		t.Errorf("messages per subject (-want +got):\n%s", diff)
	}
	m, err := s.GetLastMsgForSubject(t.Context(), subject)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := s.GetMsg(t.Context(), mustUint(t, m.Header.Get("Live-Prev")))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{m.Header.Get("Live-Epoch"), m.Header.Get("Live-Seq"), string(m.Data), prev.Header.Get("Live-Seq"), string(prev.Data)}
	if diff := cmp.Diff([]string{last.Epoch, "10", "9", "9", "8"}, got); diff != "" {
		t.Errorf("latest message's epoch, seq and data, and its predecessor's seq and data (-want +got):\n%s", diff)
	}
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Since reads a few publications one by one and many with a consumer; both
// return the same, and both notice a position older than the history.
func TestSinceLong(t *testing.T) {
	url := natsURL(t)
	b, _, _ := newBroker(t, url, &natsbroker.Options{HistorySize: 100})
	channel := channelName(t)
	var want []live.Message
	for i := range 150 {
		data := strconv.Itoa(i)
		want = append(want, live.Message{Channel: channel, Pos: servertest.Publish(t, b, channel, data), Data: []byte(data)})
	}
	epoch := want[0].Pos.Epoch
	for _, from := range []uint64{50, 51, 60, 100, 117, 118, 119, 140, 149, 150} {
		got, err := b.Since(t.Context(), channel, live.Position{Epoch: epoch, Seq: from})
		if err != nil {
			t.Errorf("Since(%d): %v", from, err)
			continue
		}
		if diff := cmp.Diff(want[from:], got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Since(%d) (-want +got):\n%s", from, diff)
		}
	}
	for _, from := range []uint64{0, 1, 49} {
		if got, err := b.Since(t.Context(), channel, live.Position{Epoch: epoch, Seq: from}); !errors.Is(err, live.ErrGone) {
			t.Errorf("Since(%d) = %d messages, %v; want ErrGone", from, len(got), err)
		}
	}
}

// HistoryAge drops publications from Since by JetStream's timestamps.
func TestHistoryAge(t *testing.T) {
	url := natsURL(t)
	for _, n := range []int{2, 40} { // both ways of reading history
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			b, _, _ := newBroker(t, url, &natsbroker.Options{HistoryAge: 50 * time.Millisecond})
			channel := channelName(t)
			var first live.Position
			for i := range n {
				pos := servertest.Publish(t, b, channel, strconv.Itoa(i))
				if i == 0 {
					first = pos
				}
			}
			start := live.Position{Epoch: first.Epoch}
			servertest.AwaitGone(t, b, channel, start)
			// The numbering goes on: the channel is remembered longer.
			published := time.Now()
			next := servertest.Publish(t, b, channel, `"next"`)
			if next.Epoch != first.Epoch || next.Seq != uint64(n+1) {
				t.Errorf("publication after the history expired at %v, want %d in epoch %q", next, n+1, first.Epoch)
			}
			got, err := b.Since(t.Context(), channel, live.Position{Epoch: first.Epoch, Seq: uint64(n)})
			if errors.Is(err, live.ErrGone) && time.Since(published) > 25*time.Millisecond {
				t.Logf("the machine is too slow to see a publication within HistoryAge: %v", err)
			} else if err != nil || len(got) != 1 || got[0].Pos != next {
				t.Errorf("Since the last expired publication = %v, %v; want %v", got, err, next)
			}
		})
	}
}

// Messages out of turn end the subscription instead of being skipped:
// the Hub then catches up from history or resets its clients.
func TestMessagesOutOfTurn(t *testing.T) {
	url := natsURL(t)
	for _, tt := range []struct {
		name, epoch, seq, want string // epoch: %s for the channel's
	}{
		{"Gap", "%s", "3", "missing"},
		{"OtherEpoch", "x%s", "2", "epoch changed"},
		{"Malformed", "%s", "two", "malformed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, nc, prefix := newBroker(t, url, nil)
			channel := channelName(t)
			head := servertest.Publish(t, b, channel, `1`)
			w := servertest.Watch(t, b, channel)
			w.Ready(t)
			// A stale repeat is ignored; the next one is out of turn.
			subject := prefix + ".r." + strings.NewReplacer(".", "=2E", "=", "=3D").Replace(channel)
			send := func(epoch, seq string) {
				m := &nats.Msg{Subject: subject, Header: nats.Header{"Live-Epoch": {epoch}, "Live-Seq": {seq}, "Live-Prev": {"0"}}, Data: []byte(seq)}
				if err := nc.PublishMsg(m); err != nil {
					t.Fatal(err)
				}
			}
			send(head.Epoch, "1")
			send(fmt.Sprintf(tt.epoch, head.Epoch), tt.seq)
			w.ExpectFailed(t, tt.want)
		})
	}
}

// A subscription that misses a message, because the stream republished
// it late or not at all, reads it from the stream instead of skipping it.
func TestHoleFilledFromStream(t *testing.T) {
	url := natsURL(t)
	b, _, _ := newBroker(t, url, nil)
	natsbroker.SetDrop(b, func(p live.Position) bool { return p.Seq == 2 || p.Seq == 3 })
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	w.Ready(t)
	var want []live.Message
	for i := range 4 {
		data := strconv.Itoa(i + 1)
		want = append(want, live.Message{Channel: channel, Pos: servertest.Publish(t, b, channel, data), Data: []byte(data)})
	}
	if diff := cmp.Diff(want, w.NextN(t, len(want))); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	if st := b.Stats(); st.Fills != 1 {
		t.Errorf("stats %+v, want 1 fill", st)
	}
}

// nats.go reconnects and resubscribes on its own. The broker must notice
// that messages may have been lost while it was disconnected.
func TestReconnectEndsSubscriptions(t *testing.T) {
	url := natsURL(t)
	b, nc, _ := newBroker(t, url, &natsbroker.Options{StallTimeout: time.Second})
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)

	back := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(back)
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	if err := w.Failure(t, waitTimeout); !strings.Contains(err.Error(), "connection") {
		t.Errorf("Subscribe = %v, want an error about the connection", err)
	}
	if b.Stats().ConnectionLosses == 0 {
		t.Errorf("Stats %+v, want a connection loss counted", b.Stats())
	}
	select { // publications fail until the connection is back
	case <-back:
	case <-time.After(waitTimeout):
		t.Fatal("the connection did not come back")
	}
	missed := servertest.Publish(t, b, channel, `"while resubscribing"`)

	// As the Hub does: subscribe again, catch up from history.
	servertest.CatchUp(t, b, channel, head, missed)
}

func TestOpen(t *testing.T) {
	url := natsURL(t)
	prefix := testPrefix(t, url)
	b, err := natsbroker.Open(url, &natsbroker.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	channel := channelName(t)
	pos := servertest.Publish(t, b, channel, `1`)
	if got, err := b.Since(t.Context(), channel, live.Position{Epoch: pos.Epoch}); err != nil || len(got) != 1 {
		t.Errorf("Since = %v, %v", got, err)
	}
	servertest.ExpectClosed(t, b, channel)

	if _, err := natsbroker.Open("nats://127.0.0.1:1", nil); err == nil {
		t.Error("Open with nothing listening succeeded")
	}
}

// A connection passed to New stays the caller's.
func TestCloseLeavesConnOpen(t *testing.T) {
	url := natsURL(t)
	b, nc, _ := newBroker(t, url, nil)
	servertest.Publish(t, b, channelName(t), `1`)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Error("the connection was closed by Close")
	}
}

func TestNewPanicsOnBadPrefix(t *testing.T) {
	for _, prefix := range []string{"a.b", "a*", "a>", "a b", strings.Repeat("x", 65)} {
		t.Run(prefix[:min(len(prefix), 8)], func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Prefix") {
					t.Errorf("recovered %v, want a panic about the prefix", r)
				}
			}()
			natsbroker.New(&nats.Conn{}, &natsbroker.Options{Prefix: prefix})
		})
	}
}

// A stream of the broker's name made by someone else without what the
// broker needs gets a clear error, not silence.
func TestForeignStream(t *testing.T) {
	url := natsURL(t)
	b, nc, prefix := newBroker(t, url, nil)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: prefix, Subjects: []string{prefix + ".c.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), channelName(t), []byte(`1`)); err == nil || !strings.Contains(err.Error(), "republish") {
		t.Errorf("Publish with a stream that does not republish: %v, want an error saying so", err)
	}
}

// Invalid channel names are refused with a clear error and touch nothing.
func TestInvalidChannel(t *testing.T) {
	url := natsURL(t)
	b, _, _ := newBroker(t, url, nil)
	for _, channel := range []string{"", ".", "a b", "a*", "a>", "a/b", strings.Repeat("x", live.MaxChannelLen+1)} {
		if _, err := b.Publish(t.Context(), channel, []byte(`1`)); err == nil || !strings.Contains(err.Error(), "channel") {
			t.Errorf("Publish(%q): %v, want an error about the channel", channel, err)
		}
		if _, err := b.Since(t.Context(), channel, live.Position{Epoch: "x"}); err == nil || errors.Is(err, live.ErrGone) {
			t.Errorf("Since(%q): %v, want an error about the channel", channel, err)
		}
		err := b.Subscribe(t.Context(), channel, func(live.Position) { t.Error("ready called") }, func(live.Message) {})
		if err == nil || !strings.Contains(err.Error(), "channel") {
			t.Errorf("Subscribe(%q): %v, want an error about the channel", channel, err)
		}
	}
}

// Publications that arrive together on one channel are stored as one
// message (up to 64): subscribers, Since from any position (inside such a
// message too, along Live-Prev and with a consumer) and the filling of
// holes all see them one by one, as if stored alone.
func TestPublicationsStoredTogether(t *testing.T) {
	url := natsURL(t)
	b, nc, prefix := newBroker(t, url, &natsbroker.Options{HistorySize: 256})
	other := natsbroker.New(nc, &natsbroker.Options{HistorySize: 256, Prefix: prefix})
	t.Cleanup(func() { other.Close() })
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	w.Ready(t)
	// other misses the message that holds 41–50: it fills the hole.
	natsbroker.SetDrop(other, func(p live.Position) bool { return p.Seq == 50 })
	wo := servertest.Watch(t, other, channel)
	wo.Ready(t)

	var want []live.Message
	add := func(pos []live.Position, datas [][]byte) {
		for i, p := range pos {
			want = append(want, live.Message{Channel: channel, Pos: p, Data: datas[i]})
		}
	}
	together := func(from, n int) {
		datas := make([][]byte, n)
		for i := range datas {
			datas[i] = []byte(strconv.Itoa(from + i))
		}
		pos, err := natsbroker.PublishTogether(t.Context(), b, channel, datas)
		if err != nil {
			t.Fatal(err)
		}
		add(pos, datas)
	}
	together(1, 40)  // one message
	together(41, 10) // one message, dropped by other
	for i := range 3 {
		data := []byte(strconv.Itoa(51 + i))
		add([]live.Position{servertest.Publish(t, b, channel, string(data))}, [][]byte{data})
	}
	together(54, 100) // 64 and 36
	for i, m := range want {
		if m.Pos.Seq != uint64(i+1) {
			t.Fatalf("publication %d at %v", i+1, m.Pos)
		}
	}

	s, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := s.Stream(t.Context(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	subject := prefix + ".c." + strings.NewReplacer(".", "=2E", "=", "=3D").Replace(channel)
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	// The marker the first Watch stored, then 1 + 1 + 3 + 2 messages.
	if got := info.State.Subjects[subject]; got != 8 {
		t.Errorf("%d messages stored for %d publications, want 8", got, len(want))
	}

	for _, w := range []*servertest.Watcher{w, wo} {
		if diff := cmp.Diff(want, w.NextN(t, len(want))); diff != "" {
			t.Fatalf("deliveries (-want +got):\n%s", diff)
		}
	}
	if st := other.Stats(); st.Fills != 1 {
		t.Errorf("stats of the node that missed a message %+v, want 1 fill", st)
	}
	for _, after := range []int{0, 1, 20, 39, 40, 41, 45, 50, 53, 54, 89, 90, 117, 118, 152, 153} {
		from := live.Position{Epoch: want[0].Pos.Epoch, Seq: uint64(after)}
		got, err := b.Since(t.Context(), channel, from)
		if err != nil {
			t.Fatalf("Since(%v): %v", from, err)
		}
		if diff := cmp.Diff(want[after:], got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Since(%v) (-want +got):\n%s", from, diff)
		}
	}
}

// When the broker's inbox is full, nats.go drops what arrives for it. A
// follower that lost messages so ends with an error, after delivering
// those before the loss in order, and never silently skips them.
func TestDroppedMessagesEndFollow(t *testing.T) {
	url := natsURL(t)
	restore := natsbroker.SetInboxSize(4)
	b, nc, prefix := newBroker(t, url, nil)
	restore()
	pub, _, _ := newBroker(t, url, &natsbroker.Options{Prefix: prefix})
	channel := channelName(t)
	readyc := make(chan live.Position, 1)
	release := make(chan struct{})
	endedc := make(chan error, 1)
	var got []live.Position // read after endedc
	stop, err := b.Follow(channel, func(p live.Position) { readyc <- p }, func(m live.Message) {
		if len(got) == 0 {
			<-release // the dispatcher waits: the inbox fills up
		}
		got = append(got, m.Pos)
	}, func(err error) { endedc <- err })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var head live.Position
	select {
	case head = <-readyc:
	case <-time.After(waitTimeout):
		t.Fatal("not ready")
	}
	const n = 40
	for i := range n {
		servertest.Publish(t, pub, channel, strconv.Itoa(i))
	}
	// A ping on b's connection returns once its read loop has handled
	// every message before it, dropping those it had no room for.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case err := <-endedc:
		if !strings.Contains(err.Error(), "slow consumer") {
			t.Errorf("ended with %v, want an error about dropped messages", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the follow did not end, although messages were dropped")
	}
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("delivered %d of %d before ending", len(got), n)
	}
	for i, p := range got {
		if want := (live.Position{Epoch: head.Epoch, Seq: head.Seq + uint64(i) + 1}); p != want {
			t.Fatalf("delivery %d at %v, want %v", i, p, want)
		}
	}
}

// Follows made together read their heads in batches, storing the markers
// of new channels first when most channels of the last batch were new.
// Either way, every follow is ready at its channel's head, whether the
// channel has publications or not, and delivers what follows.
func TestFollowBatches(t *testing.T) {
	url := natsURL(t)
	b, _, prefix := newBroker(t, url, nil)
	pub, _, _ := newBroker(t, url, &natsbroker.Options{Prefix: prefix})
	base := channelName(t)
	name := func(i int) string { return base + "-" + strconv.Itoa(i) }
	publishAll := func(from, to int) map[string]live.Position {
		var mu sync.Mutex
		pos := map[string]live.Position{}
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := from + w; i < to; i += 16 {
					p := servertest.Publish(t, pub, name(i), `"x"`)
					mu.Lock()
					pos[name(i)] = p
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return pos
	}
	// followAll follows channels [0, n) and returns their heads, and a
	// channel of their first deliveries.
	followAll := func(n int) (map[string]live.Position, chan live.Message) {
		var mu sync.Mutex
		heads := map[string]live.Position{}
		readyc := make(chan struct{}, n)
		delivered := make(chan live.Message, 4*n) // never full here
		for i := range n {
			ch := name(i)
			stop, err := b.Follow(ch, func(p live.Position) {
				mu.Lock()
				heads[ch] = p
				mu.Unlock()
				readyc <- struct{}{}
			}, func(m live.Message) { delivered <- m }, func(err error) { t.Errorf("follow %q ended: %v", ch, err) })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
		}
		timeout := time.After(waitTimeout)
		for range n {
			select {
			case <-readyc:
			case <-timeout:
				t.Fatalf("not every follow of %d was ready", n)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return heads, delivered
	}

	// New channels: most of the batch is, so the next starts with markers.
	first, _ := followAll(300)
	for ch, p := range first {
		if p.Seq != 0 {
			t.Errorf("new channel %q ready at %v, want Seq 0", ch, p)
		}
	}
	published := publishAll(0, 300)
	// 300 channels with a publication and 300 without, the first batch
	// storing markers first.
	heads, delivered := followAll(600)
	for i := range 600 {
		ch := name(i)
		want, ok := published[ch]
		if !ok {
			want = live.Position{Epoch: heads[ch].Epoch}
		}
		if heads[ch] != want {
			t.Errorf("%q ready at %v, want %v", ch, heads[ch], want)
		}
	}
	again := publishAll(0, 600)
	timeout := time.After(waitTimeout)
	for range 600 {
		select {
		case m := <-delivered:
			if want := again[m.Channel]; m.Pos != want || m.Pos.Seq != heads[m.Channel].Seq+1 || m.Pos.Epoch != heads[m.Channel].Epoch {
				t.Errorf("delivered %q at %v, want %v after the head %v", m.Channel, m.Pos, want, heads[m.Channel])
			}
		case <-timeout:
			t.Fatal("not every publication was delivered")
		}
	}
}
