package live_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/go-live/live"
)

// Wrap an existing CRUD handler so every subscriber of "todos" hears of
// each change, in the shape React's useLiveList applies, and test it
// with httptest.
func ExampleHub_Hook() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	createTodo := func(w http.ResponseWriter, r *http.Request) {
		var todo map[string]any
		json.NewDecoder(r.Body).Decode(&todo)
		todo["id"] = "t1" // saved
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(todo)
	}
	todos := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})

	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	mux.Handle("POST /api/todos", todos(http.HandlerFunc(createTodo)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	stream, err := http.Get(srv.URL + "/live/todos") // subscribed once the headers arrive
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/api/todos", strings.NewReader(`{"title":"milk"}`))
	req.Header.Set(live.MutationIDHeader, "temp-1") // the optimistic item's id
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, " ", resp.Header.Get(live.MutationIDHeader), " ", string(body))

	events := bufio.NewReader(stream.Body)
	for {
		line, _ := events.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			fmt.Print(line)
			break
		}
	}
	// Output:
	// 201 temp-1 {"id":"t1","title":"milk"}
	// data: {"type":"add","item":{"id":"t1","title":"milk"},"mutationId":"temp-1"}
}

// A bulk import tells subscribers once to refetch, instead of publishing
// one event per row.
func ExampleSetEvent() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	importTodos := func(w http.ResponseWriter, r *http.Request) {
		var rows []map[string]any
		json.NewDecoder(r.Body).Decode(&rows)
		// … insert the rows …
		live.SetEvent(r, "todos", map[string]string{"type": "refetch"})
		fmt.Fprintf(w, `{"imported":%d}`, len(rows))
	}
	h := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})(http.HandlerFunc(importTodos))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/todos/import", strings.NewReader(`[{"title":"a"},{"title":"b"}]`)))
	fmt.Println(rec.Code, rec.Body, hub.Stats().Published, "event")
	// Output:
	// 200 {"imported":2} 1 event
}

// Reject edits made against an old version before the handler runs. The
// check is not atomic with the handler's write; see WriteConflict for
// the handler's side.
func ExampleHookOptions_version() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	versions := map[string]string{"t1": "v2"}
	h := hub.Hook(live.HookOptions{
		Channel: func(*http.Request) string { return "todos" },
		Version: func(r *http.Request) (string, error) { return versions[r.PathValue("id")], nil },
	})
	mux := http.NewServeMux()
	mux.Handle("PATCH /api/todos/{id}", h(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("handler called")
	})))

	req := httptest.NewRequest("PATCH", "/api/todos/t1", strings.NewReader(`{"done":true}`))
	req.Header.Set("If-Match", `"v1"`)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body)
	// Output:
	// 412 {"error":"conflict","message":"the resource has changed; merge onto the current version and retry","version":"v2"}
}

// Compare and write in one step, and answer a lost race the way the
// hook's If-Match check does.
func ExampleWriteConflict() {
	version := 3 // in a database: UPDATE … WHERE id = $1 AND version = $2
	updateTodo := func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Version int }
		json.NewDecoder(r.Body).Decode(&in)
		if in.Version != version {
			live.WriteConflict(w, http.StatusConflict, fmt.Sprint(version))
			return
		}
		version++
		fmt.Fprintf(w, `{"id":"t1","version":%d}`, version)
	}

	rec := httptest.NewRecorder()
	updateTodo(rec, httptest.NewRequest("PUT", "/api/todos/t1", strings.NewReader(`{"version":2}`)))
	fmt.Print(rec.Code, " ", rec.Body)
	// Output:
	// 409 {"error":"conflict","message":"the resource has changed; merge onto the current version and retry","version":3}
}
