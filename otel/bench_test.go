package liveotel_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/benchws"
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
				benchws.Fanout(b, live.NewHub(opts), n)
			})
		}
	}
}
