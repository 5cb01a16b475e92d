// Package brokertest checks a [live.Broker] against the contract written
// on that interface, so that a Hub behaves the same on every broker. It is
// modelled on testing/slogtest: one suite, many implementations.
//
// Call [Run] from a test in the broker's package, with a function that
// makes a fresh broker:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Config{
//			New: func(t *testing.T) live.Broker {
//				b, err := redisbroker.New(redisURL, &redisbroker.Options{HistorySize: 64})
//				if err != nil {
//					t.Fatal(err)
//				}
//				return b
//			},
//			HistorySize: 64,
//		})
//	}
//
// Each clause of the contract is a subtest named after it, so a failure
// says which promise was broken, and -run picks one clause while you fix
// it:
//
//	go test -race -run 'Conformance/History/Seam'
//
// The optional abilities the Hub looks for are checked when the broker has
// them: [live.History], [live.PagedHistory], [live.Snapshots],
// [live.Conditional], [live.Follower] (the Subscribe clauses again,
// through Follow, and many channels followed without a goroutine each),
// and a Close() error method.
//
// [RunNodes] checks what a Hub gets from brokers that share a server, as
// the processes of one application do: one numbering for the publications
// of all, and clients that resume on another process with exactly what
// they missed. [Benchmark] measures the time from Publish on one broker to
// the delivery on another.
//
// The suite is safe to point at a shared server (Redis, NATS, PostgreSQL):
// every subtest uses channels named after the test plus a random suffix,
// so neither parallel runs nor leftovers of earlier runs are seen. It
// publishes only compact JSON, as the Hub does, including a 200 KiB value
// and strings that need escaping. It never sleeps: it waits on deliveries,
// and every wait gives up after 10 seconds, so a broken broker fails the
// test instead of hanging it. Run it with -race.
package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sync/errgroup"
)

// Config describes the broker under test.
type Config struct {
	// New returns a fresh broker for one subtest, or fails t. Register
	// with t.Cleanup whatever the broker depends on (a client connection,
	// a database); if the broker has a Close() error method, the suite
	// closes it at the end of the subtest before those cleanups run, so New
	// must not close the broker itself.
	New func(t *testing.T) live.Broker

	// HistorySize is how many of the latest publications on each channel
	// the brokers returned by New keep for [live.History]: exactly those
	// can be replayed, older ones must be gone. Zero skips the subtests
	// that replay publications, for brokers that keep none; the other
	// History subtests still run when the broker implements it.
	HistorySize int

	// LoseData, used by [RunNodes], removes everything the brokers made by
	// New store on their server, as a server that restarts without its
	// data would: for example, it deletes the keys under their prefix. Nil
	// skips the subtests about such a loss.
	LoseData func(t *testing.T)

	// Cut, used by [RunNodes], returns a broker like those of New whose
	// link to the server cut breaks and keeps broken, as a network
	// partition would: for example, one that connects through a TCP proxy
	// that cut closes. Nil skips the subtest about a node cut off.
	Cut func(t *testing.T) (b live.Broker, cut func())
}

// waitTimeout bounds every wait for the broker. It is generous because
// brokers under test may be remote servers on a busy CI machine.
const waitTimeout = 10 * time.Second

// closer is the optional interface the Hub uses to close a broker it made.
type closer interface{ Close() error }

// Run checks that the brokers made by cfg.New keep the [live.Broker]
// contract, and the [live.History] and [live.Conditional] contracts when
// they implement them. Each clause runs as a subtest of t.
func Run(t *testing.T, cfg Config) {
	if cfg.New == nil {
		panic("brokertest: Config.New is nil")
	}
	s := &suite{cfg: cfg}
	fs := &suite{cfg: cfg, follow: true}
	for _, group := range []struct {
		name  string
		tests []namedTest
	}{
		{"Publish", []namedTest{
			{"SeqFromOne", s.testSeqFromOne},
			{"ChannelsIndependent", s.testChannelsIndependent},
			{"CancelledContext", s.testPublishCancelled},
		}},
		{"PublishIf", []namedTest{
			{"AtHead", s.testPublishIfAtHead},
			{"Race", s.testPublishIfRace},
			{"AmongOthers", s.testPublishIfCounter},
		}},
		{"PublishKey", []namedTest{
			{"Once", s.testKeyOnce},
			{"PerChannel", s.testKeyPerChannel},
			{"Race", s.testKeyRace},
			{"Refused", s.testKeyRefused},
		}},
		{"Subscribe", []namedTest{
			{"ReadyOnFreshChannel", s.testReadyOnFreshChannel},
			{"ReadyAtHead", s.testReadyAtHead},
			{"DeliversExactly", s.testDeliversExactly},
			{"ConcurrentPublishers", s.testConcurrentPublishers},
			{"ManySubscribers", s.testManySubscribers},
			{"ChannelsIsolated", s.testChannelsIsolated},
			{"Cancel", s.testCancel},
			{"CancelledContext", s.testSubscribeCancelled},
			{"Churn", s.testChurn},
		}},
		{"Close", []namedTest{
			{"EndsSubscriptions", s.testCloseEndsSubscriptions},
			{"PublishAfterClose", s.testPublishAfterClose},
			{"SubscribeAfterClose", s.testSubscribeAfterClose},
		}},
		{"Follow", []namedTest{
			{"ReadyOnFreshChannel", fs.needFollow(fs.testReadyOnFreshChannel)},
			{"ReadyAtHead", fs.needFollow(fs.testReadyAtHead)},
			{"DeliversExactly", fs.needFollow(fs.testDeliversExactly)},
			{"ConcurrentPublishers", fs.needFollow(fs.testConcurrentPublishers)},
			{"ManySubscribers", fs.needFollow(fs.testManySubscribers)},
			{"ChannelsIsolated", fs.needFollow(fs.testChannelsIsolated)},
			{"Stop", fs.needFollow(fs.testCancel)},
			{"Churn", fs.needFollow(fs.testChurn)},
			{"Seam", fs.needFollow(fs.testSeam)},
			{"CloseEnds", fs.needFollow(fs.testCloseEndsSubscriptions)},
			{"AfterClose", fs.needFollow(fs.testSubscribeAfterClose)},
			{"ManyChannels", fs.needFollow(fs.testFollowMany)},
		}},
		{"History", []namedTest{
			{"SinceHead", s.testSinceHead},
			{"SinceEach", s.testSinceEach},
			{"OtherEpoch", s.testOtherEpoch},
			{"BeyondHead", s.testBeyondHead},
			{"UnknownChannel", s.testUnknownChannel},
			{"OlderThanRetained", s.testOlderThanRetained},
			{"VisibleOnReturn", s.testVisibleOnReturn},
			{"VisibleBeforeDelivery", s.testVisibleBeforeDelivery},
			{"Seam", s.testSeam},
			{"Pages", s.testPages},
			{"CancelledContext", s.testSinceCancelled},
		}},
		{"Snapshots", []namedTest{
			{"None", s.testSnapshotNone},
			{"Latest", s.testSnapshotLatest},
		}},
		{"Guard", []namedTest{
			{"Reserved", s.testGuardReserved},
			{"Data", s.testGuardData},
			{"Meta", s.testGuardMeta},
			{"Text", s.testGuardText},
			{"PublishIf", s.testGuardPublishIf},
			{"MetaIf", s.testGuardMetaIf},
		}},
	} {
		t.Run(group.name, func(t *testing.T) {
			for _, test := range group.tests {
				t.Run(test.name, test.f)
			}
		})
	}
}

type namedTest struct {
	name string
	f    func(t *testing.T)
}

type suite struct {
	cfg Config

	once      sync.Once
	followers bool // the brokers of New are Followers
	// follow makes the suite subscribe with the brokers' Follow.
	follow bool
}

// broker returns a broker for t that is closed when t ends.
func (s *suite) broker(t *testing.T) live.Broker {
	t.Helper()
	return s.followed(t, closedAtEnd(t, s.cfg.New(t), "Config.New"))
}

// followed returns b, which the suite subscribes to with Follow until t
// ends if it is following.
func (s *suite) followed(t *testing.T, b live.Broker) live.Broker {
	if _, ok := b.(live.Follower); !ok || !s.follow || !reflect.TypeOf(b).Comparable() {
		return b
	}
	followed.Store(b, true)
	t.Cleanup(func() { followed.Delete(b) })
	return b
}

// closedAtEnd returns b, a broker that from made, closing it when tb
// ends; a nil b fails tb.
func closedAtEnd(tb testing.TB, b live.Broker, from string) live.Broker {
	tb.Helper()
	if b == nil {
		tb.Fatalf("brokertest: %s returned nil", from)
	}
	if c, ok := b.(closer); ok {
		tb.Cleanup(func() {
			if err := c.Close(); err != nil {
				tb.Errorf("Close: %v", err)
			}
		})
	}
	return b
}

// brokerToClose returns a broker that the test closes itself, or skips t
// if the broker cannot be closed. It is not closed again at the end of t,
// because the contract does not promise that a second Close is harmless.
func (s *suite) brokerToClose(t *testing.T) (live.Broker, closer) {
	t.Helper()
	b := s.cfg.New(t)
	if b == nil {
		t.Fatal("brokertest: Config.New returned nil")
	}
	c, ok := b.(closer)
	if !ok {
		t.Skipf("%T has no Close() error method", b)
	}
	return s.followed(t, b), c
}

// channelName returns a channel that no other test, and no other run of
// this one, uses: the test's name made valid, then a random suffix. When
// the name is too long its end is kept, which names the subtest.
func channelName(t testing.TB) string {
	tag := "-" + strconv.FormatUint(rand.Uint64(), 36)
	name := []byte(t.Name())
	for i, c := range name {
		switch {
		case c == '/':
			name[i] = ':'
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			strings.IndexByte("_-:.@=+", c) >= 0:
		default:
			name[i] = '_'
		}
	}
	if room := live.MaxChannelLen - len(tag); len(name) > room {
		name = name[len(name)-room:]
	}
	channel := string(name) + tag
	if err := live.ValidChannel(channel); err != nil {
		panic("brokertest: made an invalid channel name: " + err.Error())
	}
	return channel
}

// timeout returns the context that bounds one wait in t.
func timeout(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), waitTimeout)
}

// publish publishes data on channel, failing t if the broker refuses.
func publish(t *testing.T, b live.Broker, channel, data string) live.Position {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	pos, err := b.Publish(ctx, channel, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%q, %.40s): %v", channel, data, err)
	}
	return pos
}

// message is what a subscriber expects for a publication.
func message(channel string, pos live.Position, data string) live.Message {
	return live.Message{Channel: channel, Pos: pos, Data: json.RawMessage(data)}
}

// after returns the position n publications after p, in p's epoch.
func after(p live.Position, n int) live.Position {
	return live.Position{Epoch: p.Epoch, Seq: p.Seq + uint64(n)}
}

// checkContiguous reports the first message of msgs that is not the
// publication after the one before it, starting after head: a gap, a
// duplicate, a reordering or a change of epoch.
func checkContiguous(t *testing.T, who string, head live.Position, msgs []live.Message) {
	t.Helper()
	for i, m := range msgs {
		if want := after(head, i+1); m.Pos != want {
			t.Errorf("%s: delivery %d after head %v is at %v, want %v (deliveries: %s)",
				who, i+1, head, m.Pos, want, positions(msgs))
			return
		}
	}
}

// diffMessages reports how got differs from want, (-want +got). Data and
// Meta are compared as text: it reads better than bytes, and a 200 KiB
// payload compared byte by byte through reflection is slow under -race.
// Nil and empty are equal because the contract does not tell them apart.
func diffMessages(want, got any) string {
	return cmp.Diff(want, got,
		cmpopts.EquateEmpty(),
		cmp.Transformer("text", func(m live.Message) textMessage {
			return textMessage{m.Channel, m.Pos, string(m.Data), string(m.Meta)}
		}))
}

// textMessage is a Message as diffMessages compares it.
type textMessage struct {
	Channel    string
	Pos        live.Position
	Data, Meta string
}

// positions lists the positions of msgs briefly, for failure messages.
func positions(msgs []live.Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i == 20 {
			fmt.Fprintf(&b, " … (%d in all)", len(msgs))
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(m.Pos.String())
	}
	return b.String()
}

// bigPayload is a JSON string of about 200 KiB, too big for one PostgreSQL
// NOTIFY (8000 bytes) or a small network buffer. Its text never repeats,
// so a truncated, reordered or spliced copy does not compare equal.
var bigPayload = func() string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; b.Len() < 200<<10; i++ {
		fmt.Fprintf(&b, "%d:é€𝄞 ", i)
	}
	b.WriteByte('"')
	return b.String()
}()

// payloads are compact JSON values as the Hub publishes them, chosen to
// catch brokers that reformat JSON, mangle escapes or non-ASCII text, or
// cut large values.
var payloads = []string{
	`null`,
	`0`,
	`-1.5e-7`,
	`"plain"`,
	`""`,
	`{}`,
	`[]`,
	`{"b":1,"a":[true,false,null],"c":{"d":"e"}}`,
	`"héllo wörld, 你好, שלום, 👩‍💻🎉"`,
	`{"escapes":"\"\\\/\b\f\n\r\t\u0000\u001f\u2028","html":"\u003cb\u003e\u0026"}`,
	bigPayload,
	`{"after":"big"}`,
}

func (s *suite) testSeqFromOne(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	var epoch string
	for i := uint64(1); i <= 3; i++ {
		pos := publish(t, b, channel, strconv.FormatUint(i, 10))
		if i == 1 {
			epoch = pos.Epoch
		}
		if want := (live.Position{Epoch: epoch, Seq: i}); pos != want {
			t.Errorf("publication %d on a fresh channel is at %v, want %v", i, pos, want)
		}
		if got, err := live.ParsePosition(pos.String()); err != nil || got != pos {
			t.Errorf("ParsePosition(%q) = %v, %v; want the position back (epochs are 1 to 64 of [A-Za-z0-9_-])",
				pos.String(), got, err)
		}
	}
}

func (s *suite) testChannelsIndependent(t *testing.T) {
	b := s.broker(t)
	channels := []string{channelName(t), channelName(t), channelName(t)}
	epochs := make(map[string]string)
	counts := make(map[string]uint64)
	for _, i := range []int{0, 0, 1, 0, 2, 1, 1, 0} {
		channel := channels[i]
		pos := publish(t, b, channel, strconv.Itoa(i))
		if _, ok := epochs[channel]; !ok {
			epochs[channel] = pos.Epoch
		}
		counts[channel]++
		if want := (live.Position{Epoch: epochs[channel], Seq: counts[channel]}); pos != want {
			t.Errorf("Publish(%q) = %v, want %v: each channel counts its own publications", channel, pos, want)
		}
	}
}

// testPublishCancelled checks that a broker gives up on a publication
// whose context has ended, as the Hub does when a client disconnects.
func (s *suite) testPublishCancelled(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	publish(t, b, channel, `"before"`)
	sub := subscribe(t, b, channel)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if pos, err := b.Publish(ctx, channel, []byte(`"cancelled"`)); err == nil {
		t.Errorf("Publish with a cancelled context = %v, nil; want an error", pos)
	}

	// A broker may have taken the publication even though it reported an
	// error (a network broker cannot always know), but it must not leave a
	// hole in the numbering.
	pos := publish(t, b, channel, `"after"`)
	msgs := sub.awaitPos(t, pos)
	checkContiguous(t, "subscriber", sub.head, msgs)
	want := message(channel, pos, `"after"`)
	if diff := diffMessages(want, msgs[len(msgs)-1]); diff != "" {
		t.Errorf("last delivery (-want +got):\n%s", diff)
	}
	if len(msgs) == 2 && string(msgs[0].Data) != `"cancelled"` {
		t.Errorf("delivery before the last has data %.40s, want the cancelled publication", msgs[0].Data)
	}
}

func (s *suite) testReadyOnFreshChannel(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	sub := subscribe(t, b, channel)
	if sub.head.Seq != 0 {
		t.Errorf("ready(%v) on a fresh channel, want Seq 0", sub.head)
	}
	if got, err := live.ParsePosition(sub.head.String()); err != nil || got != sub.head {
		t.Errorf("ParsePosition(%q) = %v, %v; want the head back: the Hub sends it to clients as a cursor",
			sub.head.String(), got, err)
	}
	// The Hub treats a delivery in another epoch than the head as a reset
	// of the channel, so the first publication must share the head's epoch.
	pos := publish(t, b, channel, `"first"`)
	if want := after(sub.head, 1); pos != want {
		t.Errorf("first Publish after ready(%v) = %v, want %v", sub.head, pos, want)
	}
	msgs := sub.awaitPos(t, pos)
	if diff := diffMessages([]live.Message{message(channel, pos, `"first"`)}, msgs); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

func (s *suite) testReadyAtHead(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	var last live.Position
	for i := range 3 {
		last = publish(t, b, channel, strconv.Itoa(i))
	}
	for i := range 2 { // the second subscriber finds the channel active
		sub := subscribe(t, b, channel)
		if sub.head != last {
			t.Errorf("subscriber %d: ready(%v), want the last published position %v", i, sub.head, last)
		}
	}
}

// testDeliversExactly checks that data arrives byte for byte: the Hub
// sends it to clients without parsing it again.
func (s *suite) testDeliversExactly(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	publish(t, b, channel, `"before subscribing"`)
	sub := subscribe(t, b, channel)
	var want []live.Message
	for _, data := range payloads {
		pos := publish(t, b, channel, data)
		if next := after(sub.head, len(want)+1); pos != next {
			t.Errorf("Publish(%.40s) = %v, want %v", data, pos, next)
		}
		want = append(want, message(channel, pos, data))
	}
	got := sub.awaitPos(t, want[len(want)-1].Pos)
	if diff := diffMessages(want, got); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// testConcurrentPublishers checks the numbering under contention, where a
// broker that reads the head and writes head+1 in two steps hands out a
// position twice or delivers out of order.
func (s *suite) testConcurrentPublishers(t *testing.T) {
	const publishers, each = 8, 50
	b := s.broker(t)
	channel := channelName(t)
	head := publish(t, b, channel, `"before"`)
	subs := make([]*subscriber, 3)
	for i := range subs {
		subs[i] = subscribe(t, b, channel)
	}
	want := publishConcurrently(t, []live.Broker{b}, channel, head, publishers, each)
	for i, sub := range subs {
		if sub.head != head {
			t.Errorf("subscriber %d: ready(%v), want %v", i, sub.head, head)
		}
		got := sub.awaitPos(t, want[len(want)-1].Pos)
		checkContiguous(t, fmt.Sprintf("subscriber %d", i), head, got)
		if diff := diffMessages(want, got); diff != "" {
			t.Errorf("subscriber %d: deliveries (-want +got):\n%s", i, diff)
		}
	}
}

func comparePositions(a, b live.Position) int {
	if c := strings.Compare(a.Epoch, b.Epoch); c != 0 {
		return c
	}
	switch {
	case a.Seq < b.Seq:
		return -1
	case a.Seq > b.Seq:
		return 1
	}
	return 0
}

func (s *suite) testManySubscribers(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	subs := make([]*subscriber, 4)
	for i := range subs {
		subs[i] = subscribe(t, b, channel)
	}
	var want []live.Message
	for i := range 5 {
		data := strconv.Itoa(i)
		want = append(want, message(channel, publish(t, b, channel, data), data))
	}
	for i, sub := range subs {
		if diff := diffMessages(want, sub.awaitPos(t, want[len(want)-1].Pos)); diff != "" {
			t.Errorf("subscriber %d: deliveries (-want +got):\n%s", i, diff)
		}
	}
}

// testChannelsIsolated checks that a subscriber gets only its channel,
// with publications on other channels, subscribed or not, interleaved.
func (s *suite) testChannelsIsolated(t *testing.T) {
	b := s.broker(t)
	a, c := channelName(t), channelName(t)
	quiet := channelName(t) // published on, never subscribed to
	subA, subC := subscribe(t, b, a), subscribe(t, b, c)
	want := map[string][]live.Message{}
	for i, channel := range []string{c, a, quiet, c, a, a, quiet} {
		data := fmt.Sprintf(`{"i":%d,"channel":%q}`, i, channel)
		want[channel] = append(want[channel], message(channel, publish(t, b, channel, data), data))
	}
	for _, x := range []struct {
		channel string
		sub     *subscriber
	}{{a, subA}, {c, subC}} {
		msgs := want[x.channel]
		got := x.sub.awaitPos(t, msgs[len(msgs)-1].Pos)
		if diff := diffMessages(want[x.channel], got); diff != "" {
			t.Errorf("subscriber to %q: deliveries (-want +got):\n%s", x.channel, diff)
		}
	}
}

// testCancel checks that ending a subscription ends its deliveries: the
// Hub frees the queue that deliver writes to once Subscribe returns.
func (s *suite) testCancel(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	sub := subscribe(t, b, channel)
	first := publish(t, b, channel, `"first"`)
	sub.awaitPos(t, first)

	ctx, cancel := timeout(t)
	defer cancel()
	if err := sub.end(ctx); err != nil {
		t.Errorf("Subscribe after its context ended: %v, want nil", err)
	}

	// Deliveries after Subscribe returned are recorded as faults of sub. A
	// second subscriber shows when the broker has handled a later
	// publication, without sleeping.
	publish(t, b, channel, `"after cancel"`)
	witness := subscribe(t, b, channel)
	last := publish(t, b, channel, `"witnessed"`)
	witness.awaitPos(t, last)
	if diff := diffMessages([]live.Message{message(channel, first, `"first"`)}, sub.messages()); diff != "" {
		t.Errorf("cancelled subscriber's deliveries (-want +got):\n%s", diff)
	}
}

// testSubscribeCancelled checks that a subscription whose context has
// ended before it starts returns nil and does not linger.
func (s *suite) testSubscribeCancelled(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	sub := startSubscriber(ctx, b, channel)
	wait, stop := timeout(t)
	defer stop()
	if err := sub.end(wait); err != nil {
		t.Errorf("Subscribe with a cancelled context: %v, want nil", err)
	}
	sub.report(t)
}

// testChurn subscribes and cancels on many goroutines while a publisher
// runs, to shake out races between registering, delivering and
// unregistering. Run it with -race.
func (s *suite) testChurn(t *testing.T) {
	const churners, rounds = 8, 25
	b := s.broker(t)
	channel := channelName(t)
	ctx, cancel := timeout(t)
	defer cancel()

	// The publisher runs until the churners are done, so a churner that
	// waits for a delivery always gets one.
	stop := make(chan struct{})
	published := make(chan error, 1)
	go func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				published <- nil
				return
			default:
			}
			if _, err := b.Publish(ctx, channel, []byte(strconv.Itoa(n))); err != nil {
				published <- fmt.Errorf("Publish: %w", err)
				return
			}
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	for c := range churners {
		g.Go(func() error {
			for r := range rounds {
				subCtx, subCancel := context.WithCancel(gctx)
				sub := startSubscriber(subCtx, b, channel)
				err := sub.awaitReady(gctx)
				if err == nil && r%2 == 0 {
					_, err = sub.waitFor(gctx, func(msgs []live.Message) bool { return len(msgs) > 0 })
				}
				subCancel()
				if endErr := sub.end(ctx); err == nil && endErr != nil {
					err = fmt.Errorf("Subscribe after its context ended: %w", endErr)
				}
				if err == nil {
					err = sub.check()
				}
				if err != nil {
					return fmt.Errorf("churner %d, round %d: %w", c, r, err)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	close(stop)
	if err != nil {
		t.Error(err)
	}
	if err := <-published; err != nil {
		t.Error(err)
	}
}

// testCloseEndsSubscriptions checks that Close ends every Subscribe call
// with ErrClosed, so a Hub shutting down is not left waiting.
func (s *suite) testCloseEndsSubscriptions(t *testing.T) {
	b, c := s.brokerToClose(t)
	channel := channelName(t)
	subs := []*subscriber{subscribe(t, b, channel), subscribe(t, b, channel), subscribe(t, b, channelName(t))}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	ctx, cancel := timeout(t)
	defer cancel()
	for i, sub := range subs {
		if err := sub.wait(ctx); !errors.Is(err, live.ErrClosed) {
			t.Errorf("subscriber %d after Close: %v, want ErrClosed", i, err)
		}
	}
}

func (s *suite) testPublishAfterClose(t *testing.T) {
	b, c := s.brokerToClose(t)
	channel := channelName(t)
	publish(t, b, channel, `"before"`)
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, ch := range []string{channel, channelName(t)} {
		ctx, cancel := timeout(t)
		pos, err := b.Publish(ctx, ch, []byte(`"after"`))
		cancel()
		if !errors.Is(err, live.ErrClosed) {
			t.Errorf("Publish(%q) after Close = %v, %v; want ErrClosed", ch, pos, err)
		}
	}
}

func (s *suite) testSubscribeAfterClose(t *testing.T) {
	b, c := s.brokerToClose(t)
	used := channelName(t)
	publish(t, b, used, `"before"`)
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, channel := range []string{used, channelName(t)} {
		ctx, cancel := timeout(t)
		sub := startSubscriber(ctx, b, channel)
		// A Subscribe that blocks returns nil when ctx times out; the
		// longer wait only catches one that ignores ctx too.
		wait, stop := context.WithTimeout(t.Context(), 2*waitTimeout)
		err := sub.wait(wait)
		stop()
		cancel()
		if !errors.Is(err, live.ErrClosed) {
			t.Errorf("Subscribe(%q) after Close = %v, want ErrClosed at once", channel, err)
		}
		sub.report(t)
		if msgs := sub.messages(); len(msgs) > 0 {
			t.Errorf("Subscribe(%q) after Close delivered %s", channel, positions(msgs))
		}
	}
}

// needFollow returns test, skipped when the brokers are not Followers.
func (s *suite) needFollow(test func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) {
		s.once.Do(func() {
			_, s.followers = closedAtEnd(t, s.cfg.New(t), "Config.New").(live.Follower)
		})
		if !s.followers {
			t.Skip("the broker is not a live.Follower")
		}
		test(t)
	}
}

// testFollowMany checks that a broker follows many channels at once,
// delivering on each, without a goroutine for each: that is what Follow
// is for.
func (s *suite) testFollowMany(t *testing.T) {
	const channels, published = 1000, 50
	b := s.broker(t)
	f := b.(live.Follower)
	base := channelName(t)
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	var mu sync.Mutex // guards got and ended
	got := make(map[string][]live.Position)
	var ended []error
	arrived := make(chan struct{}, channels) // one send per delivery or ending
	stops := make([]func(), 0, channels)
	wg.Add(channels)
	for i := range channels {
		name := base + "-" + strconv.Itoa(i)
		var once sync.Once
		stop, err := f.Follow(name, func(live.Position) { once.Do(wg.Done) }, func(m live.Message) {
			mu.Lock()
			got[m.Channel] = append(got[m.Channel], m.Pos)
			mu.Unlock()
			select {
			case arrived <- struct{}{}:
			default:
			}
		}, func(err error) {
			mu.Lock()
			ended = append(ended, err)
			mu.Unlock()
			select {
			case arrived <- struct{}{}:
			default:
			}
		})
		if err != nil {
			t.Fatalf("Follow(%q): %v", name, err)
		}
		stops = append(stops, stop)
	}
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
	})
	ready := make(chan struct{})
	go func() { wg.Wait(); close(ready) }()
	select {
	case <-ready:
	case <-time.After(waitTimeout):
		t.Fatalf("%d follows did not all become ready within %v", channels, waitTimeout)
	}
	if n := runtime.NumGoroutine() - before; n >= channels/4 {
		t.Errorf("following %d channels added %d goroutines, want far fewer than one each", channels, n)
	}
	for i := range published {
		publish(t, b, base+"-"+strconv.Itoa(i*channels/published), `"x"`)
	}
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for waiting := true; waiting; {
		select {
		case <-arrived:
			mu.Lock()
			waiting = len(got) < published && len(ended) == 0
			mu.Unlock()
		case <-timer.C:
			waiting = false
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ended) > 0 {
		t.Fatalf("follows ended: %v", ended[0])
	}
	if len(got) != published {
		t.Fatalf("%d of %d channels had their publication delivered", len(got), published)
	}
	for ch, ps := range got {
		if len(ps) != 1 || ps[0].Seq != 1 {
			t.Errorf("%s: delivered %v, want one publication at Seq 1", ch, ps)
		}
	}
}
