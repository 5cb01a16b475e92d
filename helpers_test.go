package live_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/follow"
	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/internal/sse"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitFor bounds every wait in these tests: a broken hub fails a test
// instead of hanging it.
const waitFor = 10 * time.Second

// testServer is a hub mounted the ways an application would mount it: as
// one handler under /live/, and as separate handlers at the URLs React
// LiveProvider and useDeltaSync clients use (/ws, /api/live/{channel}).
type testServer struct {
	hub *live.Hub
	srv *httptest.Server
}

func newTestServer(t testing.TB, opts *live.Options) *testServer {
	t.Helper()
	hub := live.NewHub(opts)
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	mux.Handle("/ws", hub.WebSocketHandler())
	mux.Handle("GET /api/live", hub.SSEHandler()) // ?channels=a,b: what live.js streams
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
	mux.Handle("POST /api/live/{channel}", hub.PublishHandler())
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ReadHeaderTimeout = 500 * time.Millisecond // as every server should have
	srv.Start()
	t.Cleanup(func() {
		servertest.CloseHub(t, hub)
		srv.Close()
	})
	return &testServer{hub: hub, srv: srv}
}

func (s *testServer) wsURL() string { return "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/ws" }

func (s *testServer) publish(t testing.TB, channel string, v any) live.Position {
	t.Helper()
	pos, err := s.hub.Publish(context.Background(), channel, v)
	if err != nil {
		t.Fatalf("Publish(%q): %v", channel, err)
	}
	return pos
}

// waitStats waits until the hub's counters satisfy cond, which says what
// is awaited, failing t after waitFor.
func waitStats(t testing.TB, hub *live.Hub, what string, cond func(live.Stats) bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for !cond(hub.Stats()) {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %v; the hub's stats: %+v", what, waitFor, hub.Stats())
		}
	}
}

// sseEvent is one dispatched SSE event, or a comment line.
type sseEvent = sse.Event

// sseStream reads an SSE response on its own goroutine, which ends when
// the stream does; the test's cleanup closes the body and waits for it.
type sseStream struct {
	resp     *http.Response
	events   chan sseEvent
	statuses chan sseEvent // the hub's "status" notices, kept apart from events
	done     chan struct{}
	ctx      context.Context // ends at cleanup, so read never blocks it
}

// openSSE requests url and fails the test unless it answers 200 with an
// event stream. When it returns, the hub has registered the subscriber.
func openSSE(t testing.TB, url string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s: %s, Content-Type %q", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1024), statuses: make(chan sseEvent, 16), done: make(chan struct{}), ctx: ctx}
	go s.read()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.done
	})
	return s
}

func (s *sseStream) read() {
	defer close(s.done)
	defer close(s.events)
	r := sse.NewReader(s.resp.Body)
	for {
		ev, err := r.Next()
		if err != nil || !s.emit(ev) {
			return
		}
	}
}

// emit hands ev to the test; it reports false once the stream is being
// cleaned up, so an unread stream never blocks its cleanup.
func (s *sseStream) emit(ev sseEvent) bool {
	if ev.Notice() {
		select {
		case s.statuses <- ev:
		default:
		}
		return true
	}
	select {
	case s.events <- ev:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// next returns the next event other than heartbeat comments; ok is false
// when the stream has ended.
func (s *sseStream) next(t testing.TB) (ev sseEvent, ok bool) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		select {
		case ev, ok = <-s.events:
			if ok && ev.Comment != "" {
				continue
			}
			return ev, ok
		case <-timer.C:
			t.Fatalf("no SSE event within %v", waitFor)
			return
		}
	}
}

// nextData skips the id-only event that acknowledges a subscription and
// returns the next event with data.
func (s *sseStream) nextData(t testing.TB) sseEvent {
	t.Helper()
	for {
		ev, ok := s.next(t)
		if !ok {
			t.Fatal("SSE stream ended")
		}
		if ev.Data != "" || ev.Event != "" {
			return ev
		}
	}
}

// wsFrame is any frame the hub sends over WebSocket.
type wsFrame struct {
	Type     string          `json:"type"`
	Channel  string          `json:"channel,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Cursor   string          `json:"cursor,omitempty"`
	Reason   string          `json:"reason,omitempty"`
	Code     string          `json:"code,omitempty"`
	Message  string          `json:"message,omitempty"`
	Ref      json.RawMessage `json:"ref,omitempty"`
	QueryKey json.RawMessage `json:"queryKey,omitempty"`
	Members  []live.Member   `json:"members,omitempty"`
	Join     []live.Member   `json:"join,omitempty"`
	Leave    []string        `json:"leave,omitempty"`
	Count    int             `json:"count,omitempty"`
	Tag      string          `json:"tag,omitempty"`
	Conn     string          `json:"connection,omitempty"`
	Status   string          `json:"status,omitempty"`
	Event    string          `json:"event,omitempty"` // a text publication's
}

// wsClient reads frames on its own goroutine into a channel.
type wsClient struct {
	c        *websocket.Conn
	frames   chan wsFrame
	statuses chan wsFrame // the hub's "status" notices, kept apart from frames
	done     chan struct{}
	quit     chan struct{} // closed at cleanup
	mu       sync.Mutex    // guards err
	err      error         // why reading stopped
}

func dialWS(t testing.TB, url string, opts *websocket.DialOptions) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(-1)
	w := &wsClient{c: c, frames: make(chan wsFrame, 1024), statuses: make(chan wsFrame, 16), done: make(chan struct{}), quit: make(chan struct{})}
	go w.read()
	t.Cleanup(func() {
		close(w.quit)
		c.CloseNow()
		<-w.done
	})
	return w
}

func (w *wsClient) read() {
	defer close(w.done)
	defer close(w.frames)
	for {
		_, b, err := w.c.Read(context.Background())
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		var f wsFrame
		if err := json.Unmarshal(b, &f); err != nil {
			f = wsFrame{Type: "unparsable", Message: string(b)}
		}
		if f.Type == "status" {
			select {
			case w.statuses <- f:
			default:
			}
			continue
		}
		select {
		case w.frames <- f:
		case <-w.quit: // cleaning up; nobody reads any more
			return
		}
	}
}

func (w *wsClient) send(t testing.TB, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	w.sendRaw(t, websocket.MessageText, b)
}

func (w *wsClient) sendRaw(t testing.TB, typ websocket.MessageType, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.c.Write(ctx, typ, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// next returns the next frame; ok is false once the connection has ended.
func (w *wsClient) next(t testing.TB) (f wsFrame, ok bool) {
	t.Helper()
	select {
	case f, ok = <-w.frames:
		return f, ok
	case <-time.After(waitFor):
		t.Fatalf("no WebSocket frame within %v", waitFor)
		return
	}
}

// expect returns the next frame and fails unless it has type typ.
func (w *wsClient) expect(t testing.TB, typ string) wsFrame {
	t.Helper()
	f, ok := w.next(t)
	if !ok {
		t.Fatalf("connection ended (%v) while waiting for %q", w.closeErr(), typ)
	}
	if f.Type != typ {
		t.Fatalf("got frame %+v, want type %q", f, typ)
	}
	return f
}

// subscribe subscribes and waits for the acknowledgement, after which
// publications reach the client.
func (w *wsClient) subscribe(t testing.TB, channel string) wsFrame {
	t.Helper()
	w.send(t, map[string]string{"type": "subscribe", "channel": channel})
	return w.expect(t, "subscribed")
}

// closeErr returns why the connection ended, after next reported !ok.
func (w *wsClient) closeErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func closeStatus(err error) websocket.StatusCode {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// dialRawWS opens a WebSocket to s by hand, with the header lines in extra
// (each ending in CRLF) added to the handshake, and returns the connection,
// closed at cleanup, the server's response and a reader of size bufSize
// (0: the default) positioned after it.
func dialRawWS(t testing.TB, s *testServer, extra string, bufSize int) (net.Conn, *http.Response, *bufio.Reader) {
	t.Helper()
	addr := strings.TrimPrefix(s.srv.URL, "http://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", addr, extra)
	br := bufio.NewReaderSize(nc, max(bufSize, 16))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return nc, resp, br
}

// clientFrame returns a final client frame of op with payload (at most 125
// bytes), masked with a zero key, which leaves the payload as it is.
func clientFrame(op byte, payload []byte) []byte {
	return append([]byte{0x80 | op, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// readFrameHeader reads the header of an unmasked server frame: its first
// byte (FIN, RSV and opcode) and the length of its payload, which follows.
// It allocates nothing, so that benchmarks count the server's allocations.
func readFrameHeader(br *bufio.Reader) (first byte, n int, err error) {
	h, err := br.Peek(2)
	if err != nil {
		return 0, 0, err
	}
	first, n, size := h[0], int(h[1]&0x7f), 2
	switch n {
	case 126:
		size = 4
	case 127:
		size = 10
	}
	if h, err = br.Peek(size); err != nil {
		return 0, 0, err
	}
	switch size {
	case 4:
		n = int(binary.BigEndian.Uint16(h[2:4]))
	case 10:
		n = int(binary.BigEndian.Uint64(h[2:10]))
	}
	_, err = br.Discard(size)
	return first, n, err
}

// followBySubscribe is the Follow of a test broker that embeds another and
// changes its Subscribe: without it, the embedded broker's Follow would
// bypass the change.
func followBySubscribe(b live.Broker, channel string, ready func(live.Position), deliver func(live.Message), ended func(error)) (func(), error) {
	subscribe := func(ctx context.Context, ready func(live.Position), deliver func(live.Message)) error {
		return b.Subscribe(ctx, channel, ready, deliver)
	}
	return follow.Start(subscribe, ready, deliver, ended), nil
}
