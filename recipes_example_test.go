package live_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// The recipes of the README. Each recipe's Go block there is checked
// against the example it names by TestReadmeRecipes, at the end.

// userFromSession stands for the application's own session lookup: here a
// cookie "session" holding the user's name.
func userFromSession(r *http.Request) string {
	c, err := r.Cookie("session")
	if err != nil {
		return ""
	}
	return c.Value
}

// subscribeAs opens a WebSocket to the hub at url as user and subscribes to
// channel, returning once the hub has acknowledged the subscription.
func subscribeAs(ctx context.Context, url, user, channel string) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), &websocket.DialOptions{
		HTTPHeader: http.Header{"Cookie": {"session=" + user}},
	})
	if err != nil {
		return nil, err
	}
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"`+channel+`"}`))
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return nil, err
		}
		if strings.Contains(string(msg), `"type":"subscribed"`) {
			return c, nil
		}
	}
}

// readUntilFrame reads frames from c until one contains s.
func readUntilFrame(ctx context.Context, c *websocket.Conn, s string) error {
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if strings.Contains(string(msg), s) {
			return nil
		}
	}
}

// Remove a user: refuse them from now on, then end every connection they
// have open, on every node sharing the broker. Disconnect returns nil only
// once every node has closed them, so nothing published afterwards reaches
// them.
func Example_removeUser() {
	var mu sync.Mutex
	banned := map[string]bool{} // the application's own record

	hub := live.NewHub(&live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			user := userFromSession(r)
			mu.Lock()
			defer mu.Unlock()
			if banned[user] {
				return live.Identity{}, errors.New("banned") // 401
			}
			return live.Identity{User: user}, nil
		},
	})
	defer hub.Close(context.Background())

	removeUser := func(ctx context.Context, user string) error {
		mu.Lock()
		banned[user] = true // first, so that a reconnection is refused
		mu.Unlock()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return hub.Disconnect(ctx, user) // an error names the nodes that did not confirm
	}

	srv := httptest.NewServer(hub)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := subscribeAs(ctx, srv.URL+"/", "mallory", "chat:lobby")
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()

	if err := removeUser(ctx, "mallory"); err != nil {
		panic(err)
	}
	_, _, err = c.Read(ctx)
	fmt.Println("closed with", websocket.CloseStatus(err))
	_, err = subscribeAs(ctx, srv.URL+"/", "mallory", "chat:lobby")
	fmt.Println("back:", err)
	// Output:
	// closed with StatusCode(4001)
	// back: failed to WebSocket dial: expected handshake response status code 101 but got 401
}

// Who is viewing this item: opt the item's channel into presence. Each
// page showing the item subscribes to it (in the browser,
// live.presence("item:42", …) or React's usePresence("item:42") shows the
// avatars); the server asks Hub.Members, which counts every node sharing
// the broker.
func Example_whoIsViewing() {
	hub := live.NewHub(&live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			user := userFromSession(r)
			return live.Identity{User: user, Info: map[string]string{"name": user}}, nil
		},
		Presence: func(channel string) live.PresenceMode {
			if strings.HasPrefix(channel, "item:") {
				return live.PresenceMembers
			}
			return live.PresenceOff
		},
	})
	defer hub.Close(context.Background())

	srv := httptest.NewServer(hub)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var tabs []*websocket.Conn
	for _, user := range []string{"ann", "ben", "ann"} { // Ann has two tabs open
		c, err := subscribeAs(ctx, srv.URL+"/", user, "item:42")
		if err != nil {
			panic(err)
		}
		defer c.CloseNow()
		tabs = append(tabs, c)
	}
	// Ben's page is told of Ann's second tab once the hub counts it.
	if err := readUntilFrame(ctx, tabs[1], `"conns":2`); err != nil {
		panic(err)
	}

	members, n, err := hub.Members(ctx, "item:42")
	if err != nil {
		panic(err)
	}
	for _, m := range members {
		fmt.Printf("%s %s, %d tab(s)\n", m.User, m.Info, m.Conns)
	}
	fmt.Println(n, "viewing")
	// Output:
	// ann {"name":"ann"}, 2 tab(s)
	// ben {"name":"ben"}, 1 tab(s)
	// 2 viewing
}

// A create that is safe to retry: the client names the request with an
// Idempotency-Key (or live.js's Live-Mutation-Id) and sends it again after a
// timeout or a dropped connection. The hooked handler runs once; the retry
// gets the first response, marked Idempotent-Replayed, and publishes nothing
// again. Identify names the user, so only the user who made the request gets
// its response back; with several nodes, give HookOptions.Idempotency the
// broker module's store so a retry landing on another node is recognised.
func Example_safeRetry() {
	hub := live.NewHub(&live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: userFromSession(r)}, nil
		},
	})
	defer hub.Close(context.Background())

	var mu sync.Mutex
	created := 0
	createNote := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		created++
		id := created
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":"n%d"}`, id)
	}
	notes := hub.Hook(live.HookOptions{
		Channel:     func(*http.Request) string { return "notes" },
		RetryWindow: 10 * time.Minute, // the default
	})
	mux := http.NewServeMux()
	mux.Handle("POST /api/notes", notes(http.HandlerFunc(createNote)))

	srv := httptest.NewServer(mux)
	defer srv.Close()
	for range 2 { // the first attempt, and its retry
		req, _ := http.NewRequest("POST", srv.URL+"/api/notes", strings.NewReader(`{"text":"hi"}`))
		req.Header.Set("Cookie", "session=ann")
		req.Header.Set(live.IdempotencyKeyHeader, "3f1c2a") // the client: the same key on every attempt
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s replayed=%q\n", resp.StatusCode, body, resp.Header.Get("Idempotent-Replayed"))
	}
	fmt.Println("created", created)
	// Output:
	// 201 {"id":"n1"} replayed=""
	// 201 {"id":"n1"} replayed="true"
	// created 1
}

// Render the page, then subscribe without a gap: the server renders a
// State's value with its version, and the page resumes the channel from
// that version, so a change made between the render and the subscription
// arrives as the next delta, never lost and never applied twice.
func Example_renderThenSubscribe() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	ctx := context.Background()

	board, err := hub.State(ctx, "board", &live.StateOptions{Initial: map[string]string{"title": "Launch"}})
	if err != nil {
		panic(err)
	}
	page := template.Must(template.New("board").Parse(
		`<script id="board" type="application/json">{{.}}</script>` + "\n"))

	mux := http.NewServeMux()
	mux.Handle("GET /live/", hub)
	mux.Handle("GET /api/board", board) // {"data":…,"version":N}, for refetches
	mux.HandleFunc("GET /board", func(w http.ResponseWriter, r *http.Request) {
		data, version := board.Get() // one value and the version it is at
		page.Execute(w, map[string]any{"data": data, "version": version})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/board")
	if err != nil {
		panic(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(html))

	// Someone edits the board after the page was rendered…
	board.Apply(ctx, map[string]string{"title": "Launch v2"})

	// …and the page subscribes from the version it was rendered at.
	stream, err := http.Get(srv.URL + "/live/board?version=0")
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()
	events := bufio.NewReader(stream.Body)
	for {
		line, _ := events.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			var delta live.Delta
			json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &delta)
			fmt.Printf("version %d: %s %s %s\n", delta.Version, delta.Changes[0].Op, delta.Changes[0].Path, delta.Changes[0].Value)
			break
		}
	}
	// Output:
	// <script id="board" type="application/json">{"data":{"title":"Launch"},"version":0}</script>
	// version 1: update title "Launch v2"
}

func Example_htmxFeed() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	var (
		mu   sync.Mutex
		rows []string // the application's data
	)

	page := template.Must(template.New("feed").Parse(`<div hx-ext="sse" sse-connect="/live/feed?cursor={{.Cursor}}&connection={{.Conn}}">
<ul sse-swap="row" hx-swap="beforeend">{{range .Rows}}<li>{{.}}</li>{{end}}</ul>
<form hx-post="/rows" hx-headers='{"Live-Connection":"{{.Conn}}"}' hx-target="previous ul" hx-swap="beforeend">…</form>
</div>`))
	row := template.Must(template.New("row").Parse(`<li>{{.}}</li>`))

	mux := http.NewServeMux()
	mux.Handle("GET /live/", hub)
	mux.HandleFunc("GET /feed", func(w http.ResponseWriter, r *http.Request) {
		cursor, err := hub.Head(r.Context(), "feed") // before reading what the page shows
		if err != nil {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		shown := append([]string(nil), rows...)
		mu.Unlock()
		page.Execute(w, map[string]any{"Cursor": cursor, "Conn": live.NewConnectionID(), "Rows": shown})
	})
	// A new row goes to every other page as the fragment its poster gets.
	mux.Handle("POST /rows", hub.Hook(live.HookOptions{
		ToOthers: true, // not back to the page that posted it (its Live-Connection)
		Event: func(r *http.Request, status int, body []byte) []live.Event {
			return []live.Event{{Channel: "feed", Data: live.Text{Event: "row", Data: string(body)}}}
		},
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		text := r.FormValue("text")
		mu.Lock()
		rows = append(rows, text)
		mu.Unlock()
		row.Execute(w, text)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/feed")
	if err != nil {
		panic(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`sse-connect="([^"]*)"`).FindSubmatch(html)
	streamURL := string(m[1])
	conn := regexp.MustCompile(`connection=([\w-]+)`).FindSubmatch(html)[1]

	// Someone publishes after the page was rendered…
	hub.Publish(context.Background(), "feed", live.Text{Event: "row", Data: "<li>first</li>"})

	// …and the page's stream starts from the cursor it was rendered at.
	stream, err := http.Get(srv.URL + streamURL)
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()

	post := func(text, from string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/rows", strings.NewReader("text="+text))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if from != "" {
			req.Header.Set(live.ConnectionHeader, from) // what hx-headers sends
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
	}
	post("mine", string(conn)) // the page's own: it swapped the response in
	post("theirs", "")         // another page's

	events := bufio.NewReader(stream.Body)
	for n := 0; n < 2; {
		line, _ := events.ReadString('\n')
		switch {
		case strings.HasPrefix(line, "event: "):
			fmt.Print(line)
		case strings.HasPrefix(line, "data: "):
			fmt.Print(line)
			n++
		}
	}
	// Output:
	// event: row
	// data: <li>first</li>
	// event: row
	// data: <li>theirs</li>
}

// TestReadmeRecipes checks that the Go code of each README recipe is the
// example it names: every line of the README's block, in order, is a line
// of the example function (indentation aside), so the README shows code
// that compiles and runs.
func TestReadmeRecipes(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	source, err := os.ReadFile("recipes_example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)<!-- recipe: (Example\\w+) -->\n```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 4 {
		t.Fatalf("README has %d recipe blocks, want at least 4", len(blocks))
	}
	for _, b := range blocks {
		name := string(b[1])
		start := bytes.Index(source, []byte("\nfunc "+name+"() {\n"))
		if start < 0 {
			t.Errorf("README recipe names %s, which recipes_example_test.go does not define", name)
			continue
		}
		end := bytes.Index(source[start:], []byte("\n}\n"))
		body := recipeLines(source[start : start+end])
		i := 0
		for _, want := range recipeLines(b[2]) {
			for i < len(body) && body[i] != want {
				i++
			}
			if i == len(body) {
				t.Errorf("README recipe %s: line %q is not in the example (in this order)", name, want)
				break
			}
			i++
		}
	}
}

// recipeLines returns the non-blank lines of b, without their indentation.
func recipeLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
