package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// refusing is an in-memory broker shared with other nodes that, while
// down, refuses this node's publications on the activity channel, as a
// broker this node cannot reach would; what the others publish still
// reaches it.
type refusing struct {
	*live.MemoryBroker
	down atomic.Bool
}

func (b *refusing) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	if channel == activityChannel && b.down.Load() {
		return live.Position{}, errors.New("broker unreachable")
	}
	return b.MemoryBroker.Publish(ctx, channel, data)
}

// TestFeedAfterOutage: an entry node A answered while its broker was
// away is published once the broker is back, after an entry node B added
// meanwhile. The stream brings B's first, and both nodes' feeds, like the
// pages', list entries in the stream's order, each once: A's first.
func TestFeedAfterOutage(t *testing.T) {
	mem := live.NewMemoryBroker(nil)
	t.Cleanup(func() { mem.Close() })
	broker := &refusing{MemoryBroker: mem}
	a := newNode(t, appOptions{Broker: broker})
	b := newNode(t, appOptions{Broker: mem})
	stream := servertest.OpenStream(t, a.url+"/api/live/activity", "")

	broker.down.Store(true)
	mine := a.add("answered on A while its broker is away")
	eventually(t, "node A keeps no publication for later", func() bool { return a.app.hub.Stats().Pending == 1 })
	other := b.add("added on B meanwhile")
	if ev := stream.Next(t); !strings.Contains(ev.Data, `"id":"`+other.ID+`"`) {
		t.Fatalf("first event on A: %+v, want B's add", ev)
	}

	broker.down.Store(false)
	if ev := stream.Next(t); !strings.Contains(ev.Data, `"id":"`+mine.ID+`"`) {
		t.Fatalf("second event on A: %+v, want A's add", ev)
	}
	want := []string{mine.ID, other.ID, "a3", "a2", "a1"}
	for _, n := range []*node{a, b} {
		eventually(t, "a node's feed is not in the stream's order", func() bool { return slices.Equal(n.feedIDs(), want) })
	}
	eventually(t, "node A still keeps a publication", func() bool { return a.app.hub.Stats().Pending == 0 })
	if st := a.app.hub.Stats(); st.PendingDropped != 0 || st.HookDropped != 0 {
		t.Errorf("Stats() %+v, want nothing dropped", st)
	}
}
