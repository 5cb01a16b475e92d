package livehtml_test

import (
	"context"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/internal/sse"
	"github.com/go-live/live/livehtml"
)

// stream reads a one-channel SSE response as the bytes of its events, each
// up to and including the blank line that ends it, heartbeats left out.
type stream struct{ *servertest.RawStream }

// open requests url with header and fails the test unless it answers 200
// with an event stream.
func open(t *testing.T, url string, header http.Header) *stream {
	t.Helper()
	return &stream{servertest.OpenRawStream(t, url, header)}
}

// next returns the bytes of the next event that is not a bare id line
// (the hub's acknowledgement of the subscription).
func (s *stream) next(t *testing.T) string {
	t.Helper()
	for {
		e := s.Next(t)
		if strings.HasPrefix(e, "id: ") && strings.Count(e, "\n") == 2 {
			continue
		}
		return e
	}
}

// parse reads one event's bytes as EventSource would.
func parse(t *testing.T, raw string) sse.Event {
	t.Helper()
	ev, err := sse.NewReader(strings.NewReader(raw)).Next()
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return ev
}

// serve mounts hub at /live/ on a test server, with the user named by the
// X-User header (Identify), and returns the server's URL.
func serve(t *testing.T, opts *live.Options, routes func(mux *http.ServeMux, hub *live.Hub)) (*live.Hub, string) {
	t.Helper()
	if opts == nil {
		opts = &live.Options{}
	}
	opts.Identify = func(r *http.Request) (live.Identity, error) {
		return live.Identity{User: r.Header.Get("X-User")}, nil
	}
	hub := live.NewHub(opts)
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	if routes != nil {
		routes(mux, hub)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hub.Close(ctx)
		srv.Close()
	})
	return hub, srv.URL
}

var page = template.Must(template.New("page").Parse(
	`{{define "row"}}<li id="row-{{.ID}}">{{.Title}}</li>{{end}}` +
		`{{define "rows"}}<ul id="rows">
{{range .}}<li>{{.}}</li>
{{end}}</ul>{{end}}` +
		`{{define "watching"}}<span id="watching">{{.Count}} watching{{range .Members}} {{.User}}{{with .Info}}({{.name}}){{end}}{{end}}</span>{{end}}`))

type row struct {
	ID    int
	Title string
}

// TestWire publishes each kind of message and checks the bytes a page's
// stream gets, and what EventSource makes of them.
func TestWire(t *testing.T) {
	hub, url := serve(t, nil, nil)
	ctx := context.Background()
	s := open(t, url+"/live/feed", nil)
	xss := row{7, `<script>alert(1)</script> & "x"`}
	cases := []struct {
		name string
		m    livehtml.Message
		want string // the event, after its id line
		data string // what EventSource gives
	}{
		{
			name: "named fragment from html/template",
			m:    livehtml.Fragment{Event: "row", Content: livehtml.Template(page, "row", xss)},
			want: "event: row\ndata: <li id=\"row-7\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;</li>\n\n",
		},
		{
			name: "unnamed fragment of several lines",
			m:    livehtml.Fragment{Content: livehtml.Template(page, "rows", []string{"a", "b"})},
			want: "data: <ul id=\"rows\">\ndata: <li>a</li>\ndata: <li>b</li>\ndata: </ul>\n\n",
			data: "<ul id=\"rows\">\n<li>a</li>\n<li>b</li>\n</ul>",
		},
		{
			name: "templ-style component",
			m:    livehtml.Fragment{Event: "row", Content: component("<b>hi</b>")},
			want: "event: row\ndata: <b>hi</b>\n\n",
		},
		{
			name: "turbo append",
			m:    livehtml.TurboStream{Action: "append", Target: "rows", Content: livehtml.Template(page, "row", xss)},
			want: "data: <turbo-stream action=\"append\" target=\"rows\"><template><li id=\"row-7\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;</li></template></turbo-stream>\n\n",
		},
		{
			name: "turbo replace by selector, morphing, attributes escaped",
			m:    livehtml.TurboStream{Action: "replace", Targets: `li[data-x="1"] > b`, Method: "morph", Content: livehtml.HTML("<b>1</b>")},
			want: "data: <turbo-stream action=\"replace\" targets=\"li[data-x=&#34;1&#34;] &gt; b\" method=\"morph\"><template><b>1</b></template></turbo-stream>\n\n",
		},
		{
			name: "turbo remove",
			m:    livehtml.TurboStream{Action: "remove", Target: "row-7"},
			want: "data: <turbo-stream action=\"remove\" target=\"row-7\"></turbo-stream>\n\n",
		},
		{
			name: "turbo refresh",
			m:    livehtml.TurboStream{Action: "refresh", Method: "morph", RequestID: "r1"},
			want: "data: <turbo-stream action=\"refresh\" method=\"morph\" request-id=\"r1\"></turbo-stream>\n\n",
		},
		{
			name: "datastar patch-elements, every option",
			m: livehtml.PatchElements{Selector: "#rows", Mode: "append", UseViewTransition: true,
				Elements: livehtml.Template(page, "rows", []string{"a"})},
			want: "event: datastar-patch-elements\ndata: selector #rows\ndata: mode append\ndata: useViewTransition true\n" +
				"data: elements <ul id=\"rows\">\ndata: elements <li>a</li>\ndata: elements </ul>\n\n",
		},
		{
			name: "datastar patch-elements by id, morphing",
			m:    livehtml.PatchElements{Elements: livehtml.Template(page, "row", row{1, "one"})},
			want: "event: datastar-patch-elements\ndata: elements <li id=\"row-1\">one</li>\n\n",
		},
		{
			name: "datastar remove",
			m:    livehtml.PatchElements{Selector: "#row-1", Mode: "remove"},
			want: "event: datastar-patch-elements\ndata: selector #row-1\ndata: mode remove\n\n",
		},
		{
			name: "datastar patch-signals from a value",
			m:    livehtml.PatchSignals{Signals: map[string]any{"count": 3, "html": "<b>"}},
			want: "event: datastar-patch-signals\ndata: signals {\"count\":3,\"html\":\"\\u003cb\\u003e\"}\n\n",
		},
		{
			name: "datastar patch-signals raw, only if missing",
			m:    livehtml.PatchSignals{Signals: []byte("{\n  \"a\": 1\n}"), OnlyIfMissing: true},
			want: "event: datastar-patch-signals\ndata: onlyIfMissing true\ndata: signals {\ndata: signals   \"a\": 1\ndata: signals }\n\n",
		},
	}
	for _, c := range cases {
		pos, err := livehtml.Publish(ctx, hub, "feed", c.m)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := s.next(t)
		if want := "id: " + pos.String() + "\n" + c.want; got != want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, want)
			continue
		}
		if c.data != "" {
			if ev := parse(t, got); ev.Data != c.data {
				t.Errorf("%s: EventSource data %q, want %q", c.name, ev.Data, c.data)
			}
		}
	}
}

// component is a component with templ's interface.
type component string

func (c component) Render(ctx context.Context, w io.Writer) error {
	_, err := io.WriteString(w, string(c))
	return err
}

// TestInvalid checks that a message that cannot be sent is an error, and
// that nothing is published.
func TestInvalid(t *testing.T) {
	hub := live.NewHub(nil)
	defer hub.Close(context.Background())
	ctx := context.Background()
	boom := errors.New("boom")
	for name, m := range map[string]livehtml.Message{
		"turbo without action":         livehtml.TurboStream{Target: "x"},
		"turbo without target":         livehtml.TurboStream{Action: "append"},
		"datastar mode":                livehtml.PatchElements{Mode: "sideways", Elements: livehtml.HTML("<p id=a></p>")},
		"datastar namespace":           livehtml.PatchElements{Namespace: "xml", Elements: livehtml.HTML("<p id=a></p>")},
		"datastar selector line break": livehtml.PatchElements{Selector: "#a\n#b", Elements: livehtml.HTML("<p></p>")},
		"datastar nothing":             livehtml.PatchElements{},
		"signals not json":             livehtml.PatchSignals{Signals: []byte("{")},
		"signals not an object":        livehtml.PatchSignals{Signals: []int{1}},
		"reserved event name":          livehtml.Fragment{Event: "reset", Content: livehtml.HTML("x")},
		"failing component":            livehtml.Fragment{Event: "row", Content: failing{boom}},
		"missing template":             livehtml.Fragment{Content: livehtml.Template(page, "nope", nil)},
		"nil template":                 livehtml.Fragment{Content: livehtml.Template(nil, "", nil)},
	} {
		if _, err := livehtml.Publish(ctx, hub, "feed", m); err == nil {
			t.Errorf("%s: published", name)
		}
	}
	if _, err := livehtml.Publish(ctx, hub, "feed", livehtml.Fragment{Content: failing{boom}}); !errors.Is(err, boom) {
		t.Errorf("a component's error is %v, want it wrapped", err)
	}
	if pos, _ := hub.Head(ctx, "feed"); pos.Seq != 0 {
		t.Errorf("head %v: something was published", pos)
	}
}

type failing struct{ err error }

func (f failing) Render(context.Context, io.Writer) error { return f.err }

// TestHookToOthers posts as one page: the handler's HTML reaches the other
// page's stream as the message the Hook makes, and not the author's, which
// swapped the response in already.
func TestHookToOthers(t *testing.T) {
	for _, c := range []struct {
		name string
		m    livehtml.Message
		want string
	}{
		{"htmx", livehtml.Fragment{Event: "row"}, "event: row\ndata: <li id=\"row-1\">new</li>\n\n"},
		{"turbo", livehtml.TurboStream{Action: "append", Target: "rows"},
			"data: <turbo-stream action=\"append\" target=\"rows\"><template><li id=\"row-1\">new</li></template></turbo-stream>\n\n"},
		{"datastar", livehtml.PatchElements{Selector: "#rows", Mode: "append"},
			"event: datastar-patch-elements\ndata: selector #rows\ndata: mode append\ndata: elements <li id=\"row-1\">new</li>\n\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			hub, url := serve(t, nil, func(mux *http.ServeMux, hub *live.Hub) {
				add := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/html")
					page.ExecuteTemplate(w, "row", row{1, r.FormValue("title")})
				})
				mux.Handle("POST /rows", hub.Hook(live.HookOptions{
					Event:    livehtml.Hook(func(*http.Request) string { return "feed" }, c.m),
					ToOthers: true,
				})(add))
				mux.Handle("POST /quiet", hub.Hook(live.HookOptions{
					Event: livehtml.Hook(func(*http.Request) string { return "feed" }, c.m),
				})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })))
			})
			ctx := context.Background()
			head, err := hub.Head(ctx, "feed")
			if err != nil {
				t.Fatal(err)
			}
			author := live.NewConnectionID()
			mine := open(t, url+"/live/feed?cursor="+head.String()+"&connection="+author, nil)
			other := open(t, url+"/live/feed?cursor="+head.String(), nil)

			// An empty response publishes nothing.
			resp, err := http.Post(url+"/quiet", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()

			req, _ := http.NewRequest(http.MethodPost, url+"/rows", strings.NewReader("title=new"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set(live.ConnectionHeader, author)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != `<li id="row-1">new</li>` {
				t.Fatalf("the author got %q", body)
			}
			got := other.next(t)
			if ev := parse(t, got); !strings.HasSuffix(got, "\n"+c.want) || !ev.HasID {
				t.Fatalf("the other page got %q, want %q after an id", got, c.want)
			}
			// The author's stream gets what follows, not its own row.
			pos, err := hub.Publish(ctx, "feed", live.Text{Event: "marker", Data: "m"})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := mine.next(t), "id: "+pos.String()+"\nevent: marker\ndata: m\n\n"; got != want {
				t.Fatalf("the author's page got %q, want only the marker %q", got, want)
			}
		})
	}
}

// TestHookRenderError checks that a message the Hook cannot render is
// logged and counted as a lost publication, and the response untouched.
func TestHookRenderError(t *testing.T) {
	logs := make(logWriter, 16)
	hub, url := serve(t, &live.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}, func(mux *http.ServeMux, hub *live.Hub) {
		mux.Handle("POST /sig", hub.Hook(live.HookOptions{
			Event: livehtml.Hook(func(*http.Request) string { return "feed" }, livehtml.PatchSignals{}),
		})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "not json") })))
	})
	resp, err := http.Post(url+"/sig", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "not json" {
		t.Fatalf("response %q", body)
	}
	for {
		select {
		case line := <-logs:
			if !strings.Contains(line, "hook publish failed") {
				continue
			}
			if !strings.Contains(line, "signals are not JSON") {
				t.Errorf("log %q does not say why", line)
			}
			if n := hub.Stats().HookDropped; n != 1 {
				t.Errorf("HookDropped %d, want 1", n)
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatal("the failed render was not logged")
		}
	}
}

// logWriter sends each line logged to it.
type logWriter chan string

func (w logWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// TestReset checks each client's reset: the hub's named "reset" event,
// then the channel's ResetText in the client's terms.
func TestReset(t *testing.T) {
	refresh := livehtml.MustText(livehtml.TurboStream{Action: "refresh"})
	patch := livehtml.MustText(livehtml.PatchElements{
		Elements: livehtml.HTML(`<div id="feed" data-init="@get('/feed')">Loading…</div>`)})
	signals := livehtml.MustText(livehtml.PatchSignals{Signals: map[string]bool{"stale": true}})
	stale := livehtml.MustText(livehtml.Fragment{Event: "stale"})
	_, url := serve(t, &live.Options{
		ResetText: func(channel string) live.Text {
			switch {
			case strings.HasPrefix(channel, "turbo-"):
				return refresh
			case strings.HasPrefix(channel, "ds-"):
				return patch
			case strings.HasPrefix(channel, "sig-"):
				return signals
			case strings.HasPrefix(channel, "htmx-"):
				return stale
			}
			return live.Text{}
		},
	}, nil)
	for _, c := range []struct{ channel, want string }{
		{"turbo-feed", "data: <turbo-stream action=\"refresh\"></turbo-stream>\n\n"},
		{"ds-feed", "event: datastar-patch-elements\ndata: elements <div id=\"feed\" data-init=\"@get('/feed')\">Loading…</div>\n\n"},
		{"sig-feed", "event: datastar-patch-signals\ndata: signals {\"stale\":true}\n\n"},
		{"htmx-feed", "event: stale\ndata: \n\n"},
		{"plain", ""},
	} {
		s := open(t, url+"/live/"+c.channel+"?cursor=3.no-such-epoch", nil)
		reset := s.next(t)
		if ev := parse(t, reset); ev.Event != "reset" || !strings.Contains(ev.Data, `"reason":"epoch"`) {
			t.Fatalf("%s: first event %q, want the hub's reset", c.channel, reset)
		}
		if c.want == "" {
			continue
		}
		if got := s.next(t); got != c.want {
			t.Errorf("%s: after the reset %q, want %q", c.channel, got, c.want)
		}
	}
}

// TestResetTextInvalid checks that a ResetText with an event name a text
// may not have sends nothing beyond the hub's reset.
func TestResetTextInvalid(t *testing.T) {
	hub, url := serve(t, &live.Options{
		ResetText: func(string) live.Text { return live.Text{Event: "presence", Data: "x"} },
	}, nil)
	s := open(t, url+"/live/feed?cursor=nonsense", nil)
	if ev := parse(t, s.next(t)); ev.Event != "reset" {
		t.Fatalf("got %+v, want a reset", ev)
	}
	pos, _ := hub.Publish(context.Background(), "feed", live.Text{Data: "next"})
	if got, want := s.next(t), "id: "+pos.String()+"\ndata: next\n\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestPresence checks that a page's stream gets the members rendered
// through its template after each presence event.
func TestPresence(t *testing.T) {
	_, url := serve(t, &live.Options{
		Presence: func(channel string) live.PresenceMode {
			if channel == "count" {
				return live.PresenceCount
			}
			return live.PresenceMembers
		},
		PresenceText: livehtml.PresenceText(page, "watching", livehtml.Fragment{Event: "watching"}),
	}, nil)
	ann := open(t, url+"/live/room", http.Header{"X-User": {"ann"}})
	if ev := parse(t, ann.next(t)); ev.Event != "presence" {
		t.Fatalf("got %+v, want the presence snapshot", ev)
	}
	// The snapshot may not hold ann yet: wait for the view that does.
	want := func(s *stream, data string) {
		t.Helper()
		for {
			ev := parse(t, s.next(t))
			if ev.Event == "watching" && ev.Data == data {
				return
			}
		}
	}
	want(ann, `<span id="watching">1 watching ann</span>`)
	open(t, url+"/live/room", http.Header{"X-User": {"bob"}})
	want(ann, `<span id="watching">2 watching ann bob</span>`)

	c1 := open(t, url+"/live/count", nil)
	want(c1, `<span id="watching">1 watching</span>`)
	open(t, url+"/live/count", nil)
	want(c1, `<span id="watching">2 watching</span>`)
}

// TestPresenceTurbo checks the bytes of a presence view sent as a Turbo
// Stream action: the hub's presence event, then the unnamed message.
func TestPresenceTurbo(t *testing.T) {
	_, url := serve(t, &live.Options{
		Presence:     func(string) live.PresenceMode { return live.PresenceCount },
		PresenceText: livehtml.PresenceText(page, "watching", livehtml.TurboStream{Action: "replace", Target: "watching"}),
	}, nil)
	s := open(t, url+"/live/room", nil)
	want := "data: <turbo-stream action=\"replace\" target=\"watching\"><template><span id=\"watching\">1 watching</span></template></turbo-stream>\n\n"
	for {
		e := s.next(t)
		if !strings.HasPrefix(e, "event: presence\n") {
			t.Fatalf("got %q, want a presence event", e)
		}
		if got := s.next(t); got == want {
			return // the view follows the hub's event
		} else if !strings.Contains(got, "0 watching") {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestRefused checks how a page's stream ends when the user is
// disconnected: a named "refused" event, which htmx closes on with
// sse-close="refused", then the end of the stream.
func TestRefused(t *testing.T) {
	hub, url := serve(t, nil, nil)
	s := open(t, url+"/live/feed", http.Header{"X-User": {"ann"}})
	pos, _ := hub.Publish(context.Background(), "feed", live.Text{Event: "row", Data: "x"})
	if got := s.next(t); got != "id: "+pos.String()+"\nevent: row\ndata: x\n\n" {
		t.Fatalf("got %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hub.Disconnect(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if ev := parse(t, s.next(t)); ev.Event != "refused" || !strings.Contains(ev.Data, `"code":"disconnected"`) {
		t.Fatalf("got %+v, want a refused event", ev)
	}
	s.Ended(t)
}

// TestPage renders a page with a Page and streams from it: the stream
// sends what was published after the render, and the page's own writes
// skip it.
func TestPage(t *testing.T) {
	hub, url := serve(t, nil, nil)
	ctx := context.Background()
	hub.Publish(ctx, "feed", live.Text{Event: "row", Data: "before"})
	p, err := livehtml.NewPage(ctx, hub, "feed")
	if err != nil {
		t.Fatal(err)
	}
	tpl := template.Must(template.New("").Parse(`<body hx-headers='{{.Headers}}'><div sse-connect="/live/feed?{{.Query}}">`))
	var b strings.Builder
	if err := tpl.Execute(&b, p); err != nil {
		t.Fatal(err)
	}
	want := `<body hx-headers='{&#34;Live-Connection&#34;:&#34;` + p.Connection + `&#34;}'><div sse-connect="/live/feed?connection=` + p.Connection + `&amp;cursor=` + p.Cursor + `">`
	if b.String() != want {
		t.Fatalf("rendered\n%s\nwant\n%s", b.String(), want)
	}
	after, _ := hub.Publish(ctx, "feed", live.Text{Event: "row", Data: "after"})
	s := open(t, url+"/live/feed?"+string(p.Query()), nil)
	if got := s.next(t); got != "id: "+after.String()+"\nevent: row\ndata: after\n\n" {
		t.Fatalf("got %q", got)
	}
	others, _ := hub.Publish(live.Except(ctx, p.Connection, ""), "feed", live.Text{Event: "row", Data: "mine"})
	last, _ := hub.Publish(ctx, "feed", live.Text{Event: "row", Data: "last"})
	if got := s.next(t); got != "id: "+last.String()+"\nevent: row\ndata: last\n\n" {
		t.Fatalf("got %q, want the publication after %v, which skips the page", got, others)
	}
}

// TestReauthorizeRefused checks that a page's stream that Authorize no
// longer allows ends after a "refused" event, as a Disconnect's does.
func TestReauthorizeRefused(t *testing.T) {
	var mu sync.Mutex
	banned := false
	hub, url := serve(t, &live.Options{
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			mu.Lock()
			defer mu.Unlock()
			if banned || op != live.OpSubscribe {
				return live.Deny("not yours")
			}
			return nil
		},
	}, nil)
	s := open(t, url+"/live/feed", http.Header{"X-User": {"ann"}})
	mu.Lock()
	banned = true
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hub.Reauthorize(ctx, "feed", ""); err != nil {
		t.Fatal(err)
	}
	if ev := parse(t, s.next(t)); ev.Event != "refused" || !strings.Contains(ev.Data, `"channel":"feed"`) {
		t.Fatalf("got %+v, want a refused event", ev)
	}
	s.Ended(t)
}

// TestClientCannotPublishHTML checks that what a client publishes reaches
// a page's stream as JSON, never as HTML, whatever it holds.
func TestClientCannotPublishHTML(t *testing.T) {
	_, url := serve(t, &live.Options{
		Authorize: func(*http.Request, string, live.Op) error { return nil }, // clients may publish
	}, nil)
	s := open(t, url+"/live/feed", nil)
	for _, body := range []string{`"<script>alert(1)</script>"`, `"<turbo-stream action=\"refresh\"></turbo-stream>"`} {
		resp, err := http.Post(url+"/live/feed", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("publish: %s", resp.Status)
		}
		ev := parse(t, s.next(t))
		if ev.Event != "" || ev.Data != body {
			t.Fatalf("the page got %+v, want the JSON %s as it was sent", ev, body)
		}
	}
}
