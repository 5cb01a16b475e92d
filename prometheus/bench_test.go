package liveprom_test

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
	"time"

	"github.com/go-live/live"
	liveprom "github.com/go-live/live/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkHooks is the cost of each hook of the Collector, as the hub
// calls it: once per publication (Published), per socket write (Wrote),
// per writer's turn (Waited).
func BenchmarkHooks(b *testing.B) {
	h := liveprom.New(nil).Hooks()
	tmpl := liveprom.New(&liveprom.Options{ChannelTemplate: func(string) string { return "doc:{id}" }}).Hooks()
	b.Run("Published", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.Published("doc:1", time.Millisecond, nil)
		}
	})
	b.Run("Published/template", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			tmpl.Published("doc:1", time.Millisecond, nil)
		}
	})
	b.Run("Wrote", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.Wrote("ws", 3, time.Millisecond)
		}
	})
	b.Run("Waited", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.Waited(time.Microsecond)
		}
	})
}

// BenchmarkWebSocketWrite publishes to n real WebSocket connections over
// loopback, read by clients that only count frames, on a hub without
// metrics hooks and on one whose Collector is registered: the overhead of
// the metrics per delivery. One op is one publication.
func BenchmarkWebSocketWrite(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, metrics := range []bool{false, true} {
			b.Run(fmt.Sprintf("subscribers=%d/metrics=%v", n, metrics), func(b *testing.B) {
				opts := &live.Options{Heartbeat: time.Hour, MaxConnsPerIP: -1}
				if metrics {
					m := liveprom.New(nil)
					prometheus.NewRegistry().MustRegister(m)
					opts.Observe = m.Hooks()
				}
				hub := live.NewHub(opts)
				srv := httptest.NewServer(hub.WebSocketHandler())
				b.Cleanup(func() {
					hub.Close(context.Background())
					srv.Close()
				})
				counters := make([]*counter, n)
				for i := range counters {
					counters[i] = dialCounter(b, srv.URL)
				}
				value := map[string]any{"users": 42, "load": 0.7, "region": "eu-west"}
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				const round = 64 // within the subscribers' queues
				for done := 0; done < b.N; {
					k := min(round, b.N-done)
					for _, c := range counters {
						c.want.Add(int64(k))
					}
					for range k {
						if _, err := hub.Publish(ctx, "bench", value); err != nil {
							b.Fatal(err)
						}
					}
					for _, c := range counters {
						select {
						case <-c.reached:
						case <-c.done:
							b.Fatalf("a connection ended after %d frames", c.got.Load())
						}
					}
					done += k
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(n)), "ns/delivery")
			})
		}
	}
}

// counter is a WebSocket client that counts the messages it gets without
// decoding them, and signals reached when it has as many as want.
type counter struct {
	got, want atomic.Int64
	reached   chan struct{}
	done      chan struct{}
}

// dialCounter opens a WebSocket to the hub at url, subscribes it to
// "bench" and returns once the subscription is acknowledged.
func dialCounter(b *testing.B, url string) *counter {
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
	sub := []byte(`{"type":"subscribe","channel":"bench"}`)
	nc.Write(append([]byte{0x81, 0x80 | byte(len(sub)), 0, 0, 0, 0}, sub...))
	c := &counter{reached: make(chan struct{}, 1), done: make(chan struct{})}
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
	select {
	case <-c.reached:
	case <-c.done:
		b.Fatal("the connection ended before its subscription was acknowledged")
	}
	return c
}
