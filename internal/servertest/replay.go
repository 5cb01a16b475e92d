package servertest

import (
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
)

// ResumeHeap measures what resuming clients that stop reading cost a
// node. It publishes pubs values of about size bytes each on channel,
// then opens clients SSE streams over TCP that resume from the first
// publication's cursor and never read a byte. It returns the heap in use
// after a garbage collection before the clients came, and the most it
// held, after a garbage collection, from when every client was
// subscribed until the node stopped replaying (its Stats.Replayed stayed
// the same over 30 collections in a row). The clients are closed when it
// returns.
func ResumeHeap(t testing.TB, n *Node, channel string, pubs, size, clients int) (before, peak uint64) {
	t.Helper()
	value := `"` + strings.Repeat("x", size-2) + `"`
	var cursor string
	for i := range pubs {
		pos := n.Publish(t, channel, value)
		if i == 0 {
			cursor = pos.String()
		}
	}
	u, err := url.Parse(n.SSE)
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before = heap()
	subs := n.Hub.Stats().Subscriptions
	req := fmt.Sprintf("GET %s%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nLast-Event-ID: %s\r\n\r\n",
		u.Path, channel, u.Host, cursor)
	for range clients {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	const settled = 30
	last, same := int64(-1), 0
	for i := 0; same < settled; i++ {
		if i == 100_000 {
			t.Fatalf("the node never stopped replaying: %d publications replayed", last)
		}
		h := heap()
		st := n.Hub.Stats()
		if st.Subscriptions < subs+int64(clients) {
			continue
		}
		peak = max(peak, h)
		if st.Replayed == last {
			same++
		} else {
			last, same = st.Replayed, 0
		}
	}
	return before, peak
}
