package live_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/google/go-cmp/cmp"
)

// watchBroker reports when the hub's broker subscriptions end.
type watchBroker struct {
	*live.MemoryBroker
	ended chan string
}

func (b *watchBroker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	err := b.MemoryBroker.Subscribe(ctx, channel, ready, deliver)
	b.ended <- channel
	return err
}

// TestClientGoneUnsubscribes checks that a client leaving ends its
// subscription at once: the hub drops its broker subscription as soon as
// the last local subscriber of a channel is gone.
func TestClientGoneUnsubscribes(t *testing.T) {
	b := &watchBroker{MemoryBroker: newMemoryBroker(t, 16), ended: make(chan string, 4)}
	s := newTestServer(t, &live.Options{Broker: b})

	sse := openSSE(t, s.srv.URL+"/live/sse-channel", nil)
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "ws-channel")

	sse.resp.Body.Close()
	if got := <-b.ended; got != "sse-channel" {
		t.Errorf("ended %q, want sse-channel", got)
	}
	ws.c.CloseNow()
	if got := <-b.ended; got != "ws-channel" {
		t.Errorf("ended %q, want ws-channel", got)
	}
}

// unwrapOnly is middleware's ResponseWriter that hides http.Flusher but
// offers Unwrap, as http.ResponseController expects.
type unwrapOnly struct {
	w      http.ResponseWriter
	status int
}

func (u *unwrapOnly) Header() http.Header         { return u.w.Header() }
func (u *unwrapOnly) Write(b []byte) (int, error) { return u.w.Write(b) }
func (u *unwrapOnly) WriteHeader(code int)        { u.status = code; u.w.WriteHeader(code) }
func (u *unwrapOnly) Unwrap() http.ResponseWriter { return u.w }

func TestSSEThroughMiddleware(t *testing.T) {
	hub := live.NewHub(nil)
	logging := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(&unwrapOnly{w: w}, r)
		})
	}
	srv := httptest.NewServer(logging(hub))
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	stream := openSSE(t, srv.URL+"/c", nil)
	pos, err := hub.Publish(context.Background(), "c", "through")
	if err != nil {
		t.Fatal(err)
	}
	if ev := stream.nextData(t); ev.ID != pos.String() || ev.Data != `"through"` {
		t.Errorf("got %+v", ev)
	}
}

func TestQueryKey(t *testing.T) {
	s := newTestServer(t, &live.Options{QueryKey: func(channel string) []string {
		if channel == "metrics:dashboard" {
			return []string{"metrics"}
		}
		return nil
	}})
	c := dialWS(t, s.wsURL(), nil)
	c.subscribe(t, "metrics:dashboard")
	c.subscribe(t, "other")
	s.publish(t, "metrics:dashboard", 1)
	s.publish(t, "other", 2)
	if f := c.expect(t, "data"); string(f.QueryKey) != `["metrics"]` {
		t.Errorf("queryKey = %s, want [\"metrics\"]", f.QueryKey)
	}
	if f := c.expect(t, "data"); f.QueryKey != nil {
		t.Errorf("queryKey = %s on a channel without one", f.QueryKey)
	}
}

func TestMetricsHandler(t *testing.T) {
	s := newTestServer(t, &live.Options{Broker: newMemoryBroker(t, 2)})
	publishN(t, s, "c", 1, 5)
	openSSE(t, s.srv.URL+"/live/c?cursor=1."+mustCursor(t, s, "c").Epoch, nil) // out of window: a reset
	rec := httptest.NewRecorder()
	s.hub.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`live_connections{transport="sse"} 2` + "\n", `live_connections{transport="ws"} 0` + "\n",
		"live_published_total 5\n", `live_resets_total{reason="gone"} 1` + "\n",
		"# TYPE live_delivered_total counter\n", "live_channels 1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// TestRevokedChannelNotReplayed checks that replay obeys Authorize: once a
// channel is revoked, resuming it with a valid cursor is refused rather
// than replaying its history.
func TestRevokedChannelNotReplayed(t *testing.T) {
	var mu sync.Mutex
	revoked := false
	s := newTestServer(t, &live.Options{Authorize: func(_ *http.Request, channel string, op live.Op) error {
		mu.Lock()
		defer mu.Unlock()
		if revoked && channel == "secret" {
			return live.ErrForbidden
		}
		return nil
	}})
	cursor := mustCursor(t, s, "secret")
	publishN(t, s, "secret", 1, 3)
	mu.Lock()
	revoked = true
	mu.Unlock()
	resp, err := http.Get(s.srv.URL + "/live/secret?cursor=" + cursor.String())
	if err != nil {
		t.Fatal(err)
	}
	checkErrorResponse(t, resp, http.StatusForbidden, "forbidden")
	c := dialWS(t, s.wsURL(), nil)
	c.send(t, map[string]string{"type": "subscribe", "channel": "secret", "cursor": cursor.String()})
	if f := c.expect(t, "error"); f.Code != "forbidden" {
		t.Errorf("got %+v", f)
	}
}

// TestCloseClientConnectionsKeepsStreams shows what the docs say:
// httptest.Server.CloseClientConnections does not end hub streams, which
// the hub has taken over from the server (livetest's Drop does).
func TestCloseClientConnectionsKeepsStreams(t *testing.T) {
	s := newTestServer(t, nil)
	sse := openSSE(t, s.srv.URL+"/live/kept", nil)
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "kept")
	s.srv.CloseClientConnections()
	s.publish(t, "kept", 1)
	if ev := sse.nextData(t); ev.Data != "1" {
		t.Fatalf("SSE: %+v", ev)
	}
	if f := ws.expect(t, "data"); string(f.Data) != "1" {
		t.Fatalf("WebSocket: %+v", f)
	}
}

// levelLogs is a slog.Handler that keeps every record's level and message,
// and tells closed of each record about a closed broker.
type levelLogs struct {
	mu     sync.Mutex // guards lines
	lines  []string
	closed chan struct{}
}

func (l *levelLogs) Enabled(context.Context, slog.Level) bool { return true }
func (l *levelLogs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *levelLogs) WithGroup(string) slog.Handler            { return l }
func (l *levelLogs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	l.mu.Unlock()
	if strings.Contains(r.Message, "the broker is closed") {
		l.closed <- struct{}{}
	}
	return nil
}

// TestBrokerClosedFirst closes the broker, then the hub, as an
// application's deferred calls may: the hub's subscriptions end without
// a warning, and it does not knock on the closed broker again.
func TestBrokerClosedFirst(t *testing.T) {
	// Room for the resubscriptions of a hub that keeps knocking.
	b := &watchBroker{MemoryBroker: newMemoryBroker(t, 16), ended: make(chan string, 1000)}
	logs := &levelLogs{closed: make(chan struct{}, 1000)}
	s := newTestServer(t, &live.Options{Broker: b, Logger: slog.New(logs)})
	ws := dialWS(t, s.wsURL(), nil)
	ws.subscribe(t, "news")

	b.Close()
	// Two subscriptions end: the hub's control channel's and news's.
	for range 2 {
		select {
		case <-logs.closed:
		case <-time.After(waitFor):
			logs.mu.Lock()
			t.Fatalf("the hub did not see the broker closed; it logged %q", logs.lines)
		}
	}
	servertest.CloseHub(t, s.hub)
	var ended []string
	for len(b.ended) > 0 {
		ended = append(ended, <-b.ended)
	}
	slices.Sort(ended)
	if diff := cmp.Diff([]string{"@live:control", "news"}, ended); diff != "" {
		t.Errorf("broker subscriptions that ended (-want +got):\n%s", diff)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, line := range logs.lines {
		if !strings.HasPrefix(line, "DEBUG") && !strings.HasPrefix(line, "INFO") {
			t.Errorf("logged %q", line)
		}
	}
}

func (b *watchBroker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	return followBySubscribe(b, channel, ready, deliver, ended)
}
