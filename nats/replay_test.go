package natsbroker_test

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/google/go-cmp/cmp"
)

// TestSincePageLong reads a long history in pages from every kind of
// start, far from the head (found by searching the stream) and near it
// (walked back from the head), with publications stored one per message
// and several per message, and gets what Since gets.
func TestSincePageLong(t *testing.T) {
	url := natsURL(t)
	b, _, _ := newBroker(t, url, &natsbroker.Options{HistorySize: 400})
	channel := channelName(t)
	for i := range 100 {
		servertest.Publish(t, b, channel, strconv.Itoa(i))
	}
	var wg sync.WaitGroup // publishers at once share messages
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if _, err := b.Publish(t.Context(), channel, []byte(strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	head := servertest.Publish(t, b, channel, `"last"`)
	all, err := b.Since(t.Context(), channel, live.Position{Epoch: head.Epoch})
	if err != nil || len(all) != 301 {
		t.Fatalf("Since = %d messages, %v", len(all), err)
	}
	for _, tt := range []struct{ maxMessages, maxBytes int }{{1, 1 << 20}, {7, 1 << 20}, {1000, 20}, {1000, 1 << 20}} {
		for _, from := range []uint64{0, 1, 99, 100, 101, 150, 236, 237, 238, 300} {
			var got []live.Message
			for after := (live.Position{Epoch: head.Epoch, Seq: from}); ; {
				page, err := b.SincePage(t.Context(), channel, after, tt.maxMessages, tt.maxBytes)
				if err != nil {
					t.Fatalf("SincePage(%v, %d, %d): %v", after, tt.maxMessages, tt.maxBytes, err)
				}
				if len(page) == 0 {
					break
				}
				if len(page) > tt.maxMessages {
					t.Fatalf("SincePage(%v, %d, %d) = %d messages", after, tt.maxMessages, tt.maxBytes, len(page))
				}
				got = append(got, page...)
				after = page[len(page)-1].Pos
			}
			if diff := cmp.Diff(all[from:], got); diff != "" {
				t.Fatalf("pages from %d by (%d, %d) (-want +got):\n%s", from, tt.maxMessages, tt.maxBytes, diff)
			}
		}
	}
	if _, err := b.SincePage(t.Context(), channel, live.Position{Epoch: head.Epoch, Seq: head.Seq + 1}, 4, 100); !errors.Is(err, live.ErrGone) {
		t.Errorf("SincePage beyond the head: %v; want ErrGone", err)
	}
}

// TestResumeHeapWithinBound resumes ten clients from the first cursor of
// a 40 MB history, and they never read: the hub reads the history a page
// at a time as they drain, and holds for each what it holds for a
// connection (its queue, the batch being written and a page, of 1 MiB
// each by default, in two encodings), not the history ten times over.
func TestResumeHeapWithinBound(t *testing.T) {
	b, _, _ := newBroker(t, natsURL(t), nil)
	n := servertest.NewNode(t, b, nil)
	const clients, perConn = 10, 6 << 20
	before, peak := servertest.ResumeHeap(t, n, channelName(t), 200, 200<<10, clients)
	grew := int64(peak) - int64(before)
	t.Logf("heap %.1f MiB before, %.1f MiB at the peak (%+.1f MiB) with %d clients",
		float64(before)/(1<<20), float64(peak)/(1<<20), float64(grew)/(1<<20), clients)
	if limit := int64(2 * clients * perConn); grew > limit {
		t.Errorf("the heap grew by %.1f MiB; want at most %.1f MiB", float64(grew)/(1<<20), float64(limit)/(1<<20))
	}
}
