package liveprom_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/benchws"
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
				benchws.Fanout(b, live.NewHub(opts), n)
			})
		}
	}
}
