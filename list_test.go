package live_test

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// TestListCoalescing stalls a client on a list channel while items are
// added, edited and removed. Its queued operations are coalesced per id
// instead of it being dropped, and folding what it received gives the
// same list as folding everything published.
func TestListCoalescing(t *testing.T) {
	s := newTestServer(t, &live.Options{
		QueueMessages: 8,
		ListIDField: func(channel string) string {
			if channel == "todos" {
				return "id"
			}
			return ""
		},
	})
	rec := s.hub.AttachRecorder(t, "todos")
	merge := live.MergeList("id")

	var ops []json.RawMessage
	publish := func(op map[string]any) {
		b, _ := json.Marshal(op)
		ops = append(ops, b)
		s.publish(t, "todos", json.RawMessage(b))
	}
	for i := 1; i <= 6; i++ {
		publish(map[string]any{"type": "add", "item": map[string]any{"id": strconv.Itoa(i), "text": "todo " + strconv.Itoa(i), "done": false}})
	}
	for round := range 30 {
		for i := 1; i <= 6; i++ {
			publish(map[string]any{"type": "update", "item": map[string]any{"id": strconv.Itoa(i), "done": round%2 == 0, "round": round}, "mutationId": "m" + strconv.Itoa(round)})
		}
	}
	publish(map[string]any{"type": "remove", "id": "2"})
	publish(map[string]any{"type": "add", "item": map[string]any{"id": "7", "text": "new"}})
	publish(map[string]any{"type": "remove", "id": "7"})
	last := s.publish(t, "todos", json.RawMessage(`{"type":"update","item":{"id":"3","text":"last"}}`))
	ops = append(ops, json.RawMessage(`{"type":"update","item":{"id":"3","text":"last"}}`))

	if s.hub.Stats().SlowClients == 0 {
		t.Fatal("the stalled client never overflowed")
	}
	want := json.RawMessage(`[]`)
	for _, op := range ops {
		var err error
		if want, err = merge(want, op); err != nil {
			t.Fatal(err)
		}
	}

	rec.Release()
	got := json.RawMessage(`[]`)
	seen, received := 0, 0
	for done := false; !done; {
		frames := rec.Frames(t, seen+1)
		for _, b := range frames[seen:] {
			var f wsFrame
			json.Unmarshal(b, &f)
			if f.Type != "data" {
				continue
			}
			received++
			var err error
			if got, err = merge(got, f.Data); err != nil {
				t.Fatalf("frame %s: %v", b, err)
			}
			if f.Cursor == last.String() {
				done = true
			}
		}
		seen = len(frames)
	}
	if diff := cmp.Diff(decode(t, string(want)), decode(t, string(got))); diff != "" {
		t.Errorf("coalesced list (-want +got):\n%s", diff)
	}
	if received >= len(ops) {
		t.Errorf("received %d frames for %d operations: nothing was coalesced", received, len(ops))
	}
	if st := s.hub.Stats(); st.Connections != 1 {
		t.Errorf("Connections = %d: the stalled client was dropped", st.Connections)
	}
	t.Logf("%d operations arrived as %d frames", len(ops), received)
}
