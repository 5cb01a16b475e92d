package liveotel_test

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
	liveotel "github.com/go-live/live/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// discard is a span exporter that drops what it is given, as a
// collector far away costs the process nothing but the export itself.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkHooks is the cost of the hooks of a publication, as the hub
// calls them: Inject and its done once per publication on the hub that
// publishes, FanOut and its done once per publication on every hub it
// reaches.
func BenchmarkHooks(b *testing.B) {
	for _, mode := range []string{"sampled", "unsampled"} {
		sampler := sdktrace.AlwaysSample()
		if mode == "unsampled" {
			sampler = sdktrace.NeverSample()
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(discard{}))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		h := liveotel.New(&liveotel.Options{
			TracerProvider:  tp,
			MeterProvider:   sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
			ChannelTemplate: func(string) string { return "doc:{id}" },
		}).Hooks()
		ctx := context.Background()
		b.Run("Inject/"+mode, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				_, done := h.Inject(ctx, "doc:1")
				if done != nil {
					done(nil)
				}
			}
		})
		tr, done := h.Inject(ctx, "doc:1")
		if done != nil {
			done(nil)
		}
		b.Run("FanOut/"+mode, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				h.FanOut("doc:1", tr)()
			}
		})
	}
}

// BenchmarkDelivery publishes to n real WebSocket connections over
// loopback, read by clients that only count frames, on a hub without
// hooks ("off"), with the Telemetry's metrics but no tracer ("metrics"),
// and with traces not sampled and sampled (exported in batches to
// nowhere). One op is one publication; ns/delivery is per subscriber.
func BenchmarkDelivery(b *testing.B) {
	for _, n := range []int{1, 100} {
		for _, mode := range []string{"off", "metrics", "unsampled", "sampled"} {
			b.Run(fmt.Sprintf("subscribers=%d/tracing=%s", n, mode), func(b *testing.B) {
				opts := &live.Options{Heartbeat: time.Hour, MaxConnsPerIP: -1}
				if mode != "off" {
					var tp trace.TracerProvider = tracenoop.NewTracerProvider()
					if mode != "metrics" {
						sampler := sdktrace.AlwaysSample()
						if mode == "unsampled" {
							sampler = sdktrace.NeverSample()
						}
						stp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(discard{}))
						b.Cleanup(func() { stp.Shutdown(context.Background()) })
						tp = stp
					}
					tel := liveotel.New(&liveotel.Options{
						TracerProvider: tp,
						MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
					})
					opts.Observe = tel.Hooks()
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
