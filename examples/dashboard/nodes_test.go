package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/livetest"
)

// The tests in this file run two or three nodes of one dashboard on a
// shared broker (Redis, PostgreSQL), as separate processes would: each has
// its own broker connection, hub and HTTP server.

// TestNodesShareActivity: changes made through one node reach the
// subscribers of the other, over SSE and WebSocket, and both nodes' feeds
// hold the same entries.
func TestNodesShareActivity(t *testing.T) { forEachBackend(t, testNodesShareActivity) }

func testNodesShareActivity(t *testing.T, open func() live.Broker) {
	a := newNode(t, appOptions{Broker: open()})
	b := newNode(t, appOptions{Broker: open()})
	sseB := servertest.OpenStream(t, b.url+"/api/live/activity", "")
	wsB := livetest.Connect(t, "ws"+strings.TrimPrefix(b.url, "http")+"/ws", "activity")
	sseA := servertest.OpenStream(t, a.url+"/api/live/activity", "")

	created := a.add("deployed from node A")
	wantAdd := `{"type":"add","item":{"id":"` + created.ID + `"`
	if ev := sseB.Next(t); !strings.HasPrefix(ev.Data, wantAdd) {
		t.Errorf("SSE on B after the add on A: %s", ev.Data)
	}
	if m := wsB.Next(t); !strings.HasPrefix(string(m.Data), wantAdd) {
		t.Errorf("WebSocket on B after the add on A: %s", m.Data)
	}
	if ev := sseA.Next(t); !strings.HasPrefix(ev.Data, wantAdd) {
		t.Errorf("SSE on A after its own add: %s", ev.Data)
	}

	// B can edit the entry at once, even if its own subscription has not
	// brought it yet (it then catches up from history); A's subscribers
	// see the edit.
	if status, body := b.do("PATCH", "/api/activity/"+created.ID, `{"message":"edited on B"}`); status != http.StatusOK {
		t.Fatalf("PATCH on B: %d %s", status, body)
	}
	if ev := sseA.Next(t); !strings.Contains(ev.Data, `"type":"update"`) || !strings.Contains(ev.Data, "edited on B") {
		t.Errorf("SSE on A after the edit on B: %s", ev.Data)
	}
	sseB.Next(t)
	wsB.Next(t)

	// An entry added on B gets an id of its own, not one A has used.
	other := b.add("from node B")
	if other.ID == created.ID {
		t.Fatalf("both nodes gave out id %s", other.ID)
	}
	for _, s := range []*servertest.Stream{sseA, sseB} {
		if ev := s.Next(t); !strings.Contains(ev.Data, `"id":"`+other.ID+`"`) {
			t.Errorf("after the add on B: %s", ev.Data)
		}
	}
	wsB.Next(t)

	if status, _ := a.do("DELETE", "/api/activity/"+other.ID, ""); status != http.StatusNoContent {
		t.Fatalf("DELETE on A of B's entry: %d", status)
	}
	want := `{"type":"remove","id":"` + other.ID + `"}`
	if ev := sseB.Next(t); ev.Data != want {
		t.Errorf("SSE on B after the remove on A: %s", ev.Data)
	}
	if m := wsB.Next(t); string(m.Data) != want {
		t.Errorf("WebSocket on B after the remove on A: %s", m.Data)
	}

	// Both feeds end up the same: the edited entry and the three seeds.
	wantIDs := []string{created.ID, "a3", "a2", "a1"}
	for name, n := range map[string]*node{"A": a, "B": b} {
		eventually(t, "node "+name+"'s feed is not "+strings.Join(wantIDs, ","), func() bool {
			return slices.Equal(n.feedIDs(), wantIDs)
		})
		var items []activity
		n.getJSON("/api/activity", &items)
		if items[0].Message != "edited on B" {
			t.Errorf("node %s: %+v", name, items[0])
		}
	}
}

// TestNodesShareBoard: a board update made through one node reaches a
// subscriber of the other as the next versioned delta, and both nodes
// serve the same value and version.
func TestNodesShareBoard(t *testing.T) { forEachBackend(t, testNodesShareBoard) }

func testNodesShareBoard(t *testing.T, open func() live.Broker) {
	a := newNode(t, appOptions{Broker: open()})
	b := newNode(t, appOptions{Broker: open()})
	sseB := servertest.OpenStream(t, b.url+"/api/live/board?version=0", "")
	wsB := livetest.Connect(t, "ws"+strings.TrimPrefix(b.url, "http")+"/ws", "board")

	if status, body := a.do("PATCH", "/api/board", `{"columns":{"todo":{"cards":{"c9":"Tell everyone"}}}}`); status != http.StatusOK {
		t.Fatalf("PATCH on A: %d %s", status, body)
	}
	want := `{"version":1,"changes":[{"op":"add","path":"columns.todo.cards.c9","value":"Tell everyone"}]}`
	if ev := sseB.Next(t); ev.Data != want {
		t.Errorf("SSE on B: %s, want %s", ev.Data, want)
	}
	if m := wsB.Next(t); string(m.Data) != want {
		t.Errorf("WebSocket on B: %s, want %s", m.Data, want)
	}

	// B's value is at version 1 too: a conditional write there succeeds,
	// and A's subscribers see it as version 2.
	sseA := servertest.OpenStream(t, a.url+"/api/live/board?version=1", "")
	if status, body := b.do("PATCH", "/api/board", `{"columns":{"todo":{"cards":{"c1":null}}}}`, "If-Match", `"1"`); status != http.StatusOK {
		t.Fatalf("PATCH on B at version 1: %d %s", status, body)
	}
	want = `{"version":2,"changes":[{"op":"remove","path":"columns.todo.cards.c1"}]}`
	if ev := sseA.Next(t); ev.Data != want {
		t.Errorf("SSE on A: %s, want %s", ev.Data, want)
	}
	type board struct {
		Data    json.RawMessage
		Version uint64
	}
	var onA, onB board
	a.getJSON("/api/board", &onA)
	b.getJSON("/api/board", &onB)
	if onA.Version != 2 || onB.Version != 2 || string(onA.Data) != string(onB.Data) {
		t.Errorf("the nodes disagree:\nA %d %s\nB %d %s", onA.Version, onA.Data, onB.Version, onB.Data)
	}
	// Now A refuses what is stale.
	if status, body := a.do("PATCH", "/api/board", `{"title":"stale"}`, "If-Match", `"1"`); status != http.StatusPreconditionFailed {
		t.Errorf("stale PATCH on A: %d %s", status, body)
	}
}

// TestNodesResume: a client that followed one node and lost its
// connection resumes on the other from its cursor, and gets exactly what
// it missed, in order, whichever node the changes were made through.
func TestNodesResume(t *testing.T) { forEachBackend(t, testNodesResume) }

func testNodesResume(t *testing.T, open func() live.Broker) {
	a := newNode(t, appOptions{Broker: open()})
	b := newNode(t, appOptions{Broker: open()})

	s := servertest.OpenStream(t, a.url+"/api/live/activity", "")
	first := a.add("one")
	ev := s.Next(t)
	if !strings.Contains(ev.Data, first.ID) || ev.ID == "" {
		t.Fatalf("first event %+v", ev)
	}
	s.Close() // the client goes away

	var missed []string
	for i, n := range []*node{a, b, a, b} {
		missed = append(missed, n.add("missed "+string(rune('1'+i))).ID)
	}
	if status, _ := b.do("PATCH", "/api/activity/"+first.ID, `{"message":"one, edited"}`); status != http.StatusOK {
		t.Fatalf("PATCH on B: %d", status)
	}

	// The hooks publish after answering, so the broker may have numbered
	// the changes in another order than they were made: what counts is
	// that each comes once, numbered without a gap after the cursor.
	s = servertest.OpenStream(t, b.url+"/api/live/activity", ev.ID)
	pos, err := live.ParsePosition(ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{`"message":"one, edited"`: true}
	for _, id := range missed {
		want[`"id":"`+id+`"`] = true
	}
	for i := range len(want) {
		got := s.Next(t)
		p, err := live.ParsePosition(got.ID)
		if err != nil || got.Event != "" || p.Epoch != pos.Epoch || p.Seq != pos.Seq+uint64(i)+1 {
			t.Fatalf("resumed event %d after %s: %+v", i, pos, got)
		}
		found := false
		for k := range want {
			if strings.Contains(got.Data, k) {
				delete(want, k)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("resumed event %d: %s, want one of %v", i, got.Data, want)
		}
	}
	// Then live: a change on A arrives after the replay.
	last := a.add("live again")
	if got := s.Next(t); !strings.Contains(got.Data, last.ID) {
		t.Errorf("after the replay: %+v", got)
	}

	// The board resumes by version across nodes too.
	for _, title := range []string{"v1", "v2", "v3"} {
		if status, body := a.do("PATCH", "/api/board", `{"title":"`+title+`"}`); status != http.StatusOK {
			t.Fatalf("PATCH: %d %s", status, body)
		}
	}
	// (B has to have heard of version 3 first: a cursor beyond what the
	// node has received is answered with a reset, "ahead".)
	eventually(t, "node B's board did not reach version 3", func() bool {
		var got struct{ Version uint64 }
		b.getJSON("/api/board", &got)
		return got.Version == 3
	})
	sb := servertest.OpenStream(t, b.url+"/api/live/board?version=1", "")
	for _, want := range []string{
		`{"version":2,"changes":[{"op":"update","path":"title","value":"v2"}]}`,
		`{"version":3,"changes":[{"op":"update","path":"title","value":"v3"}]}`,
	} {
		if got := sb.Next(t); got.Data != want {
			t.Errorf("board resumed on B: %s, want %s", got.Data, want)
		}
	}
}

// TestNodeJoinsLater: a node started after changes were made rebuilds the
// feed, the board and the metrics from the broker's history, and serves
// them as the first node does.
func TestNodeJoinsLater(t *testing.T) { forEachBackend(t, testNodeJoinsLater) }

func testNodeJoinsLater(t *testing.T, open func() live.Broker) {
	a := newNode(t, appOptions{Broker: open()})
	s := servertest.OpenStream(t, a.url+"/api/live/metrics:dashboard", "")
	ticking := newNode(t, appOptions{Broker: open(), Tick: 5 * time.Millisecond})
	s.Next(t)
	ticking.app.Close(t.Context()) // the numbers stop moving; closing again at the end is harmless

	x := a.add("before C")
	y := a.add("also before C")
	if status, _ := a.do("DELETE", "/api/activity/a2", ""); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d", status)
	}
	if status, _ := a.do("PATCH", "/api/activity/"+x.ID, `{"message":"edited before C"}`); status != http.StatusOK {
		t.Fatalf("PATCH: %d", status)
	}
	if status, body := a.do("PATCH", "/api/board", `{"columns":{"doing":{"cards":{"c7":"Write the post"}}}}`); status != http.StatusOK {
		t.Fatalf("PATCH board: %d %s", status, body)
	}

	c := newNode(t, appOptions{Broker: open()})
	wantIDs := []string{y.ID, x.ID, "a3", "a1"}
	eventually(t, "node A's feed is not "+strings.Join(wantIDs, ","), func() bool { return slices.Equal(a.feedIDs(), wantIDs) })
	if ids := c.feedIDs(); !slices.Equal(ids, wantIDs) {
		t.Errorf("node C's feed %v, want %v", ids, wantIDs)
	}
	var items []activity
	c.getJSON("/api/activity", &items)
	if items[1].Message != "edited before C" {
		t.Errorf("node C's feed: %+v", items[1])
	}

	var boardA, boardC struct {
		Data    json.RawMessage
		Version uint64
	}
	a.getJSON("/api/board", &boardA)
	c.getJSON("/api/board", &boardC)
	if boardC.Version != 1 || string(boardA.Data) != string(boardC.Data) {
		t.Errorf("boards: A %d %s, C %d %s", boardA.Version, boardA.Data, boardC.Version, boardC.Data)
	}

	var metricsA, metricsC map[string]float64
	eventually(t, "node A's metrics do not follow the updates", func() bool {
		a.getJSON("/api/metrics", &metricsA)
		c.getJSON("/api/metrics", &metricsC)
		return metricsA["updatedAt"] == metricsC["updatedAt"]
	})
	for k, v := range metricsA {
		if metricsC[k] != v {
			t.Errorf("metrics: %s is %v on A, %v on C", k, v, metricsC[k])
		}
	}
}
