package live

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkPresenceMembers joins 10,000 users to one presence channel of a
// hub, one connection each, and reports the time of a join and the memory
// a member costs the hub's presence (B/member: the heap after the joins
// less the heap before, connections made beforehand). Members mode and
// counts-only mode.
func BenchmarkPresenceMembers(b *testing.B) {
	for _, mode := range []PresenceMode{PresenceMembers, PresenceCount} {
		name := map[PresenceMode]string{PresenceMembers: "members", PresenceCount: "count"}[mode]
		b.Run(name, func(b *testing.B) {
			const n = 10000
			for b.Loop() {
				b.StopTimer()
				h := NewHub(&Options{Presence: func(string) PresenceMode { return mode }})
				conns := make([]*conn, n)
				for i := range conns {
					c := &conn{hub: h, ws: true, queue: queue{wake: make(chan struct{}, 1)}}
					c.id = &Identity{User: fmt.Sprintf("user-%05d", i), Info: json.RawMessage(`{"name":"User ` + fmt.Sprint(i) + `","avatar":"/a/` + fmt.Sprint(i) + `.png"}`)}
					conns[i] = c
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				b.StartTimer()
				for _, c := range conns {
					h.presence.join(c, "room")
				}
				b.StopTimer()
				h.presence.flush(h.presence.last.Add(presenceInterval))
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/member")
				if _, got, _ := h.Members(context.Background(), "room"); got != n {
					b.Fatalf("%d members; want %d", got, n)
				}
				runtime.KeepAlive(conns)
				h.Close(context.Background())
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/join")
			b.ReportMetric(0, "ns/op")
		})
	}
}
