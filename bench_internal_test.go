package live

import (
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
