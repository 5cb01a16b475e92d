package live_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/internal/sse"
)

// On SIGTERM (a rolling deploy), drain the hub within the pod's grace
// period, then shut the server down and close the hub: its clients move
// to the other nodes spread over the window, and resume there.
func ExampleHub_Drain() {
	hub := live.NewHub(nil) // on a broker shared with the other nodes
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	mux.Handle("GET /readyz", hub.ReadyHandler()) // the readiness probe
	srv := &http.Server{Addr: "localhost:8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go srv.ListenAndServe()
	<-ctx.Done()

	drain, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := hub.Drain(drain); err != nil {
		log.Printf("drain: %v", err)
	}
	srv.Shutdown(drain)
	hub.Close(drain)
}

// drainReason is the close reason and close frame reason of Hub.Drain.
var drainReason = regexp.MustCompile(`^restart; retry in (\d+) ms$`)

// drainDelay checks a drain's reason and returns the delay it gives, which
// must lie in [100, 1000) ms.
func drainDelay(t testing.TB, reason string) int {
	t.Helper()
	m := drainReason.FindStringSubmatch(reason)
	if m == nil {
		t.Fatalf("reason %q, want \"restart; retry in N ms\"", reason)
	}
	ms, _ := strconv.Atoi(m[1])
	if ms < 100 || ms >= 1000 {
		t.Errorf("retry in %d ms, want within [100, 1000)", ms)
	}
	return ms
}

// drainAsync starts Drain with a window of about window and returns a
// function that waits for its result; the test's cleanup waits too.
func drainAsync(t testing.TB, hub *live.Hub, window time.Duration) func() error {
	t.Helper()
	done := make(chan struct{})
	var err error
	ctx, cancel := context.WithTimeout(context.Background(), window*10/9)
	go func() {
		defer close(done)
		defer cancel()
		err = hub.Drain(ctx)
	}()
	wait := func() error {
		select {
		case <-done:
			return err
		case <-time.After(waitFor):
			return errors.New("Drain did not return")
		}
	}
	t.Cleanup(func() { wait() })
	return wait
}

// expectDraining checks a refusal by a draining hub: 503, Retry-After of
// 1 second, the JSON error "draining".
func expectDraining(t testing.TB, what string, resp *http.Response) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%s: %s %s, want 503", what, resp.Status, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("%s: Retry-After %q, want 1", what, ra)
	}
	var e struct{ Error, Message string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error != "draining" {
		t.Errorf("%s: body %s, want the JSON error \"draining\"", what, body)
	}
}

func getWith(t testing.TB, url string, header http.Header) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

func TestDrainRefusesNewStreams(t *testing.T) {
	s := newTestServer(t, nil)
	ready := httptest.NewServer(s.hub.ReadyHandler())
	defer ready.Close()
	resp := getWith(t, ready.URL, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"ready":true}` {
		t.Fatalf("ready before the drain: %s %s", resp.Status, body)
	}

	// One stream open, so that the drain lasts its window.
	w := dialWS(t, s.wsURL(), nil)
	w.subscribe(t, "news")
	done := drainAsync(t, s.hub, time.Second)
	waitStats(t, s.hub, "draining", func(st live.Stats) bool { return st.Draining })

	expectDraining(t, "multiplexed SSE", getWith(t, s.srv.URL+"/api/live?channels=news", nil))
	expectDraining(t, "asking why (?channels=)", getWith(t, s.srv.URL+"/api/live?channels=", nil))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, wsResp, err := websocket.Dial(ctx, s.wsURL(), nil)
	if err == nil || wsResp == nil {
		t.Fatalf("WebSocket during the drain: err %v, want a refused handshake", err)
	}
	expectDraining(t, "WebSocket", wsResp)

	// EventSource gives up on anything but 200: a one-channel stream gets
	// a retry line, and ends.
	resp = getWith(t, s.srv.URL+"/api/live/news", http.Header{"Accept": {"text/event-stream"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("one-channel SSE during the drain: %s %v", resp.Status, resp.Header)
	}
	var retry string
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			break
		}
		if ev.Data != "" || ev.ID != "" {
			t.Errorf("one-channel SSE during the drain sent %+v", ev)
		}
		if ev.Retry != "" {
			retry = ev.Retry
		}
	}
	resp.Body.Close()
	if ms, err := strconv.Atoi(retry); err != nil || ms < 100 || ms >= 1000 {
		t.Errorf("one-channel SSE during the drain: retry %q, want [100, 1000) ms", retry)
	}

	// A poller is served until its turn in the window, then told to go.
	pos := s.publish(t, "news", 0)
	deadline := time.Now().Add(waitFor)
	for polls := 0; ; polls++ {
		resp := getWith(t, s.srv.URL+"/api/live?channels=news&poll=0&cursor.news="+pos.String(), nil)
		var frames []drainClose
		err := json.NewDecoder(resp.Body).Decode(&frames)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("poll %d during the drain: %s, %v", polls, resp.Status, err)
		}
		if len(frames) == 1 && frames[0].Type == "close" {
			if frames[0].CloseCode != 1012 || drainDelay(t, frames[0].Reason) != frames[0].Retry {
				t.Errorf("poll %d during the drain: %+v", polls, frames[0])
			}
			break
		}
		if len(frames) != 0 || time.Now().After(deadline) {
			t.Fatalf("poll %d during the drain answered %+v", polls, frames)
		}
		time.Sleep(10 * time.Millisecond) // a poller's pace
	}

	// Publishing goes on, over HTTP too.
	resp, err = http.Post(s.srv.URL+"/api/live/news", "application/json", strings.NewReader(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden { // clients may not publish by default
		t.Errorf("HTTP publish during the drain: %s, want the usual 403", resp.Status)
	}
	s.publish(t, "news", 1)

	resp = getWith(t, ready.URL, nil)
	expectCode(t, "ready while draining", resp, "draining")
	if err := done(); err != nil {
		t.Errorf("Drain: %v", err)
	}
	for {
		if _, ok := w.next(t); !ok {
			break
		}
	}
	if c := closeStatus(w.closeErr()); c != 1012 {
		t.Errorf("the WebSocket ended with %v, want 1012", w.closeErr())
	}
	if st := s.hub.Stats(); st.Drained != 2 || st.Connections != 0 { // the WebSocket and the poller
		t.Errorf("after the drain: Drained %d, Connections %d; want 2, 0", st.Drained, st.Connections)
	}
}

// expectCode checks a 503 with the JSON error code.
func expectCode(t testing.TB, what string, resp *http.Response, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Error string }
	json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusServiceUnavailable || e.Error != code {
		t.Errorf("%s: %s %s, want 503 %q", what, resp.Status, body, code)
	}
}

// drainClose is the close frame of a multiplexed stream or a long-poll.
type drainClose struct {
	Type      string `json:"type"`
	CloseCode int    `json:"closeCode"`
	Reason    string `json:"reason"`
	Retry     int    `json:"retry"`
}

func TestDrainEndsEveryTransport(t *testing.T) {
	s := newTestServer(t, nil)
	pos := s.publish(t, "news", 0)

	w := dialWS(t, s.wsURL(), nil)
	w.subscribe(t, "news")
	mux := openSSE(t, s.srv.URL+"/api/live?channels=news", nil)
	one := openSSE(t, s.srv.URL+"/api/live/news", nil)
	pollDone := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(s.srv.URL + "/api/live?channels=news&poll&cursor.news=" + pos.String())
		if err != nil {
			t.Error(err)
		}
		pollDone <- resp
	}()
	waitStats(t, s.hub, "four subscribers", func(st live.Stats) bool { return st.Subscriptions == 4 })

	done := drainAsync(t, s.hub, 900*time.Millisecond)

	// WebSocket: 1012 and the delay.
	for {
		if _, ok := w.next(t); !ok {
			break
		}
	}
	var ce websocket.CloseError
	if err := w.closeErr(); !errors.As(err, &ce) || ce.Code != 1012 {
		t.Fatalf("WebSocket ended with %v, want 1012", err)
	}
	drainDelay(t, ce.Reason)

	// Multiplexed SSE: a retry line, then the close frame, then the end.
	var retry string
	var last drainClose
	for {
		ev, ok := mux.next(t)
		if !ok {
			break
		}
		if ev.Retry != "" {
			retry = ev.Retry
		}
		if strings.HasPrefix(ev.Data, `{"type":"close"`) {
			json.Unmarshal([]byte(ev.Data), &last)
		}
	}
	if last.CloseCode != 1012 || strconv.Itoa(last.Retry) != retry || drainDelay(t, last.Reason) != last.Retry {
		t.Errorf("multiplexed SSE: retry %q, close %+v; want 1012 with the retry line's delay", retry, last)
	}

	// One-channel SSE: a retry line, then the end.
	retry = ""
	for {
		ev, ok := one.next(t)
		if !ok {
			break
		}
		if ev.Retry != "" {
			retry = ev.Retry
		}
	}
	if ms, err := strconv.Atoi(retry); err != nil || ms < 100 || ms >= 1000 {
		t.Errorf("one-channel SSE: retry %q, want [100, 1000) ms", retry)
	}

	// Long-poll: the close frame.
	var resp *http.Response
	select {
	case resp = <-pollDone:
	case <-time.After(waitFor):
		t.Fatal("the held poll was not answered")
	}
	if resp == nil {
		return
	}
	var frames []drainClose
	err := json.NewDecoder(resp.Body).Decode(&frames)
	resp.Body.Close()
	if err != nil || len(frames) != 1 || frames[0].Type != "close" || frames[0].CloseCode != 1012 || drainDelay(t, frames[0].Reason) != frames[0].Retry {
		t.Errorf("long-poll answered %+v (%v), want one close frame 1012 with its delay", frames, err)
	}

	if err := done(); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if st := s.hub.Stats(); st.Drained != 4 || st.Connections != 0 || !st.Draining {
		t.Errorf("after the drain: %+v", st)
	}
	// Close after Drain has nothing to end.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := s.hub.Close(ctx); err != nil {
		t.Errorf("Close after Drain: %v", err)
	}
	if err := s.hub.Drain(ctx); !errors.Is(err, live.ErrClosed) {
		t.Errorf("Drain after Close = %v, want ErrClosed", err)
	}
}

func TestDrainSpreadsEndings(t *testing.T) {
	s := newTestServer(t, nil)
	const n = 20
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, s.wsURL(), nil)
		clients[i].subscribe(t, "news")
	}
	start := time.Now()
	const window = time.Second
	done := drainAsync(t, s.hub, window)
	ended := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i, w := range clients {
		wg.Go(func() {
			for {
				select {
				case _, ok := <-w.frames:
					if ok {
						continue
					}
				case <-time.After(waitFor):
					t.Errorf("client %d not ended", i)
					return
				}
				ended[i] = time.Since(start)
				return
			}
		})
	}
	wg.Wait()
	if err := done(); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	slices.Sort(ended)
	// Spread over the window, not all at once: the endings span most of
	// it, and no tenth of it holds more than a third of them. (Slower
	// machines stretch the spread; none shrinks it.)
	if span := ended[n-1] - ended[0]; span < window/2 {
		t.Errorf("endings span %v of a %v window: %v", span, window, ended)
	}
	buckets := map[time.Duration]int{}
	for _, d := range ended {
		buckets[d/(window/10)]++
	}
	for b, k := range buckets {
		if k > n/3 {
			t.Errorf("%d of %d endings within [%v, %v): %v", k, n, b*window/10, (b+1)*window/10, ended)
		}
	}
}

// TestDrainMovesClientsToAnotherHub drains one of two hubs sharing a
// broker while publications go on: its clients, WebSocket and EventSource
// alike, come back on the other hub after the delay they were told and
// resume from their cursors, losing and repeating nothing.
func TestDrainMovesClientsToAnotherHub(t *testing.T) {
	b := live.NewMemoryBroker(&live.MemoryOptions{HistorySize: 4096})
	servertest.CloseAtEnd(t, b)
	a := servertest.NewNode(t, b, nil)
	other := servertest.NewNode(t, b, nil)
	const channel, total, clients = "feed", 300, 6

	// Each client reads from a, then, once a ends it, from other.
	type result struct {
		got   []int
		ended string // how a ended it
	}
	results := make([]result, clients)
	connected := make(chan struct{}, clients)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		ws := i%2 == 0
		wg.Go(func() {
			r := &results[i]
			cursor := ""
			for _, node := range []*servertest.Node{a, other} {
				var err error
				if ws {
					cursor, err = readWS(ctx, node.WS, channel, cursor, total, &r.got, &r.ended, connected)
				} else {
					cursor, err = readEventSource(ctx, node.SSE+channel, cursor, total, &r.got, &r.ended, connected)
				}
				if err != nil {
					t.Errorf("client %d on %s: %v", i, node.SSE, err)
					return
				}
				if len(r.got) == total {
					return
				}
			}
		})
	}
	for range clients {
		select {
		case <-connected:
		case <-ctx.Done():
			t.Fatal("clients did not connect")
		}
	}
	published := make(chan error, 1)
	go func() {
		for k := 1; k <= total; k++ {
			if _, err := other.Hub.Publish(ctx, channel, k); err != nil {
				published <- err
				return
			}
			time.Sleep(3 * time.Millisecond) // a steady stream across the drain, not a wait for delivery
		}
		published <- nil
	}()
	dctx, dcancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer dcancel()
	if err := a.Hub.Drain(dctx); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range results {
		want := make([]int, total)
		for k := range want {
			want[k] = k + 1
		}
		if !slices.Equal(r.got, want) {
			t.Errorf("client %d got %d publications, want 1…%d in order, each once: %v", i, len(r.got), total, r.got)
		}
		if !strings.HasPrefix(r.ended, "1012 restart; retry in") && !strings.HasPrefix(r.ended, "retry ") {
			t.Errorf("client %d: the drained hub ended it with %q", i, r.ended)
		}
	}
}

// readWS reads channel over a WebSocket at url, resuming after cursor,
// until it has total publications or the server ends the connection, and
// returns the cursor reached. ended says how the server ended it; a
// drain's delay is waited out before it returns.
func readWS(ctx context.Context, url, channel, cursor string, total int, got *[]int, ended *string, connected chan<- struct{}) (string, error) {
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return cursor, err
	}
	defer c.CloseNow()
	sub := map[string]string{"type": "subscribe", "channel": channel}
	if cursor != "" {
		sub["cursor"] = cursor
	}
	b, _ := json.Marshal(sub)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		return cursor, err
	}
	for len(*got) < total {
		_, b, err := c.Read(ctx)
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			*ended = fmt.Sprintf("%d %s", ce.Code, ce.Reason)
			if m := drainReason.FindStringSubmatch(ce.Reason); m != nil {
				ms, _ := strconv.Atoi(m[1])
				time.Sleep(time.Duration(ms) * time.Millisecond) // as told
			}
			return cursor, nil
		}
		if err != nil {
			return cursor, err
		}
		var f wsFrame
		json.Unmarshal(b, &f)
		switch f.Type {
		case "subscribed":
			if cursor == "" {
				cursor = f.Cursor
				connected <- struct{}{}
			}
		case "data":
			k, _ := strconv.Atoi(string(f.Data))
			*got = append(*got, k)
			cursor = f.Cursor
		case "reset", "error":
			return cursor, fmt.Errorf("unexpected %+v", f)
		}
	}
	return cursor, nil
}

// readEventSource reads a one-channel stream as EventSource does:
// Last-Event-ID carries the cursor, and a retry line says how long to
// wait before reconnecting.
func readEventSource(ctx context.Context, url, cursor string, total int, got *[]int, ended *string, connected chan<- struct{}) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	if cursor != "" {
		req.Header.Set("Last-Event-ID", cursor)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cursor, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cursor, fmt.Errorf("%s", resp.Status)
	}
	r := sse.NewReader(resp.Body)
	retry := 0
	for len(*got) < total {
		ev, err := r.Next()
		if err != nil {
			if retry == 0 {
				return cursor, fmt.Errorf("the stream ended without a retry line: %w", err)
			}
			*ended = fmt.Sprintf("retry %d", retry)
			time.Sleep(time.Duration(retry) * time.Millisecond) // as EventSource would
			return cursor, nil
		}
		switch {
		case ev.Retry != "":
			retry, _ = strconv.Atoi(ev.Retry)
		case ev.Event != "":
			return cursor, fmt.Errorf("unexpected event %+v", ev)
		case ev.HasID && ev.Data == "":
			if cursor == "" {
				connected <- struct{}{}
			}
			cursor = ev.ID
		case ev.HasID:
			k, _ := strconv.Atoi(ev.Data)
			*got = append(*got, k)
			cursor = ev.ID
		}
	}
	return cursor, nil
}

// stuckBroker never makes the control channel's subscription active.
type stuckBroker struct{ live.Broker }

func (b stuckBroker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	if strings.HasPrefix(channel, "@") {
		<-ctx.Done()
		return ctx.Err()
	}
	return b.Broker.Subscribe(ctx, channel, ready, deliver)
}

func TestReadyHandler(t *testing.T) {
	b := live.NewMemoryBroker(nil)
	servertest.CloseAtEnd(t, b)

	// A hub that cannot read the control channel back is not ready.
	stuck := live.NewHub(&live.Options{Broker: stuckBroker{b}, Logger: servertest.Logger(t)})
	defer servertest.CloseHub(t, stuck)
	rec := httptest.NewRecorder()
	stuck.ReadyHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
	expectCode(t, "a hub cut off from the broker", rec.Result(), "broker_unreachable")

	// A hub on a shared broker is ready once it has read itself back.
	hub := live.NewHub(&live.Options{Broker: b, Logger: servertest.Logger(t)})
	ready := func() int {
		rec := httptest.NewRecorder()
		hub.ReadyHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
		return rec.Code
	}
	deadline := time.Now().Add(waitFor)
	for ready() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the hub on a working broker did not become ready")
		}
		time.Sleep(10 * time.Millisecond) // polled as a probe would
	}
	if err := hub.Drain(context.Background()); err != nil { // no connection: returns at once
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	hub.ReadyHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
	expectCode(t, "a draining hub", rec.Result(), "draining")
	servertest.CloseHub(t, hub)
	rec = httptest.NewRecorder()
	hub.ReadyHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
	expectCode(t, "a closed hub", rec.Result(), "closed")
}

// gapBroker loses the second publication on its way to subscribers, and
// holds a read of history until open is closed: a hub that sees the gap
// catches up from history, and stays there meanwhile.
type gapBroker struct {
	*live.MemoryBroker
	open chan struct{}
}

func (b gapBroker) Subscribe(ctx context.Context, channel string, ready func(live.Position), deliver func(live.Message)) error {
	return b.MemoryBroker.Subscribe(ctx, channel, ready, func(m live.Message) {
		if channel == "c" && m.Pos.Seq == 2 {
			return
		}
		deliver(m)
	})
}

func (b gapBroker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	if channel == "c" {
		select {
		case <-b.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.MemoryBroker.Since(ctx, channel, after)
}

// TestReadyCatchingUp checks that a hub filling a gap from history is not
// ready until it has.
func TestReadyCatchingUp(t *testing.T) {
	b := gapBroker{live.NewMemoryBroker(nil), make(chan struct{})}
	servertest.CloseAtEnd(t, b)
	s := newTestServer(t, &live.Options{Broker: b, Logger: servertest.Logger(t)})
	ready := func() *http.Response {
		rec := httptest.NewRecorder()
		s.hub.ReadyHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
		return rec.Result()
	}
	await := func(what string, cond func(*http.Response) bool) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for !cond(ready()) {
			if time.Now().After(deadline) {
				t.Fatalf("the hub never became %s", what)
			}
			time.Sleep(10 * time.Millisecond) // polled as a probe would
		}
	}
	await("ready", func(r *http.Response) bool { return r.StatusCode == http.StatusOK })

	st := openRawSSE(t, s.srv.URL+"/live/c", nil)
	st.next(t) // subscribed
	for i := 1; i <= 3; i++ {
		s.publish(t, "c", i)
	}
	await("not ready while it catches up", func(r *http.Response) bool { return r.StatusCode == http.StatusServiceUnavailable })
	expectCode(t, "a hub catching up", ready(), "catching_up")

	close(b.open)
	for want := 1; want <= 3; want++ {
		if got := st.next(t); !strings.Contains(got, "data: "+strconv.Itoa(want)+"\n") {
			t.Fatalf("event %d: %q", want, got)
		}
	}
	await("ready again", func(r *http.Response) bool { return r.StatusCode == http.StatusOK })
}

func (b gapBroker) Follow(channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	return followBySubscribe(b, channel, ready, deliver, ended)
}
