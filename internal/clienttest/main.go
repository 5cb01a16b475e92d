// Command clienttest serves a Hub for the browser client's tests
// (client/test): the routes live.js talks to, a page that imports it, and
// test-only controls for failures a test must cause from outside.
//
//	go run ./internal/clienttest                        # a free port
//	go run ./internal/clienttest -addr 127.0.0.1:8123   # the same port again, after a restart
//
// It prints "http://HOST:PORT" on the first line of its output once it
// accepts connections, and serves until stdin closes or it is signalled.
//
// Routes:
//
//	GET  /                      a page that imports /live.js as window.live
//	GET  /live.js               live.ClientHandler
//	     /ws                    the hub's WebSocket (refused with 503 while paused)
//	GET  /api/live?channels=a,b  SSE, many channels on one stream (refused with 503 while
//	                            paused with ?transport=sse or all)
//	GET  /api/live/{channel}    SSE; POST publishes (clients may publish, except on the state)
//	     /api/state/board       the State "board": GET {data, version}, PATCH, PUT
//	GET  /api/todos             the todos; POST adds, PATCH and DELETE /api/todos/{id},
//	                            wrapped by Hub.Hook, publishing on "todos"
//	POST /api/todos-first       adds a todo, publishing before it answers (after ?delay=)
//	POST /test/drop             closes every WebSocket and many-channel SSE connection abruptly
//	POST /test/pause, /test/resume   refuse, then accept, WebSocket connections
//	                            (?transport=sse: many-channel SSE streams; all: both)
//	POST /test/publish          ?channel=&n= publishes {"i":1..n} on channel (&from=k:
//	                            {"i":k+1..k+n})
//	POST /test/revoke           ?user=&channel= takes channel from user and calls
//	                            Hub.Reauthorize; ?user= alone bans the user and calls
//	                            Hub.Disconnect
//	POST /test/ban              ?user= bans the user without disconnecting: Identify
//	                            refuses their next connection (401), as for an expired session
//	POST /test/login            ?user= lifts the ban: the user has logged in again
//	GET  /test/attempts         ?user= how many connections the user's pages tried:
//	                            WebSocket handshakes at /ws, and streams, polls and
//	                            other GETs at /api/live
//	     /d/…                   nodes on the same broker behind a front that
//	                            drains them: POST /test/drain, /test/switch,
//	                            GET /test/front (see front)
//
// Pages are anonymous unless they set a "user" cookie; an "expires"
// cookie (Unix ms) is when their credential expires. Channels starting
// with "private:" are readable by named users only, until revoked.
//
// The todo routes obey X-Test-Delay (a duration to wait before answering)
// and X-Test-Status (a status to answer with instead, doing nothing).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-live/live"
)

const page = `<!doctype html>
<meta charset="utf-8">
<title>live.js tests</title>
<script type="module">
import * as live from "/live.js";
window.live = live;
window.liveLoaded = true;
</script>
`

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("clienttest: ")

	ln, err := listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the test runner closes stdin to stop us
		io.Copy(io.Discard, os.Stdin)
		stop()
	}()

	s, err := newServer(ctx)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: s.routes(), ConnState: s.track, ConnContext: withConn}
	srv.RegisterOnShutdown(func() {
		s.hub.Close(context.Background())
		s.zhub.Close(context.Background())
		s.front.close(context.Background())
	})
	// The proxy, on a port of its own, forwards to the server.
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s.proxy = newProxy(fmt.Sprintf("http://%s", ln.Addr()))
	psrv := &http.Server{Handler: s.proxy, ConnState: s.proxy.track, ErrorLog: log.New(io.Discard, "", 0)}
	defer psrv.Close()
	fmt.Printf("http://%s\nproxy http://%s\n", ln.Addr(), pln.Addr())

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- psrv.Serve(pln) }()
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The hubs first, so that their connections hear why they end (1001,
	// or a stream's close frame) before dropAll resets what is left.
	s.hub.Close(shutdown)
	s.zhub.Close(shutdown)
	s.front.close(shutdown)
	srv.Shutdown(shutdown)
	s.dropAll()
	s.broker.Close()
}

// listen listens on addr, retrying for a while when a restarted server
// finds its port still held by the process it replaces.
func listen(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// historySize is how many publications per channel a client can miss
// and still resume.
const historySize = 1024

type server struct {
	proxy  *proxy
	broker *live.MemoryBroker
	hub    *live.Hub
	zhub   *live.Hub // a second node on the broker, with compression
	front  *front    // nodes that drain, behind /d/
	board  *live.State

	mu        sync.Mutex // guards conns, paused, pausedSSE, revoked, banned and attempts
	conns     map[net.Conn]struct{}
	paused    bool
	pausedSSE bool
	revoked   map[string]bool // "user/channel"
	banned    map[string]bool
	attempts  map[string]int // by the "user" cookie

	todoMu sync.Mutex // guards todos and nextID
	todos  []todo
	nextID int
}

type todo struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Done  bool   `json:"done"`
}

func newServer(ctx context.Context) (*server, error) {
	s := &server{conns: make(map[net.Conn]struct{}), revoked: make(map[string]bool), banned: make(map[string]bool), attempts: make(map[string]int)}
	s.broker = live.NewMemoryBroker(&live.MemoryOptions{HistorySize: historySize})
	s.hub = live.NewHub(&live.Options{
		// Tests publish more than the history to see a reset.
		Broker: s.broker,
		Identify: func(r *http.Request) (live.Identity, error) {
			// Pages of one browser share cookies: ?as= names the user of
			// one page (in tests only: real apps use their session).
			if as := r.URL.Query().Get("as"); as != "" {
				return live.Identity{User: as, Info: map[string]string{"name": as}}, nil
			}
			c, err := r.Cookie("user")
			if err != nil {
				return live.Identity{}, nil // anonymous
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.banned[c.Value] {
				return live.Identity{}, live.Deny("banned")
			}
			id := live.Identity{User: c.Value}
			if e, err := r.Cookie("expires"); err == nil {
				if ms, err := strconv.ParseInt(e.Value, 10, 64); err == nil {
					id.Expires = time.UnixMilli(ms)
				}
			}
			return id, nil
		},
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			user := live.IdentityOf(r).User
			s.mu.Lock()
			defer s.mu.Unlock()
			if strings.HasPrefix(channel, "private:") && (user == "" || s.revoked[user+"/"+channel]) {
				return live.Deny("not yours")
			}
			return nil // the hub itself refuses publishing on the state
		},
		Presence: func(channel string) live.PresenceMode {
			switch {
			case strings.HasPrefix(channel, "room:"):
				return live.PresenceMembers
			case strings.HasPrefix(channel, "crowd:"):
				return live.PresenceCount
			}
			return live.PresenceOff
		},
		PresenceGrace: time.Second,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	s.zhub = live.NewHub(&live.Options{Broker: s.broker, Compression: true})
	s.front = newFront(s.broker)
	board, err := s.hub.State(ctx, "board", &live.StateOptions{Initial: map[string]any{"cards": map[string]any{}}})
	if err != nil {
		return nil, err
	}
	s.board = board
	return s, nil
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	})
	mux.Handle("GET /live.js", live.ClientHandler())
	mux.Handle("/ws", s.gate(s.hub.WebSocketHandler()))
	mux.Handle("/wsz", s.zhub.WebSocketHandler())             // compressed
	mux.Handle("GET /api/live", s.stream(s.hub.SSEHandler())) // ?channels=a,b: one stream for many channels
	mux.Handle("GET /api/live/{channel}", s.hub.SSEHandler())
	mux.Handle("POST /api/live/{channel}", s.hub.PublishHandler())
	mux.Handle("/api/state/board", s.board)

	hook := s.hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return "todos" }})
	mux.HandleFunc("GET /api/todos", s.listTodos)
	mux.Handle("POST /api/todos", faults(hook(http.HandlerFunc(s.addTodo))))
	mux.Handle("PATCH /api/todos/{id}", faults(hook(http.HandlerFunc(s.updateTodo))))
	mux.Handle("DELETE /api/todos/{id}", faults(hook(http.HandlerFunc(s.deleteTodo))))
	mux.HandleFunc("POST /api/todos-first", s.addTodoBroadcastFirst)

	mux.HandleFunc("POST /test/drop", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, s.dropAll())
	})
	mux.HandleFunc("POST /test/pause", func(w http.ResponseWriter, r *http.Request) { s.setPaused(r, true) })
	mux.HandleFunc("POST /test/resume", func(w http.ResponseWriter, r *http.Request) { s.setPaused(r, false) })
	mux.HandleFunc("POST /test/publish", s.publishMany)
	mux.HandleFunc("POST /test/revoke", s.revoke)
	mux.HandleFunc("POST /test/ban", func(w http.ResponseWriter, r *http.Request) { s.setBanned(r.URL.Query().Get("user"), true) })
	mux.HandleFunc("POST /test/login", func(w http.ResponseWriter, r *http.Request) { s.setBanned(r.URL.Query().Get("user"), false) })
	mux.HandleFunc("GET /test/attempts", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := s.attempts[r.URL.Query().Get("user")]
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, n)
	})
	mux.Handle("/d/", s.front)
	mux.HandleFunc("POST /test/drain", s.front.drain)
	mux.HandleFunc("POST /test/switch", func(w http.ResponseWriter, r *http.Request) { s.front.swap() })
	mux.HandleFunc("GET /test/front", s.front.state)
	s.mountInspector(mux)
	mux.HandleFunc("POST /test/proxy", func(w http.ResponseWriter, r *http.Request) { s.proxy.setMode(w, r) })
	return mux
}

// revoke takes a channel from a user, or bans the user, and tells the hub.
func (s *server) revoke(w http.ResponseWriter, r *http.Request) {
	user, channel := r.URL.Query().Get("user"), r.URL.Query().Get("channel")
	s.mu.Lock()
	if channel != "" {
		s.revoked[user+"/"+channel] = true
	} else {
		s.banned[user] = true
	}
	s.mu.Unlock()
	var err error
	if channel != "" {
		err = s.hub.Reauthorize(r.Context(), channel, user)
	} else {
		err = s.hub.Disconnect(r.Context(), user)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func (s *server) setBanned(user string, banned bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if banned {
		s.banned[user] = true
	} else {
		delete(s.banned, user)
	}
}

// attempt counts a connection attempt of r's user.
func (s *server) attempt(r *http.Request) {
	c, err := r.Cookie("user")
	if err != nil {
		return
	}
	s.mu.Lock()
	s.attempts[c.Value]++
	s.mu.Unlock()
}

// track records hijacked connections, the WebSockets (and SSE streams,
// which the hub may hijack too), for dropAll.
func (s *server) track(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch state {
	case http.StateHijacked:
		s.conns[c] = struct{}{}
	case http.StateIdle, http.StateClosed: // a stream that ended, its connection kept or closed
		delete(s.conns, c)
	}
}

type connKey struct{}

// withConn keeps each request's connection in its context, for stream.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// stream serves many-channel SSE requests: refused while SSE is paused,
// and tracked while they stream, so that dropAll closes them too.
func (s *server) stream(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.attempt(r)
		c, _ := r.Context().Value(connKey{}).(net.Conn)
		s.mu.Lock()
		paused := s.pausedSSE
		if !paused && c != nil {
			s.conns[c] = struct{}{}
		}
		s.mu.Unlock()
		if paused {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "paused", "message": "paused by the test"})
			return
		}
		next.ServeHTTP(w, r) // the hub may hijack c; track forgets it once closed or idle

	})
}

// dropAll closes every WebSocket's and SSE stream's TCP connection without
// a closing handshake, as a network failure would, and returns how many.
func (s *server) dropAll() int {
	s.mu.Lock()
	conns := s.conns
	s.conns = make(map[net.Conn]struct{})
	s.mu.Unlock()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, not a graceful FIN
		}
		c.Close()
	}
	return len(conns)
}

// setPaused pauses or resumes the transports r names with ?transport=
// (ws, the default; sse; all).
func (s *server) setPaused(r *http.Request, p bool) {
	t := r.URL.Query().Get("transport")
	s.mu.Lock()
	if t == "" || t == "ws" || t == "all" {
		s.paused = p
	}
	if t == "sse" || t == "all" {
		s.pausedSSE = p
	}
	s.mu.Unlock()
}

// gate refuses WebSocket connections while the server is paused.
func (s *server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.attempt(r)
		s.mu.Lock()
		paused := s.paused
		s.mu.Unlock()
		if paused {
			http.Error(w, "paused by the test", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) publishMany(w http.ResponseWriter, r *http.Request) {
	channel := r.URL.Query().Get("channel")
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 1 {
		http.Error(w, "need ?n=", http.StatusBadRequest)
		return
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))   // numbering starts after it
	padding, _ := strconv.Atoi(r.URL.Query().Get("pad")) // bytes of padding in each
	pad := strings.Repeat("x", min(max(0, padding), 64<<10))
	var last live.Position
	for i := 1; i <= n; i++ {
		var v any = map[string]int{"i": from + i}
		if pad != "" {
			v = map[string]any{"i": from + i, "pad": pad}
		}
		if last, err = s.hub.Publish(r.Context(), channel, v); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"cursor": last.String()})
}

// faults makes a request wait for X-Test-Delay, or fail with
// X-Test-Status without reaching the handler.
func faults(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.Header.Get("X-Test-Delay")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if code, err := strconv.Atoi(r.Header.Get("X-Test-Status")); err == nil {
			writeJSON(w, code, map[string]string{"error": "injected", "message": "X-Test-Status"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *server) listTodos(w http.ResponseWriter, r *http.Request) {
	s.todoMu.Lock()
	list := append([]todo{}, s.todos...)
	s.todoMu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, list)
}

func (s *server) create(r *http.Request) (todo, error) {
	var t todo
	if err := json.NewDecoder(r.Body).Decode(&t); err != nil {
		return t, err
	}
	s.todoMu.Lock()
	defer s.todoMu.Unlock()
	s.nextID++
	t.ID = "t" + strconv.Itoa(s.nextID)
	s.todos = append([]todo{t}, s.todos...)
	return t, nil
}

func (s *server) addTodo(w http.ResponseWriter, r *http.Request) {
	t, err := s.create(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_json", "message": err.Error()})
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

// addTodoBroadcastFirst publishes the add, with the request's mutation id,
// before answering, and answers only after ?delay=: the broadcast reaches
// the client first, the opposite of Hub.Hook's order.
func (s *server) addTodoBroadcastFirst(w http.ResponseWriter, r *http.Request) {
	t, err := s.create(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_json", "message": err.Error()})
		return
	}
	item, _ := json.Marshal(t)
	mid := r.Header.Get(live.MutationIDHeader)
	if _, err := s.hub.Publish(r.Context(), "todos", live.ListUpdate{Type: "add", Item: item, MutationID: mid}); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "publish", "message": err.Error()})
		return
	}
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
		time.Sleep(d)
	}
	w.Header().Set(live.MutationIDHeader, mid)
	writeJSON(w, http.StatusCreated, t)
}

func (s *server) updateTodo(w http.ResponseWriter, r *http.Request) {
	var patch map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&patch); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_json", "message": err.Error()})
		return
	}
	s.todoMu.Lock()
	defer s.todoMu.Unlock()
	for i := range s.todos {
		t := &s.todos[i]
		if t.ID != r.PathValue("id") {
			continue
		}
		if v, ok := patch["title"]; ok {
			json.Unmarshal(v, &t.Title)
		}
		if v, ok := patch["done"]; ok {
			json.Unmarshal(v, &t.Done)
		}
		writeJSON(w, http.StatusOK, *t)
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "no such todo"})
}

func (s *server) deleteTodo(w http.ResponseWriter, r *http.Request) {
	s.todoMu.Lock()
	defer s.todoMu.Unlock()
	for i, t := range s.todos {
		if t.ID == r.PathValue("id") {
			s.todos = append(s.todos[:i], s.todos[i+1:]...)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "no such todo"})
}
