package live_test

import (
	"context"
	"flag"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var soakCycles = flag.Int("live.soak", 2000, "connect/subscribe/disconnect cycles in TestSoak")

// TestSoak connects, subscribes and disconnects many times, alternating
// SSE and WebSocket, and checks that goroutines and heap return to where
// they started.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak takes seconds")
	}
	s := newTestServer(t, nil)
	cycle := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if i%2 == 0 {
			req, _ := http.NewRequestWithContext(ctx, "GET", s.srv.URL+"/live/soak", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return
		}
		c, _, err := websocket.Dial(ctx, s.wsURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"soak"}`))
		c.Read(ctx)
		if i%4 == 1 {
			c.CloseNow()
		} else {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}
	for i := range 100 { // warm up pools and buffers
		cycle(i)
	}
	http.DefaultClient.CloseIdleConnections()
	baseG, baseHeap := settle(t, s, -1)

	for i := range *soakCycles {
		cycle(i)
		if i%500 == 499 {
			s.publish(t, "soak", i) // keep the channel's history moving too
		}
	}
	http.DefaultClient.CloseIdleConnections()
	g, heap := settle(t, s, baseG)
	t.Logf("%d cycles: goroutines %d → %d, heap in use %d KiB → %d KiB", *soakCycles, baseG, g, baseHeap>>10, heap>>10)
	if g > baseG {
		t.Errorf("goroutines grew from %d to %d", baseG, g)
	}
	if heap > baseHeap+4<<20 {
		t.Errorf("heap in use grew from %d to %d bytes", baseHeap, heap)
	}
	if st := s.hub.Stats(); st.Connections != 0 || st.Subscriptions != 0 {
		t.Errorf("after the cycles: %+v", st)
	}
}

// settle waits, boundedly, for connection teardown to finish (down to
// want goroutines when want >= 0) and returns the goroutine count and the
// heap in use after a collection.
func settle(t *testing.T, s *testServer, want int) (int, uint64) {
	deadline := time.Now().Add(waitFor)
	for {
		g := runtime.NumGoroutine()
		if (want < 0 || g <= want) && s.hub.Stats().Connections == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // teardown, not delivery: nothing to wait on
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapInuse
}
