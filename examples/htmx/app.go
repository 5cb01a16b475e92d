package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/livehtml"
)

// The channels the pages stream. Each carries HTML for htmx 2 as named
// events (sse-swap="…"); activityTurbo carries the feed as Turbo Streams.
const (
	metricsChannel       = "metrics"
	activityChannel      = "activity"
	activityTurboChannel = "activity.turbo"
	boardChannel         = "board"
	boardState           = "board.state" // the board's value, a live.State
)

//go:embed page.html
var pageHTML string

//go:embed static
var static embed.FS

var page = template.Must(template.New("").Funcs(template.FuncMap{
	"columns": func() []column { return columns },
}).Parse(pageHTML))

// app is one node of the dashboard: a hub, the board's state, and the
// goroutine that moves the metrics.
type app struct {
	hub     *live.Hub
	broker  live.Broker
	board   *live.State
	handler http.Handler

	cancel context.CancelFunc
	done   chan struct{}
}

// newApp makes a node on broker whose metrics move every tick (never
// with 0). ctx bounds the start only; call Close to stop.
func newApp(ctx context.Context, broker live.Broker, tick time.Duration) (*app, error) {
	a := &app{broker: broker, done: make(chan struct{})}
	a.hub = live.NewHub(&live.Options{
		Broker:   broker,
		Identify: identify,
		// Pages never publish: every change goes through the app's routes.
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if op == live.OpPublish || channel == boardState {
				return live.ErrForbidden
			}
			return nil
		},
		Presence: func(channel string) live.PresenceMode {
			if channel == boardChannel {
				return live.PresenceMembers
			}
			return live.PresenceOff
		},
		// "3 watching: ann bob cy", rendered for the board's streams.
		PresenceText: livehtml.PresenceText(page, "watching", livehtml.Fragment{Event: "watching"}),
		// A page that missed more than history holds reloads what it
		// shows: htmx pages on the hub's reset event (hx-trigger="sse:reset"),
		// the Turbo page on a refresh.
		ResetText: func(channel string) live.Text {
			if channel == activityTurboChannel {
				return turboRefresh
			}
			return live.Text{}
		},
	})
	board, err := a.hub.State(ctx, boardState, &live.StateOptions{Initial: initialBoard})
	if err != nil {
		a.hub.Close(context.Background())
		return nil, err
	}
	a.board = board
	a.handler = a.routes()

	var bg context.Context
	bg, a.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(a.done)
		if tick > 0 {
			a.moveMetrics(bg, tick)
		}
	}()
	return a, nil
}

var turboRefresh = livehtml.MustText(livehtml.TurboStream{Action: "refresh"})

// Close stops the metrics and closes the hub, ending every stream.
func (a *app) Close(ctx context.Context) error {
	a.cancel()
	<-a.done
	return a.hub.Close(ctx)
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.FileServerFS(static))
	mux.Handle("GET /live/{channel}", a.hub.SSEHandler())
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /turbo", a.turbo)
	mux.HandleFunc("GET /activity", a.feedItems)
	mux.HandleFunc("GET /board", a.boardHTML)

	// What a POST answers, the author's page swaps in; the hook publishes
	// the same HTML to every other page (ToOthers skips the stream named
	// by the request's Live-Connection header, which hx-headers sends).
	htmxItem := livehtml.Hook(func(*http.Request) string { return activityChannel }, livehtml.Fragment{Event: "activity"})
	turboItem := livehtml.Hook(func(*http.Request) string { return activityTurboChannel },
		livehtml.TurboStream{Action: "prepend", Target: "feed"})
	mux.Handle("POST /activity", a.hub.Hook(live.HookOptions{
		Event: func(r *http.Request, status int, body []byte) []live.Event {
			return append(htmxItem(r, status, body), turboItem(r, status, body)...)
		},
		ToOthers: true,
	})(http.HandlerFunc(a.addItem)))
	mux.Handle("POST /board/{card}", a.hub.Hook(live.HookOptions{
		Event:    livehtml.Hook(func(*http.Request) string { return boardChannel }, livehtml.Fragment{Event: "board"}),
		ToOthers: true,
	})(http.HandlerFunc(a.moveCard)))
	return mux
}

// view is what the pages render.
type view struct {
	Live    livehtml.Page // the position the page shows, and its connection
	Visitor string
	Metrics metrics
	Items   []template.HTML
	Board   boardView
	Turbo   livehtml.Page // the Turbo page's stream
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	visitor := welcome(w, r)
	ctx := r.Context()
	// Each stream starts where what the page shows was read: the head of
	// its channel, read first. One connection id names all three streams
	// and the page's writes.
	metricsPage, err := livehtml.NewPage(ctx, a.hub, metricsChannel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	items, activityCursor, err := a.recent(ctx, activityChannel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	boardHead, err := a.hub.Head(ctx, boardChannel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	v := view{
		Live:    metricsPage,
		Visitor: visitor,
		Metrics: metricsAt(time.Now()),
		Items:   items,
		Board:   a.boardView(),
	}
	render(w, "index", struct {
		view
		MetricsQuery, ActivityQuery, BoardQuery template.URL
	}{v,
		metricsPage.Query(),
		livehtml.Page{Cursor: activityCursor, Connection: metricsPage.Connection}.Query(),
		livehtml.Page{Cursor: boardHead.String(), Connection: metricsPage.Connection}.Query(),
	})
}

func (a *app) turbo(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// The Turbo stream's head first, then the feed: an item published in
	// between is shown and streamed, and Turbo's prepend of an element
	// with the id of one already there replaces it.
	p, err := livehtml.NewPage(ctx, a.hub, activityTurboChannel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	items, _, err := a.recent(ctx, activityChannel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	render(w, "turbo", view{Turbo: p, Items: items})
}

func render(w http.ResponseWriter, name string, data any) {
	var b bytes.Buffer
	if err := page.ExecuteTemplate(&b, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b.Bytes())
}

// identify names a visitor by the cookie welcome sets.
func identify(r *http.Request) (live.Identity, error) {
	if c, err := r.Cookie("visitor"); err == nil && validName(c.Value) {
		return live.Identity{User: c.Value}, nil
	}
	return live.Identity{}, nil
}

// welcome returns the visitor's name, and gives a new visitor one, in a
// cookie.
func welcome(w http.ResponseWriter, r *http.Request) string {
	if id, _ := identify(r); id.User != "" {
		return id.User
	}
	var b [3]byte
	rand.Read(b[:])
	name := "visitor-" + hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: "visitor", Value: name, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	return name
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ---- activity ----

// feedLength is how many items the feed shows.
const feedLength = 20

// recent returns the latest items of the feed, newest first, and the
// position they were read at. The feed is the activity channel's
// history: every node renders the same one, with no copy of its own.
func (a *app) recent(ctx context.Context, channel string) ([]template.HTML, string, error) {
	head, err := a.hub.Head(ctx, channel)
	if err != nil {
		return nil, "", err
	}
	h, ok := a.broker.(live.History)
	if !ok || head.Seq == 0 {
		return nil, head.String(), nil
	}
	from := head
	from.Seq -= min(head.Seq, feedLength)
	msgs, err := h.Since(ctx, channel, from)
	if errors.Is(err, live.ErrGone) {
		return nil, head.String(), nil // older than history: an empty feed
	}
	if err != nil {
		return nil, "", err
	}
	items := make([]template.HTML, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		var s string
		if json.Unmarshal(msgs[i].Data, &s) == nil {
			// HTML this app rendered with html/template and published.
			items = append(items, template.HTML(s))
		}
	}
	cursor := head
	if n := len(msgs); n > 0 {
		cursor = msgs[n-1].Pos
	}
	return items, cursor.String(), nil
}

// feedItems answers the feed's items, for a page that missed more than
// history holds (hx-trigger="sse:reset").
func (a *app) feedItems(w http.ResponseWriter, r *http.Request) {
	items, _, err := a.recent(r.Context(), activityChannel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	render(w, "items", items)
}

type item struct {
	ID, Who, What string
	At            time.Time
}

// addItem adds what the form posted to the feed and answers the item's
// HTML, which the hook publishes to the other pages.
func (a *app) addItem(w http.ResponseWriter, r *http.Request) {
	what := strings.TrimSpace(r.FormValue("what"))
	if what == "" || len(what) > 200 {
		http.Error(w, "say something, in at most 200 bytes", http.StatusBadRequest)
		return
	}
	who, _ := identify(r)
	if who.User == "" {
		who.User = "someone"
	}
	var id [6]byte
	rand.Read(id[:])
	render(w, "item", item{ID: hex.EncodeToString(id[:]), Who: who.User, What: what, At: time.Now()})
}

// ---- board ----

type column struct{ ID, Name string }

var columns = []column{{"todo", "To do"}, {"doing", "Doing"}, {"done", "Done"}}

// initialBoard maps each card to its text and column.
var initialBoard = map[string]card{
	"c1": {"Write release notes", "todo"},
	"c2": {"Update status page", "todo"},
	"c3": {"Load test", "doing"},
	"c4": {"Freeze the API", "done"},
}

type card struct {
	Text   string `json:"text"`
	Column string `json:"column"`
}

type boardView map[string][]cardView // by column

type cardView struct{ ID, Text, Next string }

func (a *app) boardView() boardView {
	data, _ := a.board.Get()
	var cards map[string]card
	json.Unmarshal(data, &cards)
	v := boardView{}
	for _, id := range slices.Sorted(maps.Keys(cards)) {
		c := cards[id]
		v[c.Column] = append(v[c.Column], cardView{ID: id, Text: c.Text, Next: next(c.Column)})
	}
	return v
}

func next(col string) string {
	for i, c := range columns {
		if c.ID == col {
			return columns[(i+1)%len(columns)].ID
		}
	}
	return columns[0].ID
}

func (a *app) boardHTML(w http.ResponseWriter, r *http.Request) {
	render(w, "board", a.boardView())
}

// moveCard moves a card to the column posted, and answers the board,
// which the hook publishes to the other pages.
func (a *app) moveCard(w http.ResponseWriter, r *http.Request) {
	id, to := r.PathValue("card"), r.FormValue("to")
	if _, ok := initialBoard[id]; !ok || !slices.ContainsFunc(columns, func(c column) bool { return c.ID == to }) {
		http.Error(w, "no such card or column", http.StatusBadRequest)
		return
	}
	if _, err := a.board.Apply(r.Context(), map[string]any{id: map[string]string{"column": to}}); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	render(w, "board", a.boardView())
}

// ---- metrics ----

// metrics are the dashboard's numbers at a second. They are a function
// of the time, so every node renders and publishes the same ones.
type metrics struct {
	ActiveUsers, RequestsPerSecond, P95LatencyMs int
	ErrorRate                                    float64
	At                                           time.Time
}

func metricsAt(t time.Time) metrics {
	s := float64(t.Unix())
	noise := func(salt, n uint64) float64 { return float64((uint64(t.Unix())*2654435761 + salt) % n) }
	return metrics{
		ActiveUsers:       int(1280 + 90*math.Sin(s/60) + noise(1, 21)),
		RequestsPerSecond: int(340 + 60*math.Sin(s/9) + noise(2, 31)),
		P95LatencyMs:      int(180 + 25*math.Sin(s/13) + noise(3, 11)),
		ErrorRate:         math.Round((0.4+0.3*math.Sin(s/17)+noise(4, 10)/100)*100) / 100,
		At:                t.Truncate(time.Second),
	}
}

// moveMetrics publishes the metrics every tick until ctx ends. A node
// skips a tick when another published since its last look, so nodes
// sharing a broker publish about once a tick between them.
func (a *app) moveMetrics(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var seen live.Position
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		head, err := a.hub.Head(ctx, metricsChannel)
		if err != nil {
			continue
		}
		if head != seen && seen != (live.Position{}) {
			seen = head // another node's: let it go on
			continue
		}
		pos, err := livehtml.Publish(ctx, a.hub, metricsChannel, livehtml.Fragment{
			Event: "metrics", Content: livehtml.Template(page, "metrics", metricsAt(time.Now())),
		})
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, live.ErrClosed) {
				slog.Warn("htmx: publishing metrics", "err", err)
			}
			continue
		}
		seen = pos
	}
}
