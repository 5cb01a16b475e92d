package live_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/internal/sse"
)

// TestSSEOverHTTP2 checks the path for connections the hub cannot take
// over from net/http: over HTTP/2 the stream is written from its
// handler's goroutine, and behaves the same.
func TestSSEOverHTTP2(t *testing.T) {
	hub := live.NewHub(nil)
	srv := httptest.NewUnstartedServer(hub)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		servertest.CloseHub(t, hub)
		srv.Close()
	})
	client := srv.Client()

	open := func(t *testing.T, path string) *sse.Reader {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s %s; want HTTP/2 200", resp.Proto, resp.Status)
		}
		return sse.NewReader(resp.Body)
	}
	// data returns the data of the next event that has some.
	data := func(t *testing.T, r *sse.Reader) string {
		t.Helper()
		ev, err := nextData(r)
		if err != nil {
			t.Fatal(err)
		}
		return ev.Data
	}

	t.Run("one channel", func(t *testing.T) {
		r := open(t, "/live/h2")
		pos, err := hub.Publish(context.Background(), "h2", 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := data(t, r); got != "1" {
			t.Fatalf("got %q", got)
		}
		hub.Publish(context.Background(), "h2", 2)
		hub.Publish(context.Background(), "h2", 3)
		r = open(t, "/live/h2?cursor="+pos.String())
		for _, want := range []string{"2", "3"} {
			if got := data(t, r); got != want {
				t.Fatalf("resumed with %q; want %q", got, want)
			}
		}
	})
	t.Run("multiplexed", func(t *testing.T) {
		r := open(t, "/live/?channels=x,y")
		for _, want := range []string{`"channel":"x"`, `"channel":"y"`} {
			if got := data(t, r); !strings.Contains(got, `"subscribed"`) || !strings.Contains(got, want) {
				t.Fatalf("got %s; want subscribed on %s", got, want)
			}
		}
		hub.Publish(context.Background(), "y", "hello")
		if got := data(t, r); !strings.Contains(got, `"data":"hello"`) {
			t.Fatalf("got %s", got)
		}
	})
}

// TestOverTLS checks connections the hub takes over but cannot write
// without blocking (TLS): their writes run on a goroutine of their own.
// Enough is published to fill the socket several times over.
func TestOverTLS(t *testing.T) {
	// Queues large enough for everything: this is not about slow clients.
	hub := live.NewHub(&live.Options{Heartbeat: 20 * time.Millisecond, QueueBytes: 64 << 20})
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	mux.Handle("/ws", hub.WebSocketHandler())
	srv := httptest.NewTLSServer(mux) // HTTP/1.1 only
	t.Cleanup(func() {
		servertest.CloseHub(t, hub)
		srv.Close()
	})
	const n = 2000
	payload := strings.Repeat("x", 1000)

	t.Run("websocket", func(t *testing.T) {
		ws := dialWS(t, "wss"+strings.TrimPrefix(srv.URL, "https")+"/ws", &websocket.DialOptions{HTTPClient: srv.Client()})
		ws.subscribe(t, "tls-ws")
		go func() {
			for i := range n {
				hub.Publish(context.Background(), "tls-ws", map[string]any{"i": i, "p": payload})
			}
		}()
		for i := 0; i < n; {
			f, ok := ws.next(t)
			if !ok {
				t.Fatalf("closed after %d: %v", i, ws.closeErr())
			}
			if f.Type != "data" {
				continue
			}
			var v struct{ I int }
			json.Unmarshal(f.Data, &v)
			if v.I != i {
				t.Fatalf("got %d; want %d", v.I, i)
			}
			i++
		}
	})
	t.Run("sse", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/tls-sse", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		go func() {
			for i := range n {
				hub.Publish(context.Background(), "tls-sse", map[string]any{"i": i, "p": payload})
			}
		}()
		readInOrder(t, sse.NewReader(resp.Body), n)
	})
	// Idle connections leave the writers alone: publishing once more
	// starts one write, not a loop of them.
	before := hub.Drains()
	ws := dialWS(t, "wss"+strings.TrimPrefix(srv.URL, "https")+"/ws", &websocket.DialOptions{HTTPClient: srv.Client()})
	ws.subscribe(t, "tls-idle")
	hub.Publish(context.Background(), "tls-idle", 1)
	ws.expect(t, "data")
	for range 50 { // let a looping writer show itself
		hub.Publish(context.Background(), "tls-other", 1)
	}
	ws.send(t, map[string]string{"type": "ping"})
	ws.expect(t, "pong")
	if n := hub.Drains() - before; n > 10 {
		t.Errorf("%d writes started for %d frames", n, 3)
	}
}

// TestFullSocket publishes far more than a client's socket holds before
// the client reads anything: the writer finds the socket full, waits for
// the client elsewhere, and everything arrives in order.
func TestFullSocket(t *testing.T) {
	s := newTestServer(t, &live.Options{QueueBytes: 64 << 20})
	nc, err := net.Dial("tcp", strings.TrimPrefix(s.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	fmt.Fprintf(nc, "GET /live/full HTTP/1.1\r\nHost: x\r\n\r\n")
	// The subscription is in place once the response has begun.
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("response %v, %v", resp, err)
	}
	const n = 3000 // 30 MB: more than loopback socket buffers grow to
	payload := strings.Repeat("y", 10000)
	for i := range n {
		s.publish(t, "full", map[string]any{"i": i, "p": payload})
	}
	readInOrder(t, sse.NewReader(resp.Body), n)
}

// readInOrder reads n publications {"i": 0, ...} to {"i": n-1, ...}, in
// that order.
func readInOrder(t *testing.T, r *sse.Reader, n int) {
	t.Helper()
	for i := range n {
		ev, err := nextData(r)
		if err != nil {
			t.Fatalf("after %d: %v", i, err)
		}
		if want := fmt.Sprintf(`{"i":%d,`, i); !strings.HasPrefix(ev.Data, want) {
			t.Fatalf("got %.40s; want %s", ev.Data, want)
		}
	}
}

// nextData returns the next event of r that has data: not a comment nor
// an acknowledgement.
func nextData(r *sse.Reader) (sse.Event, error) {
	for {
		ev, err := r.Next()
		if err != nil || ev.Data != "" {
			return ev, err
		}
	}
}

// TestCompressedDelivery sends publications to a client that negotiated
// compression (they go through the WebSocket library, not the hub's own
// framing) while heartbeats ping it, and checks every one arrives intact.
func TestCompressedDelivery(t *testing.T) {
	s := newTestServer(t, &live.Options{Compression: true, Heartbeat: 5 * time.Millisecond, QueueBytes: 64 << 20})
	ws := dialWS(t, s.wsURL(), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	ws.subscribe(t, "z")
	const n = 500
	payload := strings.Repeat("compressible ", 200)
	go func() {
		for i := range n {
			s.hub.Publish(context.Background(), "z", map[string]any{"i": i, "p": payload})
		}
	}()
	for i := 0; i < n; {
		f, ok := ws.next(t)
		if !ok {
			t.Fatalf("closed after %d: %v", i, ws.closeErr())
		}
		if f.Type != "data" {
			continue
		}
		var v struct {
			I int
			P string
		}
		if err := json.Unmarshal(f.Data, &v); err != nil || v.I != i || v.P != payload {
			t.Fatalf("publication %d: got i=%d, %d bytes, %v", i, v.I, len(v.P), err)
		}
		i++
	}
}

// TestIdleWebSocketsPark checks that a WebSocket whose client has nothing
// to say has no reader goroutine where the hub's close watcher can wait
// for its socket, and that whatever the client sends next wakes one: the
// heartbeat's pongs (which keep the connection alive), its own pings
// (answered with their payload), and its frames.
func TestIdleWebSocketsPark(t *testing.T) {
	if !live.WatchesIdleStreams() {
		t.Skip("every WebSocket keeps a reader goroutine here")
	}
	const heartbeat, writeTimeout = 20 * time.Millisecond, 200 * time.Millisecond
	s := newTestServer(t, &live.Options{Heartbeat: heartbeat, WriteTimeout: writeTimeout})
	const n = 4
	var clients []*wsClient
	for range n {
		w := dialWS(t, s.wsURL(), nil)
		w.subscribe(t, "idle")
		clients = append(clients, w)
	}
	waitParked(t, s.hub, n)

	// Many heartbeats, each answered by a pong that a short-lived reader
	// takes: a client whose pongs went unseen would be dropped after
	// Heartbeat+WriteTimeout. Heartbeats go out until that has passed
	// twice over; with nothing published, each is one write to each
	// client.
	beats := int64(2 * (heartbeat + writeTimeout) / heartbeat)
	before := s.hub.Stats().Writes
	waitStats(t, s.hub, "every client's heartbeats written", func(st live.Stats) bool {
		return st.Writes-before >= n*beats
	})
	if st := s.hub.Stats(); st.Connections != n {
		t.Fatalf("%d connections after %d heartbeats; want %d", st.Connections, beats, n)
	}
	for _, w := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err := w.c.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	waitParked(t, s.hub, n)

	for _, w := range clients {
		w.subscribe(t, "idle-2")
	}
	s.publish(t, "idle", 1)
	s.publish(t, "idle-2", 2)
	for _, w := range clients {
		if f := w.expect(t, "data"); f.Channel != "idle" || string(f.Data) != "1" {
			t.Fatalf("got %+v", f)
		}
		if f := w.expect(t, "data"); f.Channel != "idle-2" || string(f.Data) != "2" {
			t.Fatalf("got %+v", f)
		}
	}
	waitParked(t, s.hub, n)
}

// waitParked waits until n WebSockets of h are parked.
func waitParked(t *testing.T, h *live.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for live.ParkedWebSockets(h) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d WebSockets parked, want %d", live.ParkedWebSockets(h), n)
		}
		runtime.Gosched()
	}
}

// TestCompressedFramesOnTheWire reads what compressing connections get:
// a message from 512 bytes is compressed (RSV1 set) and inflates to the
// data frame, one compression serving every connection (the same bytes
// on both); a smaller message goes as it is.
func TestCompressedFramesOnTheWire(t *testing.T) {
	s := newTestServer(t, &live.Options{Compression: true, Heartbeat: time.Hour})
	var readers []*bufio.Reader
	for range 2 {
		nc, resp, br := dialRawWS(t, s, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", 0)
		if !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "server_no_context_takeover") {
			t.Fatalf("handshake: %v", resp.Header)
		}
		nc.SetDeadline(time.Now().Add(waitFor))
		nc.Write(clientFrame(0x1, []byte(`{"type":"subscribe","channel":"z"}`)))
		if op, _ := readServerFrame(t, br); op != 0x81 {
			t.Fatalf("the acknowledgement: first byte %#x", op)
		}
		readers = append(readers, br)
	}
	big := strings.Repeat("compressible ", 100)
	s.publish(t, "z", big)
	s.publish(t, "z", "small")
	var first []byte
	for i, br := range readers {
		op, payload := readServerFrame(t, br)
		if op != 0xc1 {
			t.Fatalf("the large message: first byte %#x, want 0xc1 (final, compressed, text)", op)
		}
		if i == 0 {
			first = payload
		} else if !bytes.Equal(payload, first) {
			t.Error("the connections got different compressed bytes")
		}
		inflated, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(payload), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff"))))
		if err != nil {
			t.Fatalf("inflate: %v", err)
		}
		var f wsFrame
		if err := json.Unmarshal(inflated, &f); err != nil || f.Type != "data" || string(f.Data) != strconv.Quote(big) {
			t.Fatalf("inflated to %.80q: %v", inflated, err)
		}
		if op, payload := readServerFrame(t, br); op != 0x81 || !strings.Contains(string(payload), `"small"`) {
			t.Fatalf("the small message: first byte %#x, %q", op, payload)
		}
	}
}

// readServerFrame reads one unmasked server frame: its first byte (FIN,
// RSV and opcode) and its payload.
func readServerFrame(t *testing.T, br *bufio.Reader) (first byte, payload []byte) {
	t.Helper()
	first, n, err := readFrameHeader(br)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return first, payload
}
