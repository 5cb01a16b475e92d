package live_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
)

// hostileInput is one abusive request and the answer it must get.
type hostileInput struct {
	name string
	run  func(t *testing.T, s *testServer) string // returns the answer's code
	want string
}

// hostileCorpus builds more than 200 malformed or abusive inputs over
// WebSocket, SSE and HTTP publish.
func hostileCorpus() []hostileInput {
	var in []hostileInput
	ws := func(name, frame, want string) {
		in = append(in, hostileInput{name: "ws " + name, want: want, run: func(t *testing.T, s *testServer) string {
			c := dialWS(t, s.wsURL(), nil)
			c.sendRaw(t, websocket.MessageText, []byte(frame))
			f, ok := c.next(t)
			if !ok {
				return fmt.Sprint(closeStatus(c.closeErr()))
			}
			return f.Code
		}})
	}
	get := func(name, path, want string) {
		in = append(in, hostileInput{name: "sse " + name, want: want, run: func(t *testing.T, s *testServer) string {
			return httpCode(t, "GET", s.srv.URL+path, "")
		}})
	}
	post := func(name, path, body, want string) {
		in = append(in, hostileInput{name: "post " + name, want: want, run: func(t *testing.T, s *testServer) string {
			return httpCode(t, "POST", s.srv.URL+path, body)
		}})
	}

	for i, bad := range []string{"", "{", "}", "[", "{]", `{"type":}`, `{"type":"subscribe",}`, `{'type':'subscribe'}`,
		`{"type":"subscribe"`, "nul", "tru", `"`, `{"a":1}{"b":2}`, `{"type":"subscribe"} x`, "\x00", `{"type":"subscribe","channel":"c"`,
		strings.Repeat("{", 100), `{"type":"subscribe","channel":"c\x01"}`, `{"type":"\ud800"`, `[`} {
		ws(fmt.Sprintf("bad json %d", i), bad, "bad_json")
	}
	for i, wrong := range []string{`{"type":1}`, `{"type":true}`, `{"type":[]}`, `{"type":{}}`, `{"type":"subscribe","channel":1}`,
		`{"type":"subscribe","channel":[]}`, `{"type":"subscribe","channel":true}`, `{"type":"subscribe","channel":"c","cursor":1}`,
		`{"type":"subscribe","channel":"c","cursor":{}}`, `[1,2,3]`, `"string"`, `12`, `true`, `{"type":"subscribe","channel":"c","cursor":[]}`,
		strings.Repeat("[", 3000) + strings.Repeat("]", 3000)} {
		ws(fmt.Sprintf("wrong type %d", i), wrong, "bad_frame")
	}
	for _, typ := range []string{"", "SUBSCRIBE", "Subscribe", "sub", "pub", "data", "reset", "error", "subscribed", "hello", "delete",
		"admin", "\u0000", "subscribe ", " subscribe", "publish\n", "ping2", strings.Repeat("x", 1000), "ünïcode", "null"} {
		b, _ := json.Marshal(map[string]string{"type": typ, "channel": "c"})
		ws("unknown type "+url.QueryEscape(typ[:min(len(typ), 20)]), string(b), "unknown_type")
	}
	badChannels := []string{"", " ", "a b", "a/b", "/", ".", "..", "a\\b", "a?b", "a#b", "a%b", "a&b", "a*b", "a<b", "a>b", "a|b", "a\"b",
		"a'b", "a,b", "a;b", "a\tb", "a\nb", "é", "日本", "😀", "a\x00b", "a\x7fb", strings.Repeat("c", 129), strings.Repeat("c", 10000),
		"a!b", "a$b", "a(b)", "a[b]", "a{b}", "a~b", "a^b", "a`b"}
	for i, ch := range badChannels {
		b, _ := json.Marshal(map[string]string{"type": "subscribe", "channel": ch})
		ws(fmt.Sprintf("bad channel %d", i), string(b), "bad_channel")
		if ch != "" && ch != "." && ch != ".." && !strings.ContainsAny(ch, "/?#\x00\n\t") { // routable at all
			get(fmt.Sprintf("bad channel %d", i), "/live/"+url.PathEscape(ch), "400")
			post(fmt.Sprintf("bad channel %d", i), "/live/"+url.PathEscape(ch), "1", "400")
		}
	}
	for i, cur := range malformedCursors {
		ws(fmt.Sprintf("malformed cursor %d", i), fmt.Sprintf(`{"type":"subscribe","channel":"c","cursor":%q}`, cur), "") // subscribed, then reset
	}
	ws("publish refused", `{"type":"publish","channel":"c","data":1}`, "forbidden")
	ws("huge frame", `{"type":"ping","ref":"`+strings.Repeat("x", 70<<10)+`"}`, fmt.Sprint(websocket.StatusMessageTooBig))
	for i, body := range []string{"", "{", "nope", "1 2", `{"a":1}x`, "\xff\xfe", `"\xff"`, strings.Repeat("[", 50000), "<xml/>", "\x00",
		`{"a":` + strings.Repeat("1", 10) + `,}`, "undefined", "NaN", "Infinity", "'single'", "{a:1}"} {
		in = append(in, hostileInput{name: fmt.Sprintf("post bad body %d", i), want: "400", run: func(t *testing.T, s *testServer) string {
			return httpCode(t, "POST", s.srv.URL+"/live/open:c", body)
		}})
	}
	post("oversize", "/live/open:c", `"`+strings.Repeat("x", 70<<10)+`"`, "413")
	post("forbidden channel", "/live/c", "1", "403")
	for _, method := range []string{"PUT", "DELETE", "PATCH", "TRACE", "CONNECT2"} {
		in = append(in, hostileInput{name: "method " + method, want: "405", run: func(t *testing.T, s *testServer) string {
			return httpCode(t, method, s.srv.URL+"/live/c", "")
		}})
	}
	for i, origin := range []string{"null", "https://evil.example", "http://127.0.0.1.evil.example", "file://", "chrome-extension://x"} {
		in = append(in, hostileInput{name: fmt.Sprintf("origin %d", i), want: "403", run: func(t *testing.T, s *testServer) string {
			req, _ := http.NewRequest("GET", s.srv.URL+"/live/c", nil)
			req.Header.Set("Origin", origin)
			return doCode(t, req)
		}})
	}
	in = append(in, hostileInput{name: "ws thousands of subscribes", want: "too_many_subscriptions", run: func(t *testing.T, s *testServer) string {
		c := dialWS(t, s.wsURL(), nil)
		for i := range 2000 {
			c.sendRaw(t, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"subscribe","channel":"many-%d"}`, i)))
		}
		for {
			f, ok := c.next(t)
			if !ok || f.Type == "error" {
				return f.Code
			}
		}
	}})
	in = append(in, hostileInput{name: "ws publish flood", want: "rate_limited", run: func(t *testing.T, s *testServer) string {
		c := dialWS(t, s.wsURL(), nil)
		for range 500 {
			c.sendRaw(t, websocket.MessageText, []byte(`{"type":"publish","channel":"open:flood","data":1}`))
		}
		for {
			f, ok := c.next(t)
			if !ok || f.Type == "error" {
				return f.Code
			}
		}
	}})
	// Connections that never finish their request: net/http's
	// ReadHeaderTimeout (which every server should set; the test server's
	// is 500 ms) closes them, and the hub never sees them.
	stall := func(name, send string, drip bool) {
		in = append(in, hostileInput{name: "tcp " + name, want: "closed", run: func(t *testing.T, s *testServer) string {
			return stalledRequest(t, s, send, drip)
		}})
	}
	stall("idle, never sends a request", "", false)
	stall("half a WebSocket handshake", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", false)
	stall("half an SSE request", "GET /live/c HTTP/1.1\r\nHost: x\r\n", false)
	stall("a handshake dripped a byte at a time", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", true)
	return in
}

// stalledRequest sends part of a request, dripped or at once, and waits
// for the server to close the connection.
func stalledRequest(t *testing.T, s *testServer, send string, drip bool) string {
	nc, err := net.Dial("tcp", strings.TrimPrefix(s.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		io.Copy(io.Discard, nc) // ends when the server closes
	}()
	if !drip {
		io.WriteString(nc, send)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for i := 0; ; {
		select {
		case <-closed:
			return "closed"
		case <-deadline:
			return "still open"
		case <-tick.C:
			if drip && i < len(send) {
				nc.Write([]byte{send[i]})
				i++
			}
		}
	}
}

func httpCode(t *testing.T, method, url, body string) string {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return "bad request"
	}
	return doCode(t, req)
}

func doCode(t *testing.T, req *http.Request) string {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}

// TestHostileCorpus sends every input of the corpus while a canary
// subscriber receives 100 publications. Each input gets its defined
// answer without hanging (the slowest is logged), nothing panics, and the
// canary misses nothing.
func TestHostileCorpus(t *testing.T) {
	corpus := hostileCorpus()
	if len(corpus) < 200 {
		t.Fatalf("only %d inputs", len(corpus))
	}
	s := newTestServer(t, &live.Options{
		MaxConnsPerIP: -1,
		Authorize: func(_ *http.Request, channel string, op live.Op) error {
			if op == live.OpPublish && !strings.HasPrefix(channel, "open:") {
				return live.ErrForbidden
			}
			return nil
		},
	})
	canary := openSSE(t, s.srv.URL+"/live/canary", nil)
	every := len(corpus) / 100
	published := 0
	var slowest time.Duration
	for i, in := range corpus {
		start := time.Now()
		got := in.run(t, s)
		if d := time.Since(start); d > slowest {
			slowest = d
		}
		if in.want != "" && got != in.want {
			t.Errorf("%s: answered %q, want %q", in.name, got, in.want)
		}
		if i%every == 0 && published < 100 {
			s.publish(t, "canary", published)
			published++
		}
	}
	for published < 100 {
		s.publish(t, "canary", published)
		published++
	}
	if diff := fmt.Sprint(readSSEData(t, canary, 100)); diff != fmt.Sprint(seq(0, 99)) {
		t.Errorf("canary got %s", diff)
	}
	// A bound against hangs, not a speed target: the stalled inputs take
	// the server's ReadHeaderTimeout, and more on a busy machine.
	if slowest > 5*time.Second {
		t.Errorf("the slowest input took %v to be answered", slowest)
	}
	t.Logf("%d hostile inputs, slowest answer %v, canary 100 of 100", len(corpus), slowest)
}

// TestSSEClientSendsData: an SSE client that sends bytes after its request
// loses its stream where idle streams share the hub's epoll set (one
// client must not keep the shared watcher busy); other streams go on.
func TestSSEClientSendsData(t *testing.T) {
	if !live.WatchesIdleStreams() {
		t.Skip("streams have a reader goroutine each here, which reads and ignores such bytes")
	}
	s := newTestServer(t, nil)
	other := openSSE(t, s.srv.URL+"/api/live/noisy", nil)
	c, err := net.Dial("tcp", s.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /api/live/noisy HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", s.srv.Listener.Addr())
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	c.Write([]byte("unexpected"))
	c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the stream was not ended: %v", err)
	}
	s.publish(t, "noisy", 1)
	if ev := other.nextData(t); ev.Data != "1" {
		t.Fatalf("the other stream: %+v", ev)
	}
}

// TestPingFlood sends pings as fast as a client can without reading the
// pongs: the hub drops that connection once its unread pongs pass twice
// QueueBytes, rather than holding them all, and other clients go on.
func TestPingFlood(t *testing.T) {
	s := newTestServer(t, &live.Options{QueueBytes: 64 << 10, Heartbeat: time.Hour})
	other := dialWS(t, s.wsURL(), nil)
	other.subscribe(t, "calm")
	nc, _, _ := dialRawWS(t, s, "", 0)
	nc.(*net.TCPConn).SetReadBuffer(4096)
	// Pings of 125 bytes, 64 at a time: 40 MB of pongs if the hub kept
	// them all.
	ping := clientFrame(0x9, make([]byte, 125))
	burst := make([]byte, 0, 64*len(ping))
	for range 64 {
		burst = append(burst, ping...)
	}
	nc.SetWriteDeadline(time.Now().Add(waitFor))
	dropped := false
	for range 5000 {
		if _, err := nc.Write(burst); err != nil {
			dropped = true
			break
		}
	}
	if !dropped {
		t.Fatal("the hub took 40 MB of pings from a client that read no pong")
	}
	s.publish(t, "calm", 1)
	if f := other.expect(t, "data"); string(f.Data) != "1" {
		t.Fatalf("the other client got %+v", f)
	}
}
