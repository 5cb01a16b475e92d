// Package benchws measures what a Hub's WebSocket fan-out costs per
// delivery, for the benchmarks of the modules that observe a hub
// (prometheus, otel): n real connections over loopback, read by clients
// that count frames without decoding them.
package benchws

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-live/live"
)

// round is how many publications go out before the clients are awaited:
// within their queues, so that none is dropped as slow.
const round = 64

// Fanout publishes b.N times on a channel that n WebSocket clients of hub
// follow, and reports the time per delivery ("ns/delivery"). One op is one
// publication. hub is closed when b ends.
func Fanout(b *testing.B, hub *live.Hub, n int) {
	srv := httptest.NewServer(hub.WebSocketHandler())
	b.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	counters := make([]*Counter, n)
	for i := range counters {
		counters[i] = Dial(b, srv.URL, "bench")
	}
	value := map[string]any{"users": 42, "load": 0.7, "region": "eu-west"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(round, b.N-done)
		for _, c := range counters {
			c.Expect(int64(k))
		}
		for range k {
			if _, err := hub.Publish(ctx, "bench", value); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range counters {
			c.Wait(b)
		}
		done += k
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(n)), "ns/delivery")
}

// A Counter is a WebSocket client that counts the messages it gets
// without decoding them.
type Counter struct {
	got, want atomic.Int64
	reached   chan struct{}
	done      chan struct{}
}

// Dial opens a WebSocket to the hub at url (an http:// URL whose path is
// the hub's WebSocket handler), subscribes it to channel and returns once
// the subscription is acknowledged. The connection is closed when b ends.
func Dial(b testing.TB, url, channel string) *Counter {
	b.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("upgrade: %v %v", resp, err)
	}
	// A masked text frame (the mask is zero: the payload goes as it is).
	sub := fmt.Appendf(nil, `{"type":"subscribe","channel":%q}`, channel)
	nc.Write(append([]byte{0x81, 0x80 | byte(len(sub)), 0, 0, 0, 0}, sub...))
	return Count(b, nc, br)
}

// Count counts the messages read from br, the server's side of nc, from
// now on, and returns once the first (the acknowledgement of a
// subscription the caller sent) has come. nc is closed when b ends.
func Count(b testing.TB, nc net.Conn, br *bufio.Reader) *Counter {
	b.Helper()
	c := &Counter{reached: make(chan struct{}, 1), done: make(chan struct{})}
	c.want.Store(1) // the acknowledgement
	go func() {
		defer close(c.done)
		var h [8]byte
		for {
			if _, err := io.ReadFull(br, h[:2]); err != nil {
				return
			}
			n := int64(h[1] & 0x7f)
			switch n {
			case 126:
				if _, err := io.ReadFull(br, h[:2]); err != nil {
					return
				}
				n = int64(binary.BigEndian.Uint16(h[:2]))
			case 127:
				if _, err := io.ReadFull(br, h[:8]); err != nil {
					return
				}
				n = int64(binary.BigEndian.Uint64(h[:8]))
			}
			if _, err := br.Discard(int(n)); err != nil {
				return
			}
			if c.got.Add(1) == c.want.Load() {
				c.reached <- struct{}{}
			}
		}
	}()
	b.Cleanup(func() {
		nc.Close()
		<-c.done
	})
	c.Wait(b)
	return c
}

// Expect adds k to the messages c waits for.
func (c *Counter) Expect(k int64) { c.want.Add(k) }

// Wait returns once c has all the messages it expects, and fails b if its
// connection ends first.
func (c *Counter) Wait(b testing.TB) {
	select {
	case <-c.reached:
	case <-c.done:
		b.Fatalf("a connection ended after %d messages", c.got.Load())
	}
}
