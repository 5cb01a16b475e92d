package live

import (
	"context"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkEncode builds the frame of one publication, shared by every
// subscriber: once per publication, not per delivery.
func BenchmarkEncode(b *testing.B) {
	m := Message{Channel: "metrics:dashboard", Pos: Position{Seq: 123456, Epoch: "k2v7q4x9a1b3"},
		Data: []byte(`{"activeUsers":1234,"revenue":98765.4,"orders":321,"region":"eu-west"}`)}
	q := quote(m.Channel)
	b.ReportAllocs()
	for b.Loop() {
		newDataFrame(q, nil, m)
	}
}

// BenchmarkEncodeText builds the frame of a text publication (an HTML
// fragment of BenchmarkEncode's size), as BenchmarkEncode does.
func BenchmarkEncodeText(b *testing.B) {
	m := Message{Channel: "metrics:dashboard", Pos: Position{Seq: 123456, Epoch: "k2v7q4x9a1b3"},
		Data: []byte(`"<tr id=\"order-321\"><td>eu-west</td><td>98765.40</td><td>1234</td></tr>"`)}
	q := quote(m.Channel)
	b.ReportAllocs()
	for b.Loop() {
		newTextFrame(q, nil, m, "row")
	}
}

// BenchmarkAppendFrame is a writer's per-delivery work: appending a
// shared frame to a connection's output buffer, as each transport
// encodes it.
func BenchmarkAppendFrame(b *testing.B) {
	m := Message{Channel: "metrics:dashboard", Pos: Position{Seq: 123456, Epoch: "k2v7q4x9a1b3"},
		Data: []byte(`{"activeUsers":1234,"revenue":98765.4,"orders":321,"region":"eu-west"}`)}
	text := Message{Channel: m.Channel, Pos: m.Pos,
		Data: []byte(`"<tr id=\"order-321\"><td>eu-west</td><td>98765.40</td><td>1234</td></tr>"`)}
	for _, tc := range []struct {
		name string
		wire wire
		f    *frame
	}{
		{"sse", wireSSE, newDataFrame(quote(m.Channel), nil, m)},
		{"sse-text", wireSSE, newTextFrame(quote(m.Channel), nil, text, "row")},
		{"sse-multiplexed", wireSSEMux, newDataFrame(quote(m.Channel), nil, m)},
		{"websocket", wireWS, newDataFrame(quote(m.Channel), nil, m)},
		{"websocket-text", wireWS, newTextFrame(quote(m.Channel), nil, text, "row")},
	} {
		f := tc.f
		b.Run(tc.name, func(b *testing.B) {
			c := &conn{queue: queue{wire: tc.wire}}
			buf := make([]byte, 0, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				buf = c.appendFrame(buf[:0], f)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkFollowChannels measures what a followed channel costs a node
// with the memory broker: the hub's side and the broker's, heap and
// goroutines, for 10,000 channels followed at once (one op).
func BenchmarkFollowChannels(b *testing.B) {
	const n = 10000
	for b.Loop() {
		h := NewHub(nil)
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap, goroutines := ms.HeapAlloc, runtime.NumGoroutine()
		hcs := make([]*hubChannel, n)
		for i := range hcs {
			hc, err := h.acquire(context.Background(), "user:"+strconv.Itoa(i))
			if err != nil {
				b.Fatal(err)
			}
			hcs[i] = hc
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc-heap)/n, "B/channel")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/n, "goroutines/channel")
		for _, hc := range hcs {
			h.release(hc)
		}
		h.Close(context.Background())
	}
}
