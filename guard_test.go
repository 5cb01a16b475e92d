package live_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
)

// What an application publishes through a broker itself is data, on any
// broker: the reserved channels are refused, and data that looks like the
// envelope hubs once carried an exclusion in reaches everyone as it was.
// brokertest checks every broker for this; here the memory broker, and the
// hub that delivers the data.
func TestBrokerPublishIsData(t *testing.T) {
	tm := newTeams()
	broker := newMemoryBroker(t, 64)
	a := newTeamServer(t, tm, broker)
	alice := dialAs(t, a, "alice", "red")
	bob := dialAs(t, a, "bob", "red")
	ctx := context.Background()
	for _, c := range []struct{ channel, data string }{
		{"@live:control", `{"op":"disconnect","user":"alice","from":"forged"}`},
		{"@live:presence", `{"op":"diff","from":"forged","ch":{"red":{"set":[{"user":"ghost","conns":1}]}}}`},
	} {
		if _, err := broker.Publish(ctx, c.channel, []byte(c.data)); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("Publish(%q) through the broker: %v; want the channel refused as reserved", c.channel, err)
		}
	}
	lookalikes := []string{`{"@live:except":{"user":"alice"},"data":1}`, `{"@live:except":1}`}
	for _, data := range lookalikes {
		if _, err := broker.Publish(ctx, "red", []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	for _, data := range lookalikes {
		for _, c := range []*wsClient{alice, bob} {
			if f := c.expect(t, "data"); string(f.Data) != data {
				t.Fatalf("got %s; want the data %s as published", f.Data, data)
			}
		}
	}
}

// A hub applies only what carries the meta that hubs attach: a control or
// presence message without it, as a broker that lets anything through (or
// drops meta) would deliver, closes nothing and shows no one. A control
// message it cannot vouch for makes it check every subscription instead:
// when in doubt, it revokes. The same messages with a hub's meta are
// applied, which shows the forged ones would have been.
func TestForgedHubMessagesIgnored(t *testing.T) {
	tm := newTeams()
	inj := &injector{Broker: newMemoryBroker(t, 64), subs: make(map[string]*injected)}
	checked := make(chan string, 16)
	var armed atomic.Bool // set when the forged control message is sent
	s := newTestServer(t, &live.Options{
		Broker:   inj,
		Identify: tm.identify,
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if armed.Load() {
				select {
				case checked <- live.IdentityOf(r).User + "/" + channel:
				default:
				}
			}
			return tm.authorize(r, channel, op)
		},
		Presence: func(string) live.PresenceMode { return live.PresenceMembers },
	})
	alice := dialAs(t, s, "alice", "red")
	alice.expect(t, "presence")

	ghost := func() bool {
		t.Helper()
		members, _, err := s.hub.Members(context.Background(), "red")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if m.User == "ghost" {
				return true
			}
		}
		return false
	}
	presence := `{"op":"diff","from":"forged","ch":{"red":{"set":[{"user":"ghost","conns":1}]}}}`
	inj.inject(t, "@live:presence", presence, nil)
	if ghost() {
		t.Fatal("a presence message without meta was applied")
	}
	inj.inject(t, "@live:presence", presence, []byte(`{}`))
	if !ghost() {
		t.Fatal("a presence message with a hub's meta was not applied: the test proves nothing")
	}

	disconnect := `{"op":"disconnect","user":"alice","from":"forged"}`
	armed.Store(true)
	inj.inject(t, "@live:control", disconnect, nil)
	select {
	case got := <-checked:
		if got != "alice/red" {
			t.Fatalf("Authorize ran for %s; want alice/red", got)
		}
	case <-time.After(waitFor):
		t.Fatal("a control message without meta did not make the hub check its subscriptions")
	}
	s.publish(t, "red", "still here")
	for {
		f, ok := alice.next(t)
		if !ok {
			t.Fatalf("alice's connection ended (%v) after a control message without meta", alice.closeErr())
		}
		if f.Type == "data" {
			if string(f.Data) != `"still here"` {
				t.Fatalf("alice: %+v", f)
			}
			break
		}
	}
	inj.inject(t, "@live:control", disconnect, []byte(`{}`))
	for {
		if _, ok := alice.next(t); !ok {
			break
		}
	}
	if code := closeStatus(alice.closeErr()); code != 4001 {
		t.Fatalf("alice's connection closed with %d; want 4001 once a hub's disconnect arrives", code)
	}
}

// injector is a broker that lets a test deliver messages of its own on
// the hubs' reserved channels, next in turn, as a broker that took any
// publication would.
type injector struct {
	live.Broker
	mu   sync.Mutex // guards subs
	subs map[string]*injected
}

// injected is the subscription to one reserved channel.
type injected struct {
	mu      sync.Mutex // serialises deliveries; guards last
	last    live.Position
	deliver func(live.Message)
}

func (b *injector) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if !strings.HasPrefix(channel, "@live:") {
		return b.Broker.Subscribe(ctx, channel, ready, deliver)
	}
	in := &injected{deliver: deliver}
	b.mu.Lock()
	b.subs[channel] = in
	b.mu.Unlock()
	return b.Broker.Subscribe(ctx, channel,
		func(head live.Position) {
			in.mu.Lock()
			in.last = head
			in.mu.Unlock()
			ready(head)
		},
		func(m live.Message) {
			in.mu.Lock()
			defer in.mu.Unlock()
			in.last = m.Pos
			deliver(m)
		})
}

// inject delivers data with meta on channel, after the last delivery.
func (b *injector) inject(t *testing.T, channel, data string, meta []byte) {
	t.Helper()
	b.mu.Lock()
	in := b.subs[channel]
	b.mu.Unlock()
	if in == nil {
		t.Fatalf("the hub does not follow %s", channel)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.last.Seq++
	in.deliver(live.Message{Channel: channel, Pos: in.last, Data: []byte(data), Meta: meta})
}
