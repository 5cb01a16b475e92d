package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/google/go-cmp/cmp"
)

// testPresence checks that nodes sharing the broker see the same members:
// after 200 random opens and closes of 50 clients of 10 users spread over
// two nodes, both nodes' subscribers and Hub.Members agree with what is
// open. Then a third node dies without a word (its broker stops
// publishing, as a killed process's would), and its members leave the
// survivors once PresenceTimeout has passed; the test logs how long that
// took.
func (s *suite) testPresence(t *testing.T) {
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	members, counted := "pres-m-"+id, "pres-c-"+id
	const expiry = 2 * time.Second
	opts := &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			user := r.Header.Get("X-User")
			return live.Identity{User: user, Info: map[string]string{"name": user}}, nil
		},
		Presence: func(channel string) live.PresenceMode {
			switch channel {
			case members:
				return live.PresenceMembers
			case counted:
				return live.PresenceCount
			}
			return live.PresenceOff
		},
		PresenceGrace:   200 * time.Millisecond,
		PresenceTimeout: expiry,
	}
	dying := &cutBroker{Broker: s.broker(t)}
	a, b := servertest.NewNode(t, s.broker(t), opts), servertest.NewNode(t, s.broker(t), opts)
	c := servertest.NewNode(t, dying, opts)

	onA, onB := watchPresence(t, a, "watcher-a", members), watchPresence(t, b, "watcher-b", members)
	want := map[string]int{"watcher-a": 1, "watcher-b": 1}
	onA.until(t, want)
	onB.until(t, want)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	clients := make([]*websocket.Conn, 50)
	for range 200 {
		i := rng.IntN(len(clients))
		if clients[i] != nil {
			clients[i].Close(websocket.StatusNormalClosure, "")
			clients[i] = nil
			continue
		}
		node := a
		if rng.IntN(2) == 1 {
			node = b
		}
		clients[i] = openMember(t, node, fmt.Sprintf("u%d", i%10), members)
	}
	for i, cl := range clients {
		if cl != nil {
			want[fmt.Sprintf("u%d", i%10)]++
		}
	}
	onA.until(t, want)
	onB.until(t, want)
	ctx, cancel := timeout(t)
	defer cancel()
	ma, na, err := a.Hub.Members(ctx, members)
	if err != nil {
		t.Fatal(err)
	}
	mb, nb, err := b.Hub.Members(ctx, members)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ma, mb); diff != "" || na != nb || na != len(want) {
		t.Fatalf("Hub.Members: %d on A, %d on B, want %d; A and B differ (-A +B):\n%s", na, nb, len(want), diff)
	}

	// Members on a node that dies.
	count := watchPresence(t, a, "counter", counted)
	for i := range 5 {
		openMember(t, c, fmt.Sprintf("d%d", i), counted)
	}
	count.untilCount(t, 6)
	dying.cut.Store(true)
	start := time.Now()
	count.untilCount(t, 1)
	t.Logf("a dead node's members left the survivors after %v (PresenceTimeout %v)", time.Since(start).Round(time.Millisecond), expiry)
}

// cutBroker stops publishing when cut, as a dead node's would.
type cutBroker struct {
	live.Broker
	cut atomic.Bool
}

func (b *cutBroker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	if b.cut.Load() {
		return live.Position{}, errors.New("brokertest: node cut off")
	}
	return b.Broker.Publish(ctx, channel, data)
}

// openMember opens a WebSocket as user subscribed to channel, reading and
// discarding what it receives until t ends or it is closed.
func openMember(t *testing.T, n *servertest.Node, user, channel string) *websocket.Conn {
	t.Helper()
	conn := subscribeAs(t, n, user, channel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		conn.CloseNow()
		<-done
	})
	return conn
}

// subscribeAs opens a WebSocket to n as user and subscribes it to channel.
func subscribeAs(t *testing.T, n *servertest.Node, user, channel string) *websocket.Conn {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	conn := dialUser(t, n, user)
	conn.SetReadLimit(-1) // presence snapshots grow with the audience
	msg, _ := json.Marshal(map[string]string{"type": "subscribe", "channel": channel})
	if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
		t.Fatal(err)
	}
	return conn
}

// A presenceWatch follows a channel's presence frames on one connection.
type presenceWatch struct {
	changed chan struct{}
	done    chan struct{}

	mu    sync.Mutex // guards conns, count and err
	conns map[string]int
	count int
	err   error
}

func watchPresence(t *testing.T, n *servertest.Node, user, channel string) *presenceWatch {
	t.Helper()
	conn := subscribeAs(t, n, user, channel)
	w := &presenceWatch{changed: make(chan struct{}, 1), done: make(chan struct{}), conns: map[string]int{}}
	go func() {
		defer close(w.done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			var f struct {
				Type    string        `json:"type"`
				Members []live.Member `json:"members"`
				Join    []live.Member `json:"join"`
				Leave   []string      `json:"leave"`
				Count   int           `json:"count"`
			}
			if json.Unmarshal(b, &f) != nil || f.Type != "presence" {
				continue
			}
			w.mu.Lock()
			if f.Members != nil {
				clear(w.conns)
			}
			for _, m := range append(f.Members, f.Join...) {
				w.conns[m.User] = m.Conns
			}
			for _, u := range f.Leave {
				delete(w.conns, u)
			}
			w.count = f.Count
			w.mu.Unlock()
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		conn.CloseNow()
		<-w.done
	})
	return w
}

// wait waits until ok holds of what the watch has seen.
func (w *presenceWatch) wait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	for {
		w.mu.Lock()
		done, err, conns, count := ok(), w.err, fmt.Sprint(w.conns), w.count
		w.mu.Unlock()
		if done {
			return
		}
		select {
		case <-w.changed:
		case <-w.done:
			t.Fatalf("the connection ended (%v) waiting for %s", err, what)
		case <-ctx.Done():
			t.Fatalf("waited for %s; have members %s, count %d", what, conns, count)
		}
	}
}

// until waits for the members to be want, by user with connections.
func (w *presenceWatch) until(t *testing.T, want map[string]int) {
	t.Helper()
	w.wait(t, fmt.Sprint("members ", want), func() bool { return cmp.Equal(w.conns, want) })
}

// untilCount waits for the count to be n.
func (w *presenceWatch) untilCount(t *testing.T, n int) {
	t.Helper()
	w.wait(t, fmt.Sprint("count ", n), func() bool { return w.count == n })
}

// BenchmarkPresence measures presence across two nodes: b.N users join one
// channel through node A (a WebSocket each, eight dialing at a time), and
// it reports how many joins per second node B's subscribers saw
// (joins/s, from the first dial until a subscriber on B counts them all),
// and the presence frames that subscriber got for them (frames), which
// coalescing keeps near one per 100 ms. Run it with a fixed count:
//
//	go test -run '^$' -bench Presence -benchtime 1000x
func BenchmarkPresence(b *testing.B, cfg BenchConfig) {
	if cfg.New == nil {
		panic("brokertest: BenchConfig.New is nil")
	}
	channel := "pres-bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	opts := &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: r.Header.Get("X-User"), Info: map[string]string{"name": r.Header.Get("X-User")}}, nil
		},
		Presence: func(ch string) live.PresenceMode {
			if ch == channel {
				return live.PresenceMembers
			}
			return live.PresenceOff
		},
		MaxConnsPerIP: -1,
	}
	a, other := servertest.NewNode(b, cfg.broker(b), opts), servertest.NewNode(b, cfg.broker(b), opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	watcher, _, err := websocket.Dial(ctx, other.WS, &websocket.DialOptions{HTTPHeader: http.Header{"X-User": {"watcher"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer watcher.CloseNow()
	watcher.SetReadLimit(-1)
	watcher.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"`+channel+`"}`))
	read := func() (count int) {
		for {
			_, data, err := watcher.Read(ctx)
			if err != nil {
				b.Fatal(err)
			}
			var f struct {
				Type  string `json:"type"`
				Count int    `json:"count"`
			}
			if json.Unmarshal(data, &f) == nil && f.Type == "presence" {
				return f.Count
			}
		}
	}
	for read() != 1 { // the watcher itself
	}

	b.ResetTimer()
	start := time.Now()
	conns := make([]*websocket.Conn, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				c, _, err := websocket.Dial(ctx, a.WS, &websocket.DialOptions{HTTPHeader: http.Header{"X-User": {fmt.Sprintf("u%d", i)}}})
				if err != nil {
					b.Error(err)
					return
				}
				c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"`+channel+`"}`))
				conns[i] = c
			}
		})
	}
	frames := 0
	for n := 0; n != b.N+1; frames++ {
		n = read()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.CloseNow()
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "joins/s")
	b.ReportMetric(float64(frames), "frames")
	b.ReportMetric(0, "ns/op")
}
