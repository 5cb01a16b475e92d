package brokertest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// testControl checks that the server's hand reaches across nodes through
// the broker: Hub.Reauthorize and Hub.Disconnect called on node A end what
// they name on node B, over WebSocket and SSE, and leave everyone else
// alone. The test logs how long B took.
func (s *suite) testControl(t *testing.T) {
	var (
		mu      sync.Mutex // guards allowed
		allowed = map[string]bool{"alice/ctl-red": true, "alice/ctl-blue": true, "bob/ctl-red": true}
	)
	opts := &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: r.Header.Get("X-User")}, nil
		},
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			mu.Lock()
			defer mu.Unlock()
			if op != live.OpSubscribe || !allowed[live.IdentityOf(r).User+"/"+channel] {
				return live.ErrForbidden
			}
			return nil
		},
	}
	b1, b2 := s.broker(t), s.broker(t)
	a, b := servertest.NewNode(t, b1, opts), servertest.NewNode(t, b2, opts)
	alice := dialAs(t, b, "alice", "ctl-red", "ctl-blue")
	bob := dialAs(t, b, "bob", "ctl-red")
	aliceSSE := servertest.OpenStreamWith(t, b.SSE+"ctl-red", http.Header{"X-User": {"alice"}})

	mu.Lock()
	delete(allowed, "alice/ctl-red")
	mu.Unlock()
	start := time.Now()
	ctx, cancel := timeout(t)
	defer cancel()
	if err := a.Hub.Reauthorize(ctx, "ctl-red", ""); err != nil {
		t.Fatal(err)
	}
	if f := alice.next(t); f.Type != "error" || f.Channel != "ctl-red" {
		t.Fatalf("alice on B: %+v; want an error frame ending ctl-red", f)
	}
	t.Logf("Reauthorize on A ended the subscription on B after %v", time.Since(start))
	if ev := aliceSSE.Next(t); ev.Event != "refused" {
		t.Fatalf("alice's SSE stream on B: %+v; want a refused event", ev)
	}
	a.Publish(t, "ctl-red", `"r"`)
	a.Publish(t, "ctl-blue", `"b"`)
	if f := alice.next(t); f.Type != "data" || f.Channel != "ctl-blue" {
		t.Fatalf("alice on B: %+v; want ctl-blue only", f)
	}
	if f := bob.next(t); f.Type != "data" || f.Channel != "ctl-red" {
		t.Fatalf("bob on B: %+v", f)
	}

	start = time.Now()
	if err := a.Hub.Disconnect(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if code := alice.closed(t); code != 4001 {
		t.Fatalf("alice's WebSocket on B closed with %d; want 4001", code)
	}
	t.Logf("Disconnect on A closed the connection on B after %v", time.Since(start))
	a.Publish(t, "ctl-red", `"r2"`)
	if f := bob.next(t); f.Type != "data" || string(f.Data) != `"r2"` {
		t.Fatalf("bob on B: %+v", f)
	}
}

// frameConn reads a node's frames over WebSocket on a goroutine of its
// own.
type frameConn struct {
	frames chan wsFrame
	done   chan struct{}
	err    error // why reading ended; read after done
}

func dialAs(t *testing.T, n *servertest.Node, user string, channels ...string) *frameConn {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	conn := dialUser(t, n, user)
	c := &frameConn{frames: make(chan wsFrame, 64), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.err = err
				return
			}
			var f wsFrame
			json.Unmarshal(b, &f)
			if f.Type == "status" {
				continue // the hub's word that updates are delayed: not what the clauses read
			}
			c.frames <- f
		}
	}()
	t.Cleanup(func() {
		conn.CloseNow()
		<-c.done
	})
	for _, ch := range channels {
		msg, _ := json.Marshal(map[string]string{"type": "subscribe", "channel": ch})
		if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatal(err)
		}
		if f := c.next(t); f.Type != "subscribed" || f.Channel != ch {
			t.Fatalf("subscribing %s to %s: %+v", user, ch, f)
		}
	}
	return c
}

func (c *frameConn) next(t *testing.T) wsFrame {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	select {
	case f := <-c.frames:
		return f
	case <-c.done:
		t.Fatalf("the connection ended: %v", c.err)
	case <-ctx.Done():
		t.Fatal("no frame")
	}
	panic("unreachable")
}

// closed waits for the connection to end and returns its close status.
func (c *frameConn) closed(t *testing.T) websocket.StatusCode {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	for {
		select {
		case f := <-c.frames:
			if !strings.Contains("error data", f.Type) {
				t.Fatalf("frame %+v while waiting for the close", f)
			}
		case <-c.done:
			return websocket.CloseStatus(c.err)
		case <-ctx.Done():
			t.Fatal("the connection did not close")
		}
	}
}

// dialUser opens a WebSocket to n as user (the X-User header the
// clauses' Identify reads).
func dialUser(t *testing.T, n *servertest.Node, user string) *websocket.Conn {
	t.Helper()
	ctx, cancel := timeout(t)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, n.WS, &websocket.DialOptions{HTTPHeader: http.Header{"X-User": {user}}})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
