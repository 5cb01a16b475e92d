package batch

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestQueue sends items from many goroutines: each is sent once, batches
// respect Max, at most Calls are on their way at once, Close waits for
// them all and later items are refused.
func TestQueue(t *testing.T) {
	var inFlight, most, sent atomic.Int64
	seen := make([]atomic.Int32, 10000)
	q := &Queue[int]{Calls: 2, Max: 7}
	q.Send = func(b []int) {
		if len(b) == 0 || len(b) > 7 {
			t.Errorf("a batch of %d", len(b))
		}
		n := inFlight.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		for _, i := range b {
			seen[i].Add(1)
		}
		sent.Add(int64(len(b)))
		inFlight.Add(-1)
	}
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for i := g; i < len(seen); i += 50 {
				if !q.Add(i) {
					t.Error("Add refused before Close")
				}
			}
		})
	}
	wg.Wait()
	q.Close()
	if sent.Load() != int64(len(seen)) {
		t.Fatalf("sent %d of %d", sent.Load(), len(seen))
	}
	for i := range seen {
		if n := seen[i].Load(); n != 1 {
			t.Fatalf("item %d sent %d times", i, n)
		}
	}
	if most.Load() > 2 {
		t.Errorf("%d batches on their way at once, want at most 2", most.Load())
	}
	if q.Add(1) {
		t.Error("Add after Close took an item")
	}
}
