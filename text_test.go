package live_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/observe"
)

// rawStream reads an SSE response as the bytes of its events.
type rawStream struct{ *servertest.RawStream }

// openRawSSE requests url with header and fails the test unless it
// answers 200 with an event stream.
func openRawSSE(t testing.TB, url string, header http.Header) *rawStream {
	t.Helper()
	return &rawStream{servertest.OpenRawStream(t, url, header)}
}

// next returns the next event's bytes.
func (s *rawStream) next(t testing.TB) string {
	t.Helper()
	return s.Next(t)
}

// nextN returns the next n events' bytes, joined.
func (s *rawStream) nextN(t testing.TB, n int) string {
	t.Helper()
	var b strings.Builder
	for range n {
		b.WriteString(s.next(t))
	}
	return b.String()
}

// textFeed publishes a mix of text and JSON on channel, and returns the
// SSE events a one-channel stream must send for them, in order.
func textFeed(t *testing.T, hub *live.Hub, channel string) (want []string) {
	t.Helper()
	ctx := context.Background()
	pubs := []struct {
		v    any
		want string // without the id line
	}{
		{live.Text{Event: "row", Data: "<li>a</li>\r\n<li>b</li>\r<li>c</li>\n"},
			"event: row\ndata: <li>a</li>\ndata: <li>b</li>\ndata: <li>c</li>\ndata: \n\n"},
		{live.Text{Data: `<turbo-stream action="append" target="x"><template>é "q" \</template></turbo-stream>`},
			"data: <turbo-stream action=\"append\" target=\"x\"><template>é \"q\" \\</template></turbo-stream>\n\n"},
		{&live.Text{Event: "datastar-patch-elements", Data: "elements <div id=\"a\">1</div>\nelements <div id=\"b\">2</div>"},
			"event: datastar-patch-elements\ndata: elements <div id=\"a\">1</div>\ndata: elements <div id=\"b\">2</div>\n\n"},
		{live.Text{}, "data: \n\n"},
		{live.Text{Event: "x", Data: "\n\n"}, "event: x\ndata: \ndata: \ndata: \n\n"},
		{live.Text{Data: " leading space"}, "data:  leading space\n\n"},
		{"<li>json</li>", "data: \"\\u003cli\\u003ejson\\u003c/li\\u003e\"\n\n"},
		{map[string]int{"n": 1}, "data: {\"n\":1}\n\n"},
	}
	for _, p := range pubs {
		pos, err := hub.Publish(ctx, channel, p.v)
		if err != nil {
			t.Fatalf("Publish(%#v): %v", p.v, err)
		}
		want = append(want, "id: "+pos.String()+"\n"+p.want)
	}
	return want
}

// TestTextSSE checks that a one-channel SSE stream sends a Text as it is:
// one data line per line, named or not, never quoted; JSON as before.
func TestTextSSE(t *testing.T) {
	s := newTestServer(t, nil)
	st := openRawSSE(t, s.srv.URL+"/live/feed", nil)
	ack := st.next(t)
	if !strings.HasPrefix(ack, "id: ") {
		t.Fatalf("first event %q; want the acknowledgement", ack)
	}
	want := textFeed(t, s.hub, "feed")
	for i, w := range want {
		if got := st.next(t); got != w {
			t.Errorf("event %d:\n got %q\nwant %q", i, got, w)
		}
	}
	// As EventSource reads it.
	ev := openSSE(t, s.srv.URL+"/live/feed2", nil)
	s.publish(t, "feed2", live.Text{Event: "row", Data: "a\r\nb\rc\n"})
	if got := ev.nextData(t); got.Event != "row" || got.Data != "a\nb\nc\n" {
		t.Errorf("EventSource reads %+v; want event row, data %q", got, "a\nb\nc\n")
	}
}

// TestTextResume checks that a stream resuming with Last-Event-ID or
// ?cursor= replays text exactly as it was sent live, from the hub's recent
// frames and from the broker's history, and that Last-Event-ID wins over
// ?cursor= when a rebuilt stream sends both.
func TestTextResume(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	t.Cleanup(func() { b.Close() })
	s := newTestServer(t, &live.Options{Broker: b})
	st := openRawSSE(t, s.srv.URL+"/live/feed", nil)
	start := strings.TrimSuffix(strings.TrimPrefix(st.next(t), "id: "), "\n\n")
	want := textFeed(t, s.hub, "feed")
	sent := st.nextN(t, len(want))
	if sent != strings.Join(want, "") {
		t.Fatalf("live:\n got %q\nwant %q", sent, strings.Join(want, ""))
	}
	// A hub that has seen nothing replays from the broker's history.
	other := newTestServer(t, &live.Options{Broker: b})
	for _, srv := range []*testServer{s, other} {
		for _, c := range []struct {
			name   string
			query  string
			header http.Header
		}{
			{"cursor", "?cursor=" + url.QueryEscape(start), nil},
			{"Last-Event-ID", "", http.Header{"Last-Event-Id": {start}}},
			{"Last-Event-ID over cursor", "?cursor=" + url.QueryEscape(start), http.Header{"Last-Event-Id": {start}}},
		} {
			r := openRawSSE(t, srv.srv.URL+"/live/feed"+c.query, c.header)
			if ack := r.next(t); ack != "id: "+start+"\n\n" {
				t.Errorf("%s: acknowledged with %q; want the cursor resumed from", c.name, ack)
			}
			if got := r.nextN(t, len(want)); got != sent {
				t.Errorf("%s: replayed\n %q\nwant\n %q", c.name, got, sent)
			}
		}
	}

	// A stream rebuilt after it received some events sends the cursor of
	// its URL and the id it last received: it gets what follows that id.
	last := strings.TrimPrefix(strings.SplitN(want[3], "\n", 2)[0], "id: ")
	r := openRawSSE(t, s.srv.URL+"/live/feed?cursor="+url.QueryEscape(start), http.Header{"Last-Event-Id": {last}})
	r.next(t) // the acknowledgement
	if got := r.nextN(t, len(want)-4); got != strings.Join(want[4:], "") {
		t.Errorf("rebuilt stream got\n %q\nwant\n %q", got, strings.Join(want[4:], ""))
	}
}

// TestTextFrames checks that WebSocket, multiplexed SSE and long-poll
// clients get a Text as a data frame whose data is the JSON string, with
// the event's name when it has one.
func TestTextFrames(t *testing.T) {
	s := newTestServer(t, nil)
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "feed")
	mux := openSSE(t, s.srv.URL+"/api/live?channels=feed", nil)
	if ev := mux.nextData(t); !strings.Contains(ev.Data, `"subscribed"`) {
		t.Fatalf("multiplexed stream's first frame %q; want subscribed", ev.Data)
	}
	first := pollOnce(t, s, "", nil, "feed")
	p1 := s.publish(t, "feed", live.Text{Event: "row", Data: "<li>a</li>\n<li>b</li>"})
	p2 := s.publish(t, "feed", live.Text{Data: "<p>x</p>"})
	want := []wsFrame{
		{Type: "data", Channel: "feed", Data: json.RawMessage(`"<li>a</li>\n<li>b</li>"`), Cursor: p1.String(), Event: "row"},
		{Type: "data", Channel: "feed", Data: json.RawMessage(`"<p>x</p>"`), Cursor: p2.String()},
	}
	check := func(how string, got []wsFrame) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %+v; want %+v", how, got, want)
		}
		for i := range want {
			g := got[i]
			if g.Type != want[i].Type || g.Channel != want[i].Channel || string(g.Data) != string(want[i].Data) || g.Cursor != want[i].Cursor || g.Event != want[i].Event {
				t.Errorf("%s: frame %d %+v (data %s); want %+v (data %s)", how, i, g, g.Data, want[i], want[i].Data)
			}
		}
	}
	check("WebSocket", []wsFrame{ws.expect(t, "data"), ws.expect(t, "data")})
	var muxed []wsFrame
	for range want {
		var f wsFrame
		if err := json.Unmarshal([]byte(mux.nextData(t).Data), &f); err != nil {
			t.Fatal(err)
		}
		muxed = append(muxed, f)
	}
	check("multiplexed SSE", muxed)
	check("long-poll", pollOnce(t, s, "", map[string]string{"feed": first[0].Cursor}, "feed"))
	// The text round-trips as a JSON string.
	var text string
	if err := json.Unmarshal(want[0].Data, &text); err != nil || text != "<li>a</li>\n<li>b</li>" {
		t.Errorf("data decodes to %q, %v", text, err)
	}
}

// TestTextRefused checks the text publications Publish refuses: invalid
// event names, reserved channels, States and lists.
func TestTextRefused(t *testing.T) {
	s := newTestServer(t, &live.Options{
		ListIDField: func(channel string) string {
			if strings.HasPrefix(channel, "list:") {
				return "id"
			}
			return ""
		},
	})
	ctx := context.Background()
	for _, ev := range []string{
		"reset", "refused", "status", "presence", "error", "open",
		" row", "a\nb", "a\rb", "a\x00b", "a\tb", "tab\x7f", "a\u0085b", "a\u2028b",
		strings.Repeat("x", 65), "\xff",
	} {
		if _, err := s.hub.Publish(ctx, "feed", live.Text{Event: ev, Data: "x"}); err == nil || !strings.Contains(err.Error(), "event") {
			t.Errorf("Publish with event %q: %v; want an error about the event name", ev, err)
		}
	}
	for _, ev := range []string{"row", "message", strings.Repeat("é", 64), "sse:row", "a b", "datastar-patch-elements"} {
		if _, err := s.hub.Publish(ctx, "feed", live.Text{Event: ev, Data: "x"}); err != nil {
			t.Errorf("Publish with event %q: %v", ev, err)
		}
	}
	if _, err := s.hub.State(ctx, "counter", nil); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"counter", "list:todos", "@live:control", "bad channel\n"} {
		if _, err := s.hub.Publish(ctx, ch, live.Text{Data: "<p>x</p>"}); err == nil {
			t.Errorf("Publish of text on %q: no error", ch)
		}
	}
}

// TestTextFromClientStaysJSON checks that a client publishing a JSON
// string, which looks like a Text's data, is still sent JSON-quoted on a
// one-channel stream: only a hub marks text.
func TestTextFromClientStaysJSON(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: func(*http.Request, string, live.Op) error { return nil }})
	st := openRawSSE(t, s.srv.URL+"/live/feed", nil)
	st.next(t)
	resp, err := http.Post(s.srv.URL+"/api/live/feed", "application/json", strings.NewReader(`"<li>x</li>"`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST: %s", resp.Status)
	}
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "feed")
	ws.send(t, map[string]any{"type": "publish", "channel": "feed", "data": "<li>y</li>", "ref": 1})
	for _, text := range []string{"<li>x</li>", "<li>y</li>"} {
		got := st.next(t)
		_, data, _ := strings.Cut(got, "\ndata: ")
		var s string
		if strings.Contains(got, "event:") || json.Unmarshal([]byte(strings.TrimSuffix(data, "\n\n")), &s) != nil || s != text {
			t.Errorf("client's publication sent as %q; want it as the JSON string %q", got, text)
		}
	}
}

// TestTextAcrossHubs checks that a hub delivers as text what another hub
// sharing its broker published as text, to a subscriber that was there
// and to one that resumes, and that a Hook's Text event is text too.
func TestTextAcrossHubs(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	t.Cleanup(func() { b.Close() })
	a := newTestServer(t, &live.Options{Broker: b})
	other := newTestServer(t, &live.Options{Broker: b})
	st := openRawSSE(t, other.srv.URL+"/live/feed", nil)
	st.next(t)
	pos := a.publish(t, "feed", live.Text{Event: "row", Data: "<li>1</li>\n<li>2</li>"})
	want := "id: " + pos.String() + "\nevent: row\ndata: <li>1</li>\ndata: <li>2</li>\n\n"
	if got := st.next(t); got != want {
		t.Errorf("other hub sent %q; want %q", got, want)
	}

	// A Hook's event.
	mux := http.NewServeMux()
	mux.Handle("POST /rows", a.hub.Hook(live.HookOptions{
		Event: func(r *http.Request, status int, body []byte) []live.Event {
			return []live.Event{{Channel: "feed", Data: live.Text{Event: "row", Data: string(body)}}}
		},
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<li>3</li>"))
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+"/rows", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := st.next(t)
	if !strings.HasSuffix(got, "\nevent: row\ndata: <li>3</li>\n\n") {
		t.Errorf("hook's text sent as %q", got)
	}
}

// TestRenderThenStream checks the flow of a server-rendered page: it
// reads the channel's head, renders, and streams from that cursor, missing
// nothing published in between and replaying nothing before it.
func TestRenderThenStream(t *testing.T) {
	s := newTestServer(t, nil)
	ctx := context.Background()
	head, err := s.hub.Head(ctx, "feed")
	if err != nil || head.Seq != 0 || head.Epoch == "" {
		t.Fatalf("Head of a new channel: %v, %v; want position 0 of a numbering", head, err)
	}
	s.publish(t, "feed", live.Text{Data: "<li>1</li>"})
	p2 := s.publish(t, "feed", live.Text{Data: "<li>2</li>"})
	head, err = s.hub.Head(ctx, "feed")
	if err != nil || head != p2 {
		t.Fatalf("Head: %v, %v; want %v", head, err, p2)
	}
	// Rendered at head; a publication comes before the page's stream.
	p3 := s.publish(t, "feed", live.Text{Data: "<li>3</li>"})
	st := openRawSSE(t, s.srv.URL+"/live/feed?cursor="+url.QueryEscape(head.String()), nil)
	st.next(t) // the acknowledgement
	p4 := s.publish(t, "feed", live.Text{Data: "<li>4</li>"})
	want := "id: " + p3.String() + "\ndata: <li>3</li>\n\n" + "id: " + p4.String() + "\ndata: <li>4</li>\n\n"
	if got := st.nextN(t, 2); got != want {
		t.Errorf("stream from the rendered head got %q; want %q", got, want)
	}
	for _, ch := range []string{"@live:control", ""} {
		if _, err := s.hub.Head(ctx, ch); err == nil {
			t.Errorf("Head(%q): no error", ch)
		}
	}
}

// TestStreamConnectionID checks that a page names its one-channel stream
// with ?connection=, so that its own writes, sent with the same id in
// ConnectionHeader to a Hook with ToOthers, skip its stream and reach
// everyone else's; and that an id that is not one is refused.
func TestStreamConnectionID(t *testing.T) {
	s := newTestServer(t, nil)
	id := live.NewConnectionID()
	if id2 := live.NewConnectionID(); id2 == id || len(id) != 16 {
		t.Fatalf("NewConnectionID: %q, %q", id, id2)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /rows", s.hub.Hook(live.HookOptions{
		ToOthers: true,
		Event: func(r *http.Request, status int, body []byte) []live.Event {
			return []live.Event{{Channel: "feed", Data: live.Text{Event: "row", Data: string(body)}}}
		},
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<li>" + r.URL.Query().Get("n") + "</li>"))
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	post := func(n, conn string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/rows?n="+n, nil)
		if conn != "" {
			req.Header.Set(live.ConnectionHeader, conn) // hx-headers
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	page := openRawSSE(t, s.srv.URL+"/live/feed?connection="+id, nil)
	other := openRawSSE(t, s.srv.URL+"/live/feed?connection="+live.NewConnectionID(), nil)
	plain := openRawSSE(t, s.srv.URL+"/live/feed", nil)
	for _, st := range []*rawStream{page, other, plain} {
		st.next(t)
	}
	post("1", id) // the page's own write
	post("2", "") // someone else's
	for name, st := range map[string]*rawStream{"other": other, "plain": plain} {
		if got := st.nextN(t, 2); !strings.Contains(got, "data: <li>1</li>") || !strings.Contains(got, "data: <li>2</li>") {
			t.Errorf("%s stream got %q; want both rows", name, got)
		}
	}
	if got := page.next(t); !strings.HasSuffix(got, "\nevent: row\ndata: <li>2</li>\n\n") {
		t.Errorf("the page's stream got %q; want only the other write's row", got)
	}

	for _, bad := range []string{"", "short", strings.Repeat("a", 25), "aaaaaaaaaaaaaaa=", "aaaaaaaa aaaaaaa", "aaaaaaaaaaaaaaa+"} {
		resp, err := http.Get(s.srv.URL + "/live/feed?connection=" + url.QueryEscape(bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("connection %q: %s %s; want 400 with a JSON body", bad, resp.Status, resp.Header.Get("Content-Type"))
		}
	}
}

// TestTextTraced checks that a text publication carrying a trace
// (Options.Observe.Inject) stays text: the hub's word on it is one meta.
func TestTextTraced(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	t.Cleanup(func() { b.Close() })
	traces := make(chan string, 4)
	a := newTestServer(t, &live.Options{Broker: b, Observe: &observe.Hooks{
		Inject: func(ctx context.Context, channel string) (string, func(error)) {
			return "00-trace", nil
		},
	}})
	other := newTestServer(t, &live.Options{Broker: b, Observe: &observe.Hooks{
		FanOut: func(channel, trace string) func() {
			traces <- trace
			return nil
		},
	}})
	st := openRawSSE(t, other.srv.URL+"/live/feed", nil)
	st.next(t)
	pos := a.publish(t, "feed", live.Text{Event: "row", Data: "<li>1</li>"})
	want := "id: " + pos.String() + "\nevent: row\ndata: <li>1</li>\n\n"
	if got := st.next(t); got != want {
		t.Errorf("other hub sent %q; want %q", got, want)
	}
	select {
	case tr := <-traces:
		if tr != "00-trace" {
			t.Errorf("FanOut got trace %q; want 00-trace", tr)
		}
	case <-time.After(10 * time.Second):
		t.Error("FanOut never called")
	}
}
