package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"
)

// RunNodes checks what an application gets from the broker when it runs
// as several processes: each process, or node, has its own Hub on its own
// broker, and the brokers share one server. Publications made through
// either node are numbered once and reach the subscribers of both, and a
// client that leaves one node resumes on the other with exactly what it
// missed, in order, over SSE (with Last-Event-ID, as EventSource does) and
// over WebSocket; Hub.Disconnect and Hub.Reauthorize have taken effect on
// every node when they return, and fail naming a node cut off from the
// server. For brokers that implement [live.Conditional], a conditional
// publication through either is taken only at the head it expects, and 50
// clients that increment a State's counter with If-Match over two and
// three nodes lose no increment. Each clause runs as a subtest of t.
//
// RunNodes calls cfg.New more than once in each subtest, and the brokers
// it returns must share what they store (the same server, and the same
// key prefix, schema or stream), each on a connection of its own, as the
// processes of one application configured alike would. Such a Config
// serves [Run] as well:
//
//	func TestNodes(t *testing.T) {
//		prefix := newPrefix(t) // removed when t ends
//		brokertest.RunNodes(t, brokertest.Config{
//			New: func(t *testing.T) live.Broker {
//				return redisbroker.New(newClient(t), &redisbroker.Options{HistorySize: 16, Prefix: prefix})
//			},
//			HistorySize: 16,
//			LoseData:    func(t *testing.T) { deleteKeys(t, prefix) },
//		})
//	}
//
// The clauses that resume from a cursor older than the history need
// cfg.HistorySize, those about a server that loses its data need
// cfg.LoseData, and the one about a node cut off from the server needs
// cfg.Cut; without them they are skipped.
func RunNodes(t *testing.T, cfg Config) {
	if cfg.New == nil {
		panic("brokertest: Config.New is nil")
	}
	s := &suite{cfg: cfg}
	t.Run("Share", func(t *testing.T) {
		t.Run("Numbering", s.testShareNumbering)
		t.Run("DataLoss", s.testShareDataLoss)
		t.Run("PublishIf", s.testSharePublishIf)
		t.Run("PublishKey", s.testShareKey)
	})
	t.Run("State", s.testState)
	t.Run("Resume", func(t *testing.T) {
		for _, tr := range []transport{sseTransport{}, wsTransport{}} {
			t.Run(tr.name(), func(t *testing.T) {
				t.Run("Missed", func(t *testing.T) { s.testResumeMissed(t, tr) })
				t.Run("OutOfWindow", func(t *testing.T) { s.testResumeOutOfWindow(t, tr) })
				t.Run("DataLost", func(t *testing.T) { s.testResumeDataLost(t, tr) })
			})
		}
	})
	t.Run("Control", s.testControl)
	t.Run("Revocation", s.testRevocation)
	t.Run("Unanswered", s.testUnanswered)
	t.Run("Guard", s.testGuard)
	t.Run("Retries", s.testRetries)
	t.Run("Presence", s.testPresence)
}

// loseData calls cfg.LoseData, or skips t without it.
func (s *suite) loseData(t *testing.T) {
	t.Helper()
	if s.cfg.LoseData == nil {
		t.Skip("Config.LoseData is nil")
	}
	s.cfg.LoseData(t)
}

// testShareNumbering checks that brokers sharing a server agree on the
// head, hand out every position once while they publish at the same time,
// and deliver the same publications, in order, to the subscribers of
// both.
func (s *suite) testShareNumbering(t *testing.T) {
	const publishers, each = 8, 100
	a, b := s.broker(t), s.broker(t)
	channel := channelName(t)
	head := publish(t, a, channel, `"before"`)
	subs := []*subscriber{subscribe(t, a, channel), subscribe(t, b, channel)}
	want := publishConcurrently(t, []live.Broker{a, b}, channel, head, publishers, each)
	for i, sub := range subs {
		if sub.head != head {
			t.Errorf("subscriber on broker %d: ready(%v), want %v, the position Publish returned", i, sub.head, head)
		}
		got := sub.awaitPos(t, want[len(want)-1].Pos)
		checkContiguous(t, fmt.Sprintf("subscriber on broker %d", i), head, got)
		if diff := diffMessages(want, got); diff != "" {
			t.Errorf("subscriber on broker %d: deliveries (-want +got):\n%s", i, diff)
		}
	}
}

// testShareDataLoss checks a server that loses its data: the numbering
// starts again at 1 in a new epoch on every broker, so that no cursor
// resumes into other publications, and the subscriptions of every broker
// end with an error instead of delivering from another numbering.
func (s *suite) testShareDataLoss(t *testing.T) {
	if s.cfg.LoseData == nil {
		t.Skip("Config.LoseData is nil")
	}
	a, b := s.broker(t), s.broker(t)
	channel := channelName(t)
	before := publish(t, a, channel, `"before"`)
	subs := []*subscriber{subscribe(t, a, channel), subscribe(t, b, channel)}
	s.loseData(t)
	after := publish(t, a, channel, `"after"`)
	if after.Epoch == before.Epoch || after.Seq != 1 {
		t.Fatalf("first publication after the loss is at %v, want Seq 1 in an epoch other than %q", after, before.Epoch)
	}
	next := publish(t, b, channel, `"next"`)
	if want := (live.Position{Epoch: after.Epoch, Seq: 2}); next != want {
		t.Errorf("publication on the other broker after the loss is at %v, want %v", next, want)
	}
	ctx, cancel := timeout(t)
	defer cancel()
	for i, sub := range subs {
		if err := sub.wait(ctx); err == nil || errors.Is(err, live.ErrClosed) {
			t.Errorf("subscriber on broker %d after the loss: %v, want an error", i, err)
		}
	}
	if head := subscribe(t, b, channel).head; head != next {
		t.Errorf("ready(%v) after the loss, want %v", head, next)
	}
	h, ok := b.(live.History)
	if !ok {
		return
	}
	checkGone(t, h, channel, before, "the publication is from before the loss")
	got, err := since(t, h, channel, live.Position{Epoch: after.Epoch})
	if err != nil {
		t.Fatalf("Since the start of the new epoch: %v", err)
	}
	want := []live.Message{message(channel, after, `"after"`), message(channel, next, `"next"`)}
	if diff := diffMessages(want, got); diff != "" {
		t.Errorf("Since the start of the new epoch (-want +got):\n%s", diff)
	}
}

// publishConcurrently publishes publishers×each values on channel from as
// many goroutines, spread over brokers, and returns the messages a
// subscriber that was ready at head expects: one for every position after
// head, each returned by exactly one Publish.
func publishConcurrently(t *testing.T, brokers []live.Broker, channel string, head live.Position, publishers, each int) []live.Message {
	t.Helper()
	var mu sync.Mutex // guards published
	published := make(map[live.Position]string)
	ctx, cancel := timeout(t)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	for p := range publishers {
		b := brokers[p%len(brokers)]
		g.Go(func() error {
			var prev live.Position
			for n := range each {
				data := fmt.Sprintf(`{"publisher":%d,"n":%d}`, p, n)
				pos, err := b.Publish(ctx, channel, []byte(data))
				if err != nil {
					return fmt.Errorf("publisher %d: Publish: %w", p, err)
				}
				if n > 0 && pos.Seq <= prev.Seq {
					return fmt.Errorf("publisher %d: Publish returned %v after %v", p, pos, prev)
				}
				prev = pos
				mu.Lock()
				dup, ok := published[pos]
				published[pos] = data
				mu.Unlock()
				if ok {
					return fmt.Errorf("publisher %d: Publish returned %v for %s and for %s", p, pos, dup, data)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	// Unique positions, as many as publications, all within the range
	// after the head: they are exactly that range.
	want := make([]live.Message, 0, publishers*each)
	for i := 1; i <= publishers*each; i++ {
		pos := after(head, i)
		data, ok := published[pos]
		if !ok {
			t.Fatalf("no Publish returned %v; returned positions: %v",
				pos, slices.SortedFunc(maps.Keys(published), comparePositions))
		}
		want = append(want, message(channel, pos, data))
	}
	return want
}

// newNode starts a node on a broker from s for the rest of t: a Hub on its
// own broker, behind an HTTP server with the SSE and WebSocket handlers,
// as one process of an application.
func (s *suite) newNode(t *testing.T) *servertest.Node {
	t.Helper()
	return servertest.NewNode(t, s.broker(t), nil)
}

// publishVia publishes data through n's Hub and returns its cursor.
func publishVia(t *testing.T, n *servertest.Node, channel, data string) string {
	t.Helper()
	return n.Publish(t, channel, data).String()
}

// A delivery is what a client of a Hub receives: a publication, or a
// reset that tells it to refetch.
type delivery struct {
	Cursor string
	Data   string // the published JSON; empty for a reset
	Reset  string // the reason of a reset; empty for a publication
}

func (d delivery) String() string {
	if d.Reset != "" {
		return "reset (" + d.Reset + ") to " + d.Cursor
	}
	return d.Cursor + " " + d.Data
}

// A transport connects test clients to a node.
type transport interface {
	name() string
	// open follows channel on n from cursor (none if empty) and returns
	// once the node has subscribed the client, so whatever is published
	// next reaches it. The client is gone when t ends or close is called.
	open(t *testing.T, n *servertest.Node, channel, cursor string) client
}

// A client receives what a node sends it on one channel.
type client interface {
	// next returns the next delivery.
	next(t *testing.T) delivery
	// close disconnects, as a browser tab that goes away.
	close()
}

// nextN returns the next n deliveries of c.
func nextN(t *testing.T, c client, n int) []delivery {
	t.Helper()
	got := make([]delivery, n)
	for i := range got {
		got[i] = c.next(t)
	}
	return got
}

// sseTransport reads one SSE stream per client, resuming with
// Last-Event-ID as EventSource does.
type sseTransport struct{}

func (sseTransport) name() string { return "SSE" }

func (sseTransport) open(t *testing.T, n *servertest.Node, channel, cursor string) client {
	t.Helper()
	return sseClient{servertest.OpenStream(t, n.SSE+channel, cursor)}
}

type sseClient struct{ s *servertest.Stream }

func (c sseClient) next(t *testing.T) delivery {
	t.Helper()
	e := c.s.Next(t)
	if e.Event != "reset" {
		return delivery{Cursor: e.ID, Data: e.Data}
	}
	var r struct{ Reason, Cursor string }
	if err := json.Unmarshal([]byte(e.Data), &r); err != nil {
		t.Fatalf("reset event %+v: %v", e, err)
	}
	return delivery{Cursor: r.Cursor, Reset: r.Reason}
}

func (c sseClient) close() { c.s.Close() }

// wsTransport subscribes over one WebSocket connection per client, with
// the cursor in the subscribe message.
type wsTransport struct{}

func (wsTransport) name() string { return "WebSocket" }

// wsFrame is a frame the Hub sends over WebSocket.
type wsFrame struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Cursor  string          `json:"cursor"`
	Data    json.RawMessage `json:"data"`
	Reason  string          `json:"reason"`
	Message string          `json:"message"`
}

func (wsTransport) open(t *testing.T, n *servertest.Node, channel, cursor string) client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait, stop := timeout(t)
	defer stop()
	conn, _, err := websocket.Dial(wait, n.WS, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	conn.SetReadLimit(-1)
	sub := map[string]string{"type": "subscribe", "channel": channel}
	if cursor != "" {
		sub["cursor"] = cursor
	}
	msg, _ := json.Marshal(sub)
	if err := conn.Write(wait, websocket.MessageText, msg); err != nil {
		conn.CloseNow()
		cancel()
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	c := newWSClient(t, cancel, func(c *wsClient) error {
		defer conn.CloseNow()
		acked := false
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return err
			}
			var f wsFrame
			if err := json.Unmarshal(b, &f); err != nil {
				return fmt.Errorf("frame %q: %w", b, err)
			}
			switch f.Type {
			case "subscribed":
				if !acked {
					acked = true
					close(subscribed)
				}
			case "data":
				c.msgs <- delivery{Cursor: f.Cursor, Data: string(f.Data)}
			case "reset":
				c.msgs <- delivery{Cursor: f.Cursor, Reset: f.Reason}
			case "error":
				return fmt.Errorf("error frame: %s", b)
			}
		}
	})
	select {
	case <-subscribed:
	case <-c.done:
		t.Fatalf("WebSocket ended before the subscription to %q was acknowledged: %v", channel, c.err)
	case <-wait.Done():
		t.Fatalf("the subscription to %q was not acknowledged", channel)
	}
	return c
}

// A wsClient receives what a node sends it over WebSocket, on a goroutine
// of its own.
type wsClient struct {
	msgs   chan delivery
	done   chan struct{} // closed when the reader has returned
	err    error         // why the reader returned; read after done
	cancel context.CancelFunc
}

func newWSClient(t *testing.T, cancel context.CancelFunc, read func(c *wsClient) error) *wsClient {
	c := &wsClient{msgs: make(chan delivery, 1024), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(c.done)
		c.err = read(c)
	}()
	t.Cleanup(c.close)
	return c
}

func (c *wsClient) close() {
	c.cancel()
	<-c.done
}

func (c *wsClient) next(t *testing.T) delivery {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	select {
	case d := <-c.msgs:
		return d
	case <-c.done:
		select {
		case d := <-c.msgs:
			return d
		default:
		}
		t.Fatalf("the connection ended while a message was awaited: %v", c.err)
	case <-ctx.Done():
		t.Fatal("no message")
	}
	panic("unreachable")
}

// readOnA follows channel on node a with a new client, publishes n values
// through a, and returns the client's cursor after reading them; the
// client is gone when it returns.
func readOnA(t *testing.T, tr transport, a *servertest.Node, channel string, n int) string {
	t.Helper()
	c := tr.open(t, a, channel, "")
	var want []delivery
	for i := range n {
		data := fmt.Sprintf(`"a%d"`, i+1)
		want = append(want, delivery{Cursor: publishVia(t, a, channel, data), Data: data})
	}
	got := nextN(t, c, n)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("messages on node A (-want +got):\n%s", diff)
	}
	c.close()
	return got[n-1].Cursor
}

// testResumeMissed checks that a client that leaves node A and comes back
// on node B gets exactly what both nodes published meanwhile, in order,
// then the live stream, without a duplicate.
func (s *suite) testResumeMissed(t *testing.T, tr transport) {
	a, b := s.newNode(t), s.newNode(t)
	channel := channelName(t)
	cursor := readOnA(t, tr, a, channel, 3)

	var want []delivery
	publish := func(n *servertest.Node, data string) {
		want = append(want, delivery{Cursor: publishVia(t, n, channel, data), Data: data})
	}
	for i, n := range []*servertest.Node{a, b, a, b} {
		publish(n, strconv.Itoa(4+i))
	}
	c := tr.open(t, b, channel, cursor)
	for i, n := range []*servertest.Node{a, b} { // live, after the replay
		publish(n, strconv.Itoa(8+i))
	}
	// Nothing more: a duplicate would come before this.
	publish(a, `"last"`)
	var got []delivery
	for range want {
		d := c.next(t)
		got = append(got, d)
		if d.Reset != "" {
			break // nothing follows that the client could tell apart
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages on node B after resuming from %s (-want +got):\n%s", cursor, diff)
	}
	checkCursors(t, cursor, got)
}

// testResumeOutOfWindow checks that a client whose cursor is older than
// the history is reset to the head, then receives the live stream.
func (s *suite) testResumeOutOfWindow(t *testing.T, tr transport) {
	s.retained(t, 1)
	a, b := s.newNode(t), s.newNode(t)
	channel := channelName(t)
	cursor := readOnA(t, tr, a, channel, 1)
	var head string
	for i := range s.cfg.HistorySize + 1 {
		head = publishVia(t, b, channel, strconv.Itoa(i))
	}
	c := tr.open(t, b, channel, cursor)
	if got, want := c.next(t), (delivery{Cursor: head, Reset: "gone"}); got != want {
		t.Fatalf("first message after resuming from %s = %v, want %v", cursor, got, want)
	}
	next := publishVia(t, a, channel, `"next"`)
	if got, want := c.next(t), (delivery{Cursor: next, Data: `"next"`}); got != want {
		t.Errorf("message after the reset = %v, want %v", got, want)
	}
}

// testResumeDataLost checks that a client whose cursor is from before the
// server lost its data is reset to the new numbering, then receives the
// live stream.
func (s *suite) testResumeDataLost(t *testing.T, tr transport) {
	if s.cfg.LoseData == nil {
		t.Skip("Config.LoseData is nil")
	}
	a, b := s.newNode(t), s.newNode(t)
	channel := channelName(t)
	cursor := readOnA(t, tr, a, channel, 2)
	s.loseData(t)
	head := publishVia(t, a, channel, `"in a new epoch"`)
	c := tr.open(t, b, channel, cursor)
	if got, want := c.next(t), (delivery{Cursor: head, Reset: "epoch"}); got != want {
		t.Fatalf("first message after resuming from %s across the loss = %v, want %v", cursor, got, want)
	}
	next := publishVia(t, b, channel, `"next"`)
	if got, want := c.next(t), (delivery{Cursor: next, Data: `"next"`}); got != want {
		t.Errorf("message after the reset = %v, want %v", got, want)
	}
}

// checkCursors reports deliveries that are not the publication after the
// one before, starting after cursor.
func checkCursors(t *testing.T, cursor string, got []delivery) {
	t.Helper()
	prev, err := live.ParsePosition(cursor)
	if err != nil {
		t.Fatalf("cursor %q: %v", cursor, err)
	}
	for _, d := range got {
		pos, err := live.ParsePosition(d.Cursor)
		if err != nil || d.Reset != "" || pos != after(prev, 1) {
			t.Errorf("%v after %v: not the next publication", d, prev)
			return
		}
		prev = pos
	}
}
