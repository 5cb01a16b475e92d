package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/livetest"
)

func TestDashboard(t *testing.T) {
	n := newNode(t, appOptions{})
	var initial map[string]float64
	n.getJSON("/api/metrics", &initial)
	if initial["activeUsers"] == 0 {
		t.Fatalf("GET /api/metrics: %v", initial)
	}

	// A node that ticks: its updates reach a stream, and its own numbers
	// follow them.
	n = newNode(t, appOptions{Tick: time.Millisecond})
	s := servertest.OpenStream(t, n.url+"/api/live/metrics:dashboard", "")
	data := s.Next(t).Data
	var update map[string]float64
	if err := json.Unmarshal([]byte(data), &update); err != nil || update["updatedAt"] == 0 {
		t.Fatalf("update %q: %v", data, err)
	}
	eventually(t, "GET /api/metrics does not reflect the updates", func() bool {
		var got map[string]float64
		n.getJSON("/api/metrics", &got)
		return got["updatedAt"] >= update["updatedAt"]
	})

	status, body := n.do("GET", "/", "")
	if status != 200 || !strings.Contains(body, `from "/live.js"`) {
		t.Errorf("GET /: %d, page without the client import", status)
	}
	resp, err := http.Get(n.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /: Content-Type %s", ct)
	}
	resp, err = http.Get(n.url + "/live.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("GET /live.js: %s %s", resp.Status, ct)
	}
}

func TestActivity(t *testing.T) {
	n := newNode(t, appOptions{})
	feed := livetest.Connect(t, n.url+"/api/live/", "activity")
	next := func() string { return string(feed.Next(t).Data) }

	if status, body := n.do("POST", "/api/activity", `{"message":`); status != 400 || !strings.Contains(body, "bad_json") {
		t.Errorf("bad JSON: %d %s", status, body)
	}
	for _, tc := range []struct{ name, body, code string }{
		{"empty message", `{"message":""}`, "bad_message"},
		{"no message", `{"type":"note"}`, "bad_message"},
		{"long message", `{"message":"` + strings.Repeat("x", 501) + `"}`, "bad_message"},
		{"long type", `{"message":"m","type":"` + strings.Repeat("t", 41) + `"}`, "bad_type"},
		{"not an object", `[1,2]`, "bad_json"},
		{"too large", `{"message":"` + strings.Repeat("x", 17<<10) + `"}`, "bad_json"},
	} {
		if status, body := n.do("POST", "/api/activity", tc.body); status != 400 || !strings.Contains(body, tc.code) {
			t.Errorf("%s: %d %.200s", tc.name, status, body)
		}
	}
	// An actor's name gives the avatar its initial, whatever the script.
	status, body := n.do("POST", "/api/activity", `{"message":"hi","actor":{"name":"Émile & co"}}`)
	var withActor activity
	if json.Unmarshal([]byte(body), &withActor); status != 201 || withActor.Actor.Name != "Émile & co" || !strings.Contains(withActor.Actor.Avatar, "%3EÉ%3C") {
		t.Errorf("POST with an actor: %d %s", status, body)
	}
	// The bad requests published nothing: the first event is this add.
	if ev := next(); !strings.HasPrefix(ev, `{"type":"add","item":{"id":"`+withActor.ID+`"`) {
		t.Errorf("event %s", ev)
	}
	created := n.add("shipped it")
	if ev := next(); !strings.HasPrefix(ev, `{"type":"add","item":{"id":"`+created.ID+`"`) {
		t.Errorf("event %s", ev)
	}
	if status, _ := n.do("PATCH", "/api/activity/"+created.ID, `{"message":"shipped it twice"}`); status != 200 {
		t.Errorf("PATCH: %d", status)
	}
	if ev := next(); !strings.Contains(ev, `"type":"update"`) || !strings.Contains(ev, "twice") {
		t.Errorf("event %s", ev)
	}
	if status, _ := n.do("DELETE", "/api/activity/"+created.ID, ""); status != 204 {
		t.Errorf("DELETE: %d", status)
	}
	if ev := next(); ev != `{"type":"remove","id":"`+created.ID+`"}` {
		t.Errorf("event %s", ev)
	}
	if status, _ := n.do("DELETE", "/api/activity/nope", ""); status != 404 {
		t.Errorf("DELETE missing: %d", status)
	}
	if status, _ := n.do("PATCH", "/api/activity/nope", `{"message":"x"}`); status != 404 {
		t.Errorf("PATCH missing: %d", status)
	}
	if ids := n.feedIDs(); len(ids) != 4 || ids[0] != withActor.ID || ids[1] != "a3" {
		t.Errorf("feed after add and remove: %v", ids)
	}
}

// TestActivityMutationID: the page's optimistic adds are matched by the
// mutation id, which the response and the event both carry.
func TestActivityMutationID(t *testing.T) {
	n := newNode(t, appOptions{})
	s := servertest.OpenStream(t, n.url+"/api/live/activity", "")
	status, body := n.do("POST", "/api/activity", `{"message":"optimistic"}`, "Live-Mutation-Id", "m-123")
	if status != http.StatusCreated {
		t.Fatalf("POST: %d %s", status, body)
	}
	if ev := s.Next(t); !strings.Contains(ev.Data, `"mutationId":"m-123"`) {
		t.Errorf("event without the mutation id: %s", ev.Data)
	}
}

func TestBoard(t *testing.T) {
	n := newNode(t, appOptions{})
	var got struct {
		Data    map[string]any
		Version uint64
	}
	n.getJSON("/api/board", &got)
	if got.Data["title"] != "Launch checklist" || got.Version != 0 {
		t.Fatalf("GET /api/board: %+v", got)
	}
	s := servertest.OpenStream(t, n.url+"/api/live/board?version=0", "")
	if status, body := n.do("PATCH", "/api/board", `{"columns":{"todo":{"cards":{"c9":"Tell everyone"}}}}`); status != 200 {
		t.Fatalf("PATCH: %d %s", status, body)
	}
	want := `{"version":1,"changes":[{"op":"add","path":"columns.todo.cards.c9","value":"Tell everyone"}]}`
	if ev := s.Next(t); ev.Data != want {
		t.Errorf("delta %s, want %s", ev.Data, want)
	}
	if status, body := n.do("PATCH", "/api/board", `{"title":"stale"}`, "If-Match", `"0"`); status != http.StatusPreconditionFailed {
		t.Errorf("stale PATCH: %d %s", status, body)
	}
}

func TestClientPublishRules(t *testing.T) {
	n := newNode(t, appOptions{})
	for path, want := range map[string]int{
		"/api/live/chat:lobby":        200,
		"/api/live/metrics:dashboard": 403,
		"/api/live/activity":          403,
		"/api/live/board":             403,
	} {
		if status, body := n.do("POST", path, `{"text":"hi"}`); status != want {
			t.Errorf("POST %s: %d %s, want %d", path, status, body, want)
		}
	}
}
