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
	"testing/fstest"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// Mount a hub, publish, and read the publication from an SSE stream.
func Example() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/live/", hub) // GET /live/{channel} streams; POST publishes; WebSocket at /live/
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Once the response headers arrive the stream is subscribed.
	resp, err := http.Get(srv.URL + "/live/metrics:dashboard")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()

	pos, _ := hub.Publish(context.Background(), "metrics:dashboard", map[string]int{"users": 42})

	r := bufio.NewReader(resp.Body)
	for {
		line, _ := r.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			fmt.Print(line)
			break
		}
	}
	fmt.Println("seq", pos.Seq)
	// Output:
	// data: {"users":42}
	// seq 1
}

// Mount the transports at the URLs a React app written for the
// LiveProvider/useLiveData pattern uses, so its LiveProvider (WebSocket at
// /ws) and useDeltaSync (EventSource at /api/live/{channel}) work
// unchanged.
func Example_reactRoutes() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("GET /ws", hub.WebSocketHandler())
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
	mux.Handle("POST /api/live/{channel}", hub.PublishHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()

	c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"activity"}`))
	c.Read(ctx) // {"type":"subscribed",…}: from here on publications arrive

	hub.Publish(ctx, "activity", json.RawMessage(`{"type":"add","item":{"id":"a1"}}`))
	_, msg, _ := c.Read(ctx)
	var frame struct {
		Type, Channel string
		Data          json.RawMessage
	}
	json.Unmarshal(msg, &frame)
	fmt.Println(frame.Type, frame.Channel, string(frame.Data))
	// Output:
	// data activity {"type":"add","item":{"id":"a1"}}
}

// Let clients publish on some channels only. Server code publishes with
// Hub.Publish regardless.
func ExampleOptions_authorize() {
	hub := live.NewHub(&live.Options{
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if op == live.OpPublish && !strings.HasPrefix(channel, "chat:") {
				return live.Deny("only chat channels take messages") // Deny's text is shown to the client
			}
			return nil
		},
	})
	defer hub.Close(context.Background())

	srv := httptest.NewServer(hub)
	defer srv.Close()
	for _, channel := range []string{"chat:lobby", "metrics"} {
		resp, err := http.Post(srv.URL+"/"+channel, "application/json", strings.NewReader(`{"text":"hi"}`))
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(channel, resp.StatusCode)
	}
	// Output:
	// chat:lobby 200
	// metrics 403
}

// Close the hub when the server shuts down: http.Server.Shutdown does not
// end streaming or hijacked connections by itself.
func ExampleHub_Close() {
	hub := live.NewHub(nil)
	srv := &http.Server{Addr: "localhost:8080", Handler: hub}
	srv.RegisterOnShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hub.Close(ctx)
	})
	// go srv.ListenAndServe(); … on a signal:
	srv.Shutdown(context.Background())
}

// Cursors are what clients hold to resume: the SSE event id, and the
// "cursor" field of WebSocket frames.
func ExampleParsePosition() {
	pos, err := live.ParsePosition("42.k3j9x1")
	fmt.Println(pos.Seq, pos.Epoch, err)
	_, err = live.ParsePosition("42")
	fmt.Println(err)
	// Output:
	// 42 k3j9x1 <nil>
	// live: malformed cursor "42"
}

// Keep more history so clients can be away longer and still resume.
func ExampleNewMemoryBroker() {
	broker := live.NewMemoryBroker(&live.MemoryOptions{HistorySize: 10000, HistoryAge: time.Hour})
	defer broker.Close()
	hub := live.NewHub(&live.Options{Broker: broker})
	defer hub.Close(context.Background())

	var pos live.Position
	for i := range 3 {
		pos, _ = hub.Publish(context.Background(), "ticks", i)
	}
	// What a client that saw only the first publication missed:
	missed, _ := broker.Since(context.Background(), "ticks", live.Position{Epoch: pos.Epoch, Seq: 1})
	for _, m := range missed {
		fmt.Println(m.Pos.Seq, string(m.Data))
	}
	// Output:
	// 2 1
	// 3 2
}

// Keep a channel's value on the server and let clients sync it with
// versioned deltas: React's useDeltaSync fetches GET /api/board and
// streams /api/live/board?version=N.
func ExampleHub_State() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	ctx := context.Background()

	board, err := hub.State(ctx, "board", &live.StateOptions{Initial: map[string]any{"title": "Sprint"}})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/board", board)   // {data, version}
	mux.Handle("PATCH /api/board", board) // merges; If-Match guards
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	stream, err := http.Get(srv.URL + "/api/live/board?version=0")
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()

	// A write publishes only what changed.
	board.Apply(ctx, map[string]any{"cards": map[string]string{"c1": "Write docs"}})

	r := bufio.NewReader(stream.Body)
	for {
		line, _ := r.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			fmt.Print(line)
			break
		}
	}
	data, version := board.Get()
	fmt.Println(string(data), version)
	// Output:
	// data: {"version":1,"changes":[{"op":"add","path":"cards","value":{"c1":"Write docs"}}]}
	// {"title":"Sprint","cards":{"c1":"Write docs"}} 1
}

// Everything the README mounts, on one Go 1.22 mux beside a file server at
// "GET /": the transports at a React LiveProvider app's URLs, the prefix mount, a hooked
// CRUD API and a State. Each pattern names its method, so none overlaps
// another and nothing panics.
func Example_oneMux() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	ctx := context.Background()
	board, _ := hub.State(ctx, "board", &live.StateOptions{Initial: map[string]string{"title": "Sprint"}})
	todos := hub.Hook(live.HookOptions{Channel: func(r *http.Request) string { return "todos:" + r.PathValue("team") }})
	createTodo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"t1","title":"milk"}`)
	})

	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(fstest.MapFS{"index.html": {Data: []byte("<h1>Tasks</h1>")}}))
	mux.Handle("GET /ws", hub.WebSocketHandler())           // React's LiveProvider
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler()) // useDeltaSync's EventSource
	mux.Handle("GET /api/live", hub.SSEHandler())           // live.js without WebSocket: ?channels=a,b
	mux.Handle("POST /api/live/{channel}", hub.PublishHandler())
	mux.Handle("GET /live/", hub) // or everything under one prefix
	mux.Handle("POST /live/", hub)
	mux.Handle("POST /api/teams/{team}/todos", todos(createTodo)) // publishes {"type":"add",…} on todos:{team}
	mux.Handle("GET /api/board", board)
	mux.Handle("PATCH /api/board", board)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	stream, err := http.Get(srv.URL + "/api/live/todos:red") // subscribed once the headers arrive
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()
	resp, err := http.Post(srv.URL+"/api/teams/red/todos", "application/json", strings.NewReader(`{"title":"milk"}`))
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	events := bufio.NewReader(stream.Body)
	for {
		line, _ := events.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			fmt.Print(line)
			break
		}
	}
	for _, path := range []string{"/api/board", "/"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	// Output:
	// data: {"type":"add","item":{"id":"t1","title":"milk"}}
	// /api/board 200 {"data":{"title":"Sprint"},"version":0}
	// / 200 <h1>Tasks</h1>
}
