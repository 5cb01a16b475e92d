package livehtml_test

import (
	"context"
	"fmt"
	"html/template"
	"net/http"

	"github.com/go-live/live"
	"github.com/go-live/live/livehtml"
)

var rows = template.Must(template.New("").Parse(
	`{{define "row"}}<li id="row-{{.ID}}">{{.Title}}</li>{{end}}` +
		`{{define "watching"}}<span id="watching">{{.Count}} watching</span>{{end}}`))

// An htmx 2 page swaps a named event in with sse-swap:
//
//	<div hx-ext="sse" sse-connect="/live/feed?cursor={{.Cursor}}" sse-close="refused">
//	  <ul id="rows" sse-swap="row" hx-swap="beforeend">…</ul>
//	</div>
func ExamplePublish() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	item := struct {
		ID    int
		Title string
	}{7, "<b>escaped</b>"}
	_, err := livehtml.Publish(context.Background(), hub, "feed",
		livehtml.Fragment{Event: "row", Content: livehtml.Template(rows, "row", item)})
	fmt.Println(err)

	// What the page's stream sends, after the id line:
	t, _ := livehtml.Fragment{Event: "row", Content: livehtml.Template(rows, "row", item)}.Text(context.Background())
	fmt.Printf("event: %s\ndata: %s\n", t.Event, t.Data)
	// Output:
	// <nil>
	// event: row
	// data: <li id="row-7">&lt;b&gt;escaped&lt;/b&gt;</li>
}

// A Turbo page streams the channel with
//
//	<turbo-stream-source src="/live/feed?cursor={{.Cursor}}"></turbo-stream-source>
func ExampleTurboStream() {
	m := livehtml.TurboStream{
		Action:  "append",
		Target:  "rows",
		Content: livehtml.Template(rows, "row", map[string]any{"ID": 8, "Title": "new"}),
	}
	t, _ := m.Text(context.Background())
	fmt.Printf("%q\n%s\n", t.Event, t.Data)

	t, _ = livehtml.TurboStream{Action: "remove", Target: "row-8"}.Text(context.Background())
	fmt.Println(t.Data)
	// Output:
	// ""
	// <turbo-stream action="append" target="rows"><template><li id="row-8">new</li></template></turbo-stream>
	// <turbo-stream action="remove" target="row-8"></turbo-stream>
}

// A Datastar page streams the channel with
//
//	<div data-init="@get('/live/feed?cursor={{.Cursor}}')"></div>
func ExamplePatchElements() {
	m := livehtml.PatchElements{
		Selector: "#rows",
		Mode:     "append",
		Elements: livehtml.Template(rows, "row", map[string]any{"ID": 9, "Title": "nine"}),
	}
	t, _ := m.Text(context.Background())
	fmt.Printf("event: %s\n", t.Event)
	fmt.Println(t.Data) // each line becomes a "data: " line
	// Output:
	// event: datastar-patch-elements
	// selector #rows
	// mode append
	// elements <li id="row-9">nine</li>
}

func ExamplePatchSignals() {
	t, _ := livehtml.PatchSignals{Signals: map[string]int{"count": 3}}.Text(context.Background())
	fmt.Printf("event: %s\n%s\n", t.Event, t.Data)
	// Output:
	// event: datastar-patch-signals
	// signals {"count":3}
}

// The page that posts swaps the response in itself; the Hook sends it to
// the other pages. The page names its stream and its writes alike:
//
//	<body hx-headers='{"Live-Connection":"{{.ID}}"}'>
//	<div hx-ext="sse" sse-connect="/live/feed?cursor={{.Cursor}}&connection={{.ID}}">
//	  <ul id="rows" sse-swap="row" hx-swap="beforeend">…</ul>
//	</div>
//	<form hx-post="/rows" hx-target="#rows" hx-swap="beforeend">…</form>
//
// with ID from live.NewConnectionID and Cursor from Hub.Head, per page
// view.
func ExampleHook() {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())

	addRow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// … store the row, then answer with its HTML:
		rows.ExecuteTemplate(w, "row", map[string]any{"ID": 10, "Title": r.FormValue("title")})
	})
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	mux.Handle("POST /rows", hub.Hook(live.HookOptions{
		Event:    livehtml.Hook(func(*http.Request) string { return "feed" }, livehtml.Fragment{Event: "row"}),
		ToOthers: true, // not to the page whose Live-Connection names its stream
	})(addRow))
	// For Turbo: livehtml.TurboStream{Action: "append", Target: "rows"};
	// for Datastar: livehtml.PatchElements{Selector: "#rows", Mode: "append"}.
}

// Resets and presence in each page's terms: here a Turbo page refreshes
// when its stream cannot fill a gap, and shows who is watching.
func ExampleResetText() {
	hub := live.NewHub(&live.Options{
		ResetText: livehtml.ResetText(livehtml.TurboStream{Action: "refresh"}),
		Presence:  func(string) live.PresenceMode { return live.PresenceCount },
		PresenceText: livehtml.PresenceText(rows, "watching",
			livehtml.TurboStream{Action: "replace", Target: "watching"}),
	})
	defer hub.Close(context.Background())
	fmt.Println(livehtml.ResetText(livehtml.TurboStream{Action: "refresh"})("feed").Data)
	// Output:
	// <turbo-stream action="refresh"></turbo-stream>
}

// An htmx page shows "N watching" with sse-swap:
//
//	<span id="watching" sse-swap="watching">…</span>
func ExamplePresenceText() {
	render := livehtml.PresenceText(rows, "watching", livehtml.Fragment{Event: "watching"})
	t := render("feed", nil, 3)
	fmt.Printf("event: %s\ndata: %s\n", t.Event, t.Data)
	// Output:
	// event: watching
	// data: <span id="watching">3 watching</span>
}
