package live_test

import (
	"testing"
	"time"

	"github.com/go-live/live"
)

// TestClientsToldOfDelays breaks the hub's link to its broker: its clients
// are told that updates are delayed (a "status" frame, a "status" event on
// a one-channel stream), then that they flow again, and receive what
// follows.
func TestClientsToldOfDelays(t *testing.T) {
	b := newFaultBroker(t, 100)
	s := newTestServer(t, &live.Options{Broker: b})
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "c")
	stream := openSSE(t, s.srv.URL+"/live/c", nil)

	end := b.outage()
	if f := nextStatus(t, ws.statuses); f.Status != "delayed" {
		t.Errorf("WebSocket status frame %+v, want delayed", f)
	}
	if ev := nextStatus(t, stream.statuses); ev.Event != "status" || ev.Data != `{"status":"delayed"}` {
		t.Errorf("SSE event %+v, want a status event saying delayed", ev)
	}
	end()
	if f := nextStatus(t, ws.statuses); f.Status != "live" {
		t.Errorf("WebSocket status frame %+v, want live", f)
	}
	if ev := nextStatus(t, stream.statuses); ev.Event != "status" || ev.Data != `{"status":"live"}` {
		t.Errorf("SSE event %+v, want a status event saying live", ev)
	}
	s.publish(t, "c", 1)
	if f := ws.expect(t, "data"); string(f.Data) != "1" {
		t.Errorf("data after the outage: %+v", f)
	}
	if ev := stream.nextData(t); ev.Data != "1" {
		t.Errorf("SSE data after the outage: %+v", ev)
	}
}

// nextStatus returns the next status notice from c, failing t if none
// comes in time.
func nextStatus[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitFor):
		t.Fatal("no status notice")
		panic("unreachable")
	}
}
