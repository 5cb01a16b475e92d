package live

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live/internal/sse"
)

// gatedSSE is a one-channel SSE stream's output, held back until released,
// which records the events written to it.
type gatedSSE struct {
	gate   chan struct{}
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	events []sse.Event
	rest   []byte
	got    chan struct{}
}

func (g *gatedSSE) Write(p []byte) (int, error) {
	select {
	case <-g.gate:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	g.mu.Lock()
	g.rest = bytes.Clone(sse.Split(append(g.rest, p...), func(ev sse.Event) {
		if ev.Comment == "" {
			g.events = append(g.events, ev)
		}
	}))
	g.mu.Unlock()
	select {
	case g.got <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (*gatedSSE) SetWriteDeadline(time.Time) error { return nil }

func (g *gatedSSE) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

// TestResetTextSlow checks that the resets of a slow one-channel stream
// (SlowReset) are each followed by the channel's ResetText, as those of
// a cursor that cannot be honoured are.
func TestResetTextSlow(t *testing.T) {
	h := NewHub(&Options{
		QueueMessages: 8,
		SlowPolicy:    SlowReset,
		ResetText:     func(string) Text { return Text{Event: "stale", Data: "<p>stale</p>"} },
	})
	defer h.Close(context.Background())
	g := &gatedSSE{gate: make(chan struct{}), closed: make(chan struct{}), got: make(chan struct{}, 1)}
	c := newConn(h, nil, false)
	if err := h.enter(c, h.controlGen()); err != nil {
		t.Fatal(err)
	}
	if err := h.subscribe(context.Background(), c, "c", resumeFrom{}, nil, h.controlGen()); err != nil {
		t.Fatal(err)
	}
	c.takeOver(g, wireSSE, nil)
	defer func() {
		c.kill(ErrClosed)
		h.leave(c)
	}()

	var head Position
	for i := 0; i < 200; i++ {
		pos, err := h.Publish(context.Background(), "c", strings.Repeat("x", 100))
		if err != nil {
			t.Fatal(err)
		}
		head = pos
	}
	close(g.gate)
	deadline := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		evs := append([]sse.Event(nil), g.events...)
		g.mu.Unlock()
		// The stream has caught up once an event carries head's cursor: the
		// last publication, or a reset to it (then followed by the text).
		at := -1
		for i := len(evs) - 1; i >= 0 && at < 0; i-- {
			if evs[i].HasID && evs[i].ID == head.String() {
				at = i
			}
		}
		if n := len(evs); at >= 0 && (evs[at].Event != "reset" || at+1 < n) {
			resets := 0
			for i, ev := range evs {
				if ev.Event != "reset" {
					continue
				}
				resets++
				if i+1 == n || evs[i+1].Event != "stale" || evs[i+1].Data != "<p>stale</p>" || evs[i+1].HasID {
					t.Fatalf("reset %+v is not followed by the ResetText: %+v", ev, evs[i+1:])
				}
			}
			if resets == 0 {
				t.Fatal("no reset")
			}
			return
		}
		select {
		case <-g.got:
		case <-deadline:
			t.Fatalf("the stream did not reach %v: %d events", head, len(evs))
		}
	}
}
