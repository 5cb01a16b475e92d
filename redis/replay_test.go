package redisbroker_test

import (
	"testing"

	"github.com/go-live/live/internal/servertest"
)

// TestResumeHeapWithinBound resumes ten clients from the first cursor of
// a 40 MB history, and they never read: the hub reads the history a page
// at a time as they drain, and holds for each what it holds for a
// connection (its queue, the batch being written and a page, of 1 MiB
// each by default, in two encodings), not the history ten times over.
func TestResumeHeapWithinBound(t *testing.T) {
	b, _, _ := newBroker(t, redisURL(t), nil)
	n := servertest.NewNode(t, b, nil)
	const clients, perConn = 10, 6 << 20
	before, peak := servertest.ResumeHeap(t, n, servertest.ChannelName(t), 200, 200<<10, clients)
	grew := int64(peak) - int64(before)
	t.Logf("heap %.1f MiB before, %.1f MiB at the peak (%+.1f MiB) with %d clients",
		float64(before)/(1<<20), float64(peak)/(1<<20), float64(grew)/(1<<20), clients)
	if limit := int64(2 * clients * perConn); grew > limit {
		t.Errorf("the heap grew by %.1f MiB; want at most %.1f MiB", float64(grew)/(1<<20), float64(limit)/(1<<20))
	}
}
