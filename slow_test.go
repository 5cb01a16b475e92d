package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// bigValue is a publication large enough to fill socket buffers quickly.
type bigValue struct {
	N   int    `json:"n"`
	Pad string `json:"pad"`
}

var pad = strings.Repeat("x", 32<<10)

// dialStalled opens a WebSocket, subscribes to channel and then never
// reads again, like a client whose tab froze.
func dialStalled(t *testing.T, s *testServer, channel string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, s.wsURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(-1)
	b, _ := json.Marshal(map[string]string{"type": "subscribe", "channel": channel})
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	if _, b, err = c.Read(ctx); err != nil || !strings.Contains(string(b), `"subscribed"`) {
		t.Fatalf("subscribe: %s %v", b, err)
	}
	return c
}

func TestSlowClientDisconnected(t *testing.T) {
	s := newTestServer(t, &live.Options{QueueMessages: 8})
	healthy := openSSE(t, s.srv.URL+"/live/c", nil)
	stalled := dialStalled(t, s, "c")

	// The healthy client reads each publication before the next is made,
	// so only the stalled one can fall behind.
	const max = 2000
	n := 0
	for n < max && s.hub.Stats().SlowClients == 0 {
		n++
		s.publish(t, "c", bigValue{N: n, Pad: pad})
		var v bigValue
		if err := json.Unmarshal([]byte(healthy.nextData(t).Data), &v); err != nil || v.N != n {
			t.Fatalf("healthy client got %d (%v), want %d", v.N, err, n)
		}
	}
	if n == max {
		t.Fatalf("no overflow after %d publications of %d bytes", max, len(pad))
	}
	if st := s.hub.Stats(); st.SlowClients != 1 {
		t.Errorf("SlowClients = %d, want 1", st.SlowClients)
	}

	// The hub ends the stalled connection; the healthy one is left.
	waitStats(t, s.hub, "the stalled connection ended", func(st live.Stats) bool { return st.Connections == 1 })

	// The stalled client, reading again, gets what its socket held and
	// then the end: the close frame of SlowDisconnect, status 1013 (try
	// again later), if the socket had room for it. The hub does not wait
	// for a client that reads nothing to make room, so when the socket
	// was full the stream ends inside a frame, without one.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for {
		_, _, err := stalled.Read(ctx)
		if err == nil {
			continue
		}
		switch code := websocket.CloseStatus(err); {
		case code == websocket.StatusTryAgainLater:
			t.Log("closed with 1013")
		case code == -1 && errors.Is(err, io.ErrUnexpectedEOF):
			t.Log("ended inside a frame: the socket was full")
		default:
			t.Fatalf("the stalled client's connection ended with status %d (%v); want 1013, or the end of a full socket", code, err)
		}
		break
	}
	t.Logf("overflow after %d publications", n)
}

// TestSlowClientReset checks the SlowReset policy's promise: every gap in
// what a slow client receives is announced by a reset whose cursor is the
// position just before the next publication it gets. The client is held
// back in process, so it overflows whatever the socket buffers would take.
func TestSlowClientReset(t *testing.T) {
	s := newTestServer(t, &live.Options{QueueMessages: 8, SlowPolicy: live.SlowReset})
	rec := s.hub.AttachRecorder(t, "c")

	const total = 600
	var head live.Position
	for i := 1; i <= total; i++ {
		head = s.publish(t, "c", bigValue{N: i})
	}
	if s.hub.Stats().SlowClients == 0 {
		t.Fatal("the held-back client never overflowed")
	}
	rec.Release()
	var last uint64
	resets, seen := 0, 0
	for last < head.Seq {
		frames := rec.Frames(t, seen+1)
		for _, b := range frames[seen:] {
			var f wsFrame
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatal(err)
			}
			if f.Type == "subscribed" {
				continue
			}
			pos, err := live.ParsePosition(f.Cursor)
			if err != nil {
				t.Fatalf("frame %s: %v", f.Type, err)
			}
			switch f.Type {
			case "reset":
				if f.Reason != "slow" || pos.Seq <= last {
					t.Fatalf("reset %+v after %d", f, last)
				}
				resets++
			case "data":
				if pos.Seq != last+1 {
					t.Fatalf("data at %d after %d with no reset between", pos.Seq, last)
				}
			default:
				t.Fatalf("unexpected frame %+v", f)
			}
			last = pos.Seq
		}
		seen = len(frames)
	}
	if resets == 0 {
		t.Error("no reset frame")
	}
	t.Logf("%d resets", resets)
}

func TestSSEHeartbeat(t *testing.T) {
	s := newTestServer(t, &live.Options{Heartbeat: 5e6})
	stream := openSSE(t, s.srv.URL+"/live/c", nil)
	for ev := range stream.events {
		if ev.Comment == "heartbeat" {
			return
		}
	}
	t.Fatal("stream ended without a heartbeat")
}

// TestHalfOpenWebSocket opens a WebSocket with a raw TCP client that never
// answers pings. The hub must notice and drop it.
func TestHalfOpenWebSocket(t *testing.T) {
	s := newTestServer(t, &live.Options{Heartbeat: 5e6, WriteTimeout: 1e8})
	_, _, br := dialRawWS(t, s, "", 0)
	// Read (and ignore) pings until the server hangs up.
	n, err := io.Copy(io.Discard, br)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if n == 0 {
		t.Error("no ping before the hang-up")
	}
}

// TestSlowClientMemoryBound publishes 10 000 messages to a client that
// reads nothing: what the hub holds for it never exceeds its queue bound,
// whichever policy applies.
func TestSlowClientMemoryBound(t *testing.T) {
	for name, policy := range map[string]live.SlowPolicy{"disconnect": live.SlowDisconnect, "reset": live.SlowReset} {
		t.Run(name, func(t *testing.T) {
			const bound = 256 << 10
			s := newTestServer(t, &live.Options{QueueBytes: bound, SlowPolicy: policy})
			s.hub.AttachRecorder(t, "c") // never released: reads nothing
			payload := strings.Repeat("x", 1000)
			peak := 0
			for i := range 10000 {
				s.publish(t, "c", payload)
				if i%50 == 0 {
					peak = max(peak, s.hub.QueuedBytes())
				}
			}
			if frame := 1100; peak > bound+frame { // one frame beyond the bound at most
				t.Errorf("peak queued %d bytes, bound %d and one frame of %d", peak, bound, frame)
			}
			if s.hub.Stats().SlowClients == 0 {
				t.Error("the slow-client policy never applied")
			}
			t.Logf("peak queued %d KiB of %d KiB", peak>>10, bound>>10)
		})
	}
}
