package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
)

// start serves a node on a fresh in-memory broker, with metrics moving
// every tick (0: never), until the test ends.
func start(t *testing.T, tick time.Duration) *httptest.Server {
	t.Helper()
	b := live.NewMemoryBroker(&live.MemoryOptions{HistoryAge: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := newApp(ctx, b, tick)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Close(ctx) // ends the streams, so that srv.Close does not wait on them
		srv.Close()
		b.Close()
	})
	return srv
}

// visitor is a browser: a client with a cookie jar.
func visitor(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, b)
	}
	return string(b)
}

// connectURL returns the URL of channel's stream on page (sse-connect, src).
func connectURL(t *testing.T, page, channel string) string {
	t.Helper()
	_, rest, ok := strings.Cut(page, `="/live/`+channel+`?`)
	if !ok {
		t.Fatalf("the page does not stream %s", channel)
	}
	q, _, _ := strings.Cut(rest, `"`)
	return "/live/" + channel + "?" + strings.ReplaceAll(q, "&amp;", "&")
}

// post posts the form, as the page's connection.
func post(t *testing.T, c *http.Client, u string, form url.Values, connection string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(live.ConnectionHeader, connection)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// stream opens a one-channel SSE stream and returns its lines, until the
// test ends.
func stream(t *testing.T, c *http.Client, u string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	res, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET %s: %d", u, res.StatusCode)
	}
	lines := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
		<-done
	})
	return lines
}

// expect waits for a line containing want.
func expect(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the stream ended before %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q within 10 s", want)
		}
	}
}

func TestPageRendersAndStreamsHTML(t *testing.T) {
	srv := start(t, 50*time.Millisecond)
	ann, bob := visitor(t), visitor(t)

	annPage := get(t, ann, srv.URL+"/")
	for _, want := range []string{`src="/static/htmx.min.js"`, `<dt>Requests/s</dt>`, `id="card-c1"`, `sse-swap="activity"`, `hx-headers='{&#34;Live-Connection&#34;:`} {
		if !strings.Contains(annPage, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	if js := get(t, ann, srv.URL+"/static/htmx.min.js"); !strings.Contains(js, "htmx") {
		t.Error("htmx is not served")
	}
	annConn, _ := url.ParseQuery(strings.SplitN(connectURL(t, annPage, "activity"), "?", 2)[1])
	annID := annConn.Get("connection")

	// The metrics move: HTML for sse-swap="metrics".
	metrics := stream(t, ann, srv.URL+connectURL(t, annPage, "metrics"))
	expect(t, metrics, "event: metrics")
	expect(t, metrics, `data: <dl class="metrics">`)

	annFeed := stream(t, ann, srv.URL+connectURL(t, annPage, "activity"))
	bobPage := get(t, bob, srv.URL+"/")
	bobFeed := stream(t, bob, srv.URL+connectURL(t, bobPage, "activity"))
	turbo := stream(t, bob, srv.URL+connectURL(t, get(t, bob, srv.URL+"/turbo"), "activity.turbo"))

	// Ann posts: her page swaps the answer in; Bob's stream, and the
	// Turbo page's, get the same item; hers does not.
	status, item := post(t, ann, srv.URL+"/activity", url.Values{"what": {"Shipped <b>it</b>"}}, annID)
	if status != http.StatusOK || !strings.Contains(item, `Shipped &lt;b&gt;it&lt;/b&gt;`) || !strings.HasPrefix(item, `<li id="item-`) {
		t.Fatalf("POST /activity: %d %s", status, item)
	}
	expect(t, bobFeed, "data: "+item)
	expect(t, turbo, `data: <turbo-stream action="prepend" target="feed"><template>`+item+`</template></turbo-stream>`)
	_, bobItem := post(t, bob, srv.URL+"/activity", url.Values{"what": {"Reviewed"}}, "")
	expect(t, annFeed, "event: activity")
	if l := <-annFeed; l != "data: "+bobItem {
		t.Fatalf("Ann's stream got %q, not Bob's item: her own came back to her", l)
	}

	// A new page shows both, newest first, from the channel's history.
	page := get(t, visitor(t), srv.URL+"/")
	if i, j := strings.Index(page, bobItem), strings.Index(page, item); i < 0 || j < i {
		t.Errorf("the feed does not show both items, newest first")
	}
	if !strings.Contains(get(t, bob, srv.URL+"/turbo"), item) {
		t.Error("the Turbo page does not show the feed")
	}

	// The board: who is watching, and a card moved by Bob reaches Ann.
	annBoard := stream(t, ann, srv.URL+connectURL(t, annPage, "board"))
	expect(t, annBoard, "event: watching")
	stream(t, bob, srv.URL+connectURL(t, bobPage, "board"))
	expect(t, annBoard, "data: 2 watching: visitor-")
	status, board := post(t, bob, srv.URL+"/board/c1", url.Values{"to": {"done"}}, "")
	if status != http.StatusOK || !strings.Contains(board, `id="card-c1"`) {
		t.Fatalf("POST /board/c1: %d %s", status, board)
	}
	expect(t, annBoard, "event: board")

	// Bad input is refused.
	if status, _ := post(t, ann, srv.URL+"/activity", url.Values{"what": {"  "}}, ""); status != http.StatusBadRequest {
		t.Errorf("an empty post: %d", status)
	}
	if status, _ := post(t, ann, srv.URL+"/board/c1", url.Values{"to": {"nowhere"}}, ""); status != http.StatusBadRequest {
		t.Errorf("a move to no column: %d", status)
	}
	if status, _ := post(t, ann, srv.URL+"/live/activity", url.Values{}, ""); status < 400 {
		t.Errorf("a page publishing on a channel: %d", status)
	}
}
