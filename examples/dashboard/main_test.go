package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
)

func TestDashboard(t *testing.T) {
	hub := live.NewHub(nil)
	m := newMetrics()
	srv := httptest.NewServer(newHandler(hub, m))
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
