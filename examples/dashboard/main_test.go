package main

import (
	"bufio"
	"context"
	"encoding/json"
	"github.com/go-live/live/livetest"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestDashboard(t *testing.T) {
	m := newMetrics()
	hub, handler, err := newApp(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler)
	defer srv.Close()
	defer hub.Close(context.Background())

	resp, err := http.Get(srv.URL + "/api/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var initial map[string]float64
	err = json.NewDecoder(resp.Body).Decode(&initial)
	resp.Body.Close()
	if err != nil || initial["activeUsers"] == 0 {
		t.Fatalf("GET /api/metrics: %v %v", initial, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stream, err := http.Get(srv.URL + "/api/live/metrics:dashboard")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	done := make(chan error, 1)
	go func() { done <- m.run(ctx, hub, time.Millisecond) }()
	defer func() {
		cancel()
		<-done
	}()

	r := bufio.NewReader(stream.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var update map[string]float64
			if err := json.Unmarshal([]byte(data), &update); err != nil || update["updatedAt"] == 0 {
				t.Fatalf("update %q: %v", data, err)
			}
			break
		}
	}

	page, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != 200 || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %s %s", page.Status, page.Header.Get("Content-Type"))
	}
}

// app is the demo under test with an SSE reader per channel.
type app struct {
	t   *testing.T
	hub interface{ Close(context.Context) error }
	url string
}

func newTestApp(t *testing.T) *app {
	hub, handler, err := newApp(context.Background(), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	return &app{t: t, hub: hub, url: srv.URL}
}

// stream opens an SSE stream and returns a function that reads the next
// data line.
func (a *app) stream(path string) func() string {
	resp, err := http.Get(a.url + path)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { resp.Body.Close() })
	r := bufio.NewReader(resp.Body)
	return func() string {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				a.t.Fatalf("stream %s: %v", path, err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				return strings.TrimSpace(data)
			}
		}
	}
}

func (a *app) do(method, path, body string) (int, string) {
	req, _ := http.NewRequest(method, a.url+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	bufio.NewReader(resp.Body).WriteTo(b)
	return resp.StatusCode, strings.TrimSpace(b.String())
}

func TestActivity(t *testing.T) {
	a := newTestApp(t)
	feed := livetest.Connect(t, a.url+"/api/live/", "activity")
	next := func() string { return string(feed.Next(t).Data) }

	if status, body := a.do("POST", "/api/activity", `{"message":`); status != 400 || !strings.Contains(body, "bad_json") {
		t.Errorf("bad JSON: %d %s", status, body)
	}
	status, body := a.do("POST", "/api/activity", `{"message":"shipped it"}`)
	if status != 201 {
		t.Fatalf("POST: %d %s", status, body)
	}
	var created activity
	json.Unmarshal([]byte(body), &created)
	// The bad request published nothing: the first event is the add.
	if ev := next(); !strings.HasPrefix(ev, `{"type":"add","item":{"id":"`+created.ID+`"`) {
		t.Errorf("event %s", ev)
	}
	if status, _ := a.do("PATCH", "/api/activity/"+created.ID, `{"message":"shipped it twice"}`); status != 200 {
		t.Errorf("PATCH: %d", status)
	}
	if ev := next(); !strings.Contains(ev, `"type":"update"`) || !strings.Contains(ev, "twice") {
		t.Errorf("event %s", ev)
	}
	if status, _ := a.do("DELETE", "/api/activity/"+created.ID, ""); status != 204 {
		t.Errorf("DELETE: %d", status)
	}
	if ev := next(); ev != `{"type":"remove","id":"`+created.ID+`"}` {
		t.Errorf("event %s", ev)
	}
	if status, _ := a.do("DELETE", "/api/activity/nope", ""); status != 404 {
		t.Errorf("DELETE missing: %d", status)
	}
}

func TestBoard(t *testing.T) {
	a := newTestApp(t)
	status, body := a.do("GET", "/api/board", "")
	var got struct {
		Data    map[string]any
		Version uint64
	}
	if json.Unmarshal([]byte(body), &got); status != 200 || got.Data["title"] != "Launch checklist" || got.Version != 0 {
		t.Fatalf("GET /api/board: %d %s", status, body)
	}
	next := a.stream("/api/live/board?version=0")
	if status, body := a.do("PATCH", "/api/board", `{"columns":{"todo":{"cards":{"c9":"Tell everyone"}}}}`); status != 200 {
		t.Fatalf("PATCH: %d %s", status, body)
	}
	want := `{"version":1,"changes":[{"op":"add","path":"columns.todo.cards.c9","value":"Tell everyone"}]}`
	if ev := next(); ev != want {
		t.Errorf("delta %s, want %s", ev, want)
	}
}

func TestClientPublishRules(t *testing.T) {
	a := newTestApp(t)
	for path, want := range map[string]int{
		"/api/live/chat:lobby":        200,
		"/api/live/metrics:dashboard": 403,
		"/api/live/activity":          403,
		"/api/live/board":             403,
	} {
		if status, body := a.do("POST", path, `{"text":"hi"}`); status != want {
			t.Errorf("POST %s: %d %s, want %d", path, status, body, want)
		}
	}
}
