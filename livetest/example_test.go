package livetest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/livetest"
)

// The shape of a test of a CRUD handler wrapped by Hub.Hook.
func ExampleRecorder() {
	t := &testing.T{} // in a real test, the test's own t
	rec := livetest.NewRecorder(t)
	hub := live.NewHub(&live.Options{Broker: rec})
	defer hub.Close(context.Background())

	todos := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})
	create := todos(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"t1","title":"milk"}`))
	}))
	create.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/todos", strings.NewReader(`{"title":"milk"}`)))

	rec.Published(t, "todos", map[string]any{"type": "add", "item": map[string]any{"id": "t1", "title": "milk"}})
	fmt.Println("failed:", t.Failed())
	for _, p := range rec.All() {
		fmt.Println(p.Channel, string(p.Data))
	}
	// Output:
	// failed: false
	// todos {"type":"add","item":{"id":"t1","title":"milk"}}
}
