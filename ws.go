package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// serveWS accepts a WebSocket connection that multiplexes channels. The
// frames are those of React LiveProvider clients, in JSON text messages:
//
//	→ {"type":"subscribe","channel":"C"}           optional "cursor" to resume
//	→ {"type":"unsubscribe","channel":"C"}
//	→ {"type":"publish","channel":"C","data":…}
//	← {"type":"data","channel":"C","data":…,"cursor":"…"}
//
// and, added: "subscribed", "unsubscribed" and "published" acknowledgements,
// "reset" (refetch the channel), "error", and "ping"/"pong" for clients that
// cannot send protocol-level pings. A client's "ref" is echoed on the
// reply to its frame. Clients that ignore unknown types, as LiveProvider
// does, keep working.
func (h *Hub) serveWS(w http.ResponseWriter, r *http.Request) {
	if !isWebSocket(r) {
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket")
		return
	}
	if ch := r.PathValue("channel"); ch != "" {
		refuseChannelSocket(w, ch)
		return
	}
	g := h.controlGen()
	r, ok := h.admit(w, r, "", "")
	if !ok {
		return
	}
	c := newConn(h, r, true)
	if err := h.enter(c, g); err != nil {
		refuse(w, err)
		return
	}

	mode := websocket.CompressionDisabled
	if h.opts.Compression {
		mode = websocket.CompressionNoContextTakeover
	}
	c.seen.Store(time.Now().UnixNano())
	ws, err := websocket.Accept(hijackWriter{w, c}, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // the origin was checked above, with the same rules as CORS
		CompressionMode:    mode,
		OnPongReceived:     func(_ context.Context, p []byte) { c.seen.Store(time.Now().UnixNano()); c.pong(p) },
	})
	if err != nil {
		h.leave(c)
		return // Accept has answered the request
	}
	ws.SetReadLimit(h.opts.MaxMessageBytes)

	// The hub's writers write; a reader goroutine reads while the client
	// sends (readWS). This handler returns, so net/http lets go of the
	// request's buffers, and so does the connection where it has no
	// Authorize of the application's to run again. Reads take a context
	// without a deadline, which costs the library no timer per read; kill
	// closes the socket to end them.
	c.wsc = ws
	c.flate = w.Header().Get("Sec-WebSocket-Extensions") != ""
	// Authorize runs for the client's frames after this handler returned:
	// its request carries the connection's context (authRequest).
	c.mu.Lock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(r.Context()))
		if c.ended {
			c.cancel()
		}
	}
	if h.ownAuthorize || ticketed(r) {
		// Kept for Authorize, and for the ticket's channels.
		c.req = r.WithContext(c.ctx)
	} else {
		c.req = nil
	}
	c.mu.Unlock()
	c.takeOver(nil, wireWS, nil)
	if c.br.Buffered() > 0 || !h.closes.park(c) {
		h.spawn(c, c.readWS)
	}
}

// refuseChannelSocket answers an upgrade at a URL that names channel: a
// WebSocket multiplexes whatever channels its client asks for, which would
// walk around a guard that protects the route by its path.
func refuseChannelSocket(w http.ResponseWriter, channel string) {
	writeError(w, http.StatusBadRequest, "bad_channel",
		"this URL names channel "+clip(channel)+"; open WebSockets at a URL that names none, such as /ws or the prefix mount's own path")
}

// clientFrame is a frame from a WebSocket client.
type clientFrame struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Cursor  *string         `json:"cursor"`
	Ref     json.RawMessage `json:"ref"`
}

// readWS is a WebSocket's reader. It handles the client's frames in order
// until the connection ends, or until the client has sent everything it
// had where the hub's close watcher can wait for its socket instead; the
// watcher starts a reader again when bytes arrive. An idle WebSocket so
// costs no goroutine, and a heartbeat's pong only a short-lived one.
func (c *conn) readWS() {
	h := c.hub
	rctx := context.WithoutCancel(c.ctx)
	for {
		if err := c.waitReadable(); err != nil {
			break
		}
		if !c.takeControl() {
			typ, data, err := c.wsc.Read(rctx)
			if err != nil {
				break
			}
			c.seen.Store(time.Now().UnixNano())
			if typ == websocket.MessageText {
				h.handleFrame(c.ctx, c, data)
			} else {
				c.push(errorFrame("bad_frame", "send JSON in text messages; binary messages are not supported", "", nil))
			}
		}
		if c.br.Buffered() == 0 && h.closes.park(c) {
			return
		}
	}
	// Finish a close handshake the library or the client began (a frame
	// over the read limit, say), so the client learns why.
	c.wsc.Close(websocket.StatusNormalClosure, "")
	c.kill(net.ErrClosed)
	h.leave(c)
}

// takeControl reads a ping or a pong the client sent between messages,
// answering a ping, and reports whether there was one. Frames the
// library must judge (anything malformed, a close) are left to it. It
// lets a reader woken by a pong go back to the close watcher, where the
// library would wait inside its read for the next message.
func (c *conn) takeControl() bool {
	b, _ := c.br.Peek(2)
	if len(b) < 2 || (b[0] != 0x80|opPing && b[0] != 0x80|opPong) || b[1]&0x80 == 0 || b[1]&0x7f > 125 {
		return false // not a final, masked, short ping or pong
	}
	n := int(b[1] & 0x7f)
	f, err := c.br.Peek(2 + 4 + n)
	if err != nil {
		return false
	}
	op := f[0] & 0x0f
	if op == opPing {
		p := appendWSHeader(make([]byte, 0, 2+n), opPong, n)
		for i, x := range f[6:] {
			p = append(p, x^f[2+i%4])
		}
		c.writeRaw(p)
	} else {
		c.pongMasked(f[2:6], f[6:])
	}
	c.br.Discard(len(f))
	c.seen.Store(time.Now().UnixNano())
	return true
}

func (h *Hub) handleFrame(ctx context.Context, c *conn, data []byte) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			c.push(errorFrame("bad_frame", "field "+typeErr.Field+" has the wrong type", "", nil))
			return
		}
		c.push(errorFrame("bad_json", "a frame must be one JSON object", "", nil))
		return
	}
	ref := clipRef(f.Ref)
	switch f.Type {
	case "subscribe", "unsubscribe", "publish":
	case "ping":
		c.push(control{Type: "pong", Ref: ref}.encode(true))
		return
	default:
		c.push(errorFrame("unknown_type", "unknown frame type "+clip(f.Type), "", ref))
		return
	}

	ch := f.Channel
	if _, code, msg := channelRefusal(ch); code != "" {
		if len(ch) > MaxChannelLen {
			ch = ""
		}
		c.push(errorFrame(code, msg, ch, ref))
		return
	}
	switch f.Type {
	case "subscribe":
		from := resumeFrom{}
		if f.Cursor != nil {
			from = parseResume(*f.Cursor)
		}
		if f := h.start(ctx, c, ch, from, ref, 0, false); f != nil {
			c.push(f.frame(ch, ref))
		}

	case "unsubscribe":
		h.unsubscribe(c, ch)
		c.push(control{Type: "unsubscribed", Channel: ch, Ref: ref}.encode(true))

	case "publish":
		if f := h.authorize(c.req, ch, OpPublish); f != nil {
			c.push(f.frame(ch, ref))
			return
		}
		if f.Data == nil {
			c.push(errorFrame("bad_frame", "a publish frame needs data", ch, ref))
			return
		}
		if !c.allowPublish(time.Now()) {
			c.push(errorFrame("rate_limited", "too many publishes; slow down", ch, ref))
			return
		}
		if h.isState(ch) {
			c.push(errorFrame("state_channel", "write to a state channel through its own endpoint", ch, ref))
			return
		}
		body, err := compactValue(f.Data)
		if err != nil {
			c.push(errorFrame("bad_json", err.Error(), ch, ref))
			return
		}
		pos, err := h.publish(ctx, ch, body)
		if err != nil {
			code := "unavailable"
			switch {
			case errors.Is(err, ErrClosed):
				code = "closed"
			case errors.Is(err, ErrTooLarge):
				code = "too_large"
			}
			c.push(errorFrame(code, "publish failed", ch, ref))
			return
		}
		c.push(control{Type: "published", Channel: ch, Cursor: pos.String(), Ref: ref}.encode(true))
	}
}

// corkConn is the connection the WebSocket library writes to: what it
// writes (pongs, close frames) joins c's output, in
// order with the frames the writers add, and is written by them.
type corkConn struct {
	net.Conn
	c *conn
}

func (k *corkConn) Write(p []byte) (int, error) { return k.c.writeRaw(p) }

// writeRaw adds p, bytes of the transport's own, to c's output.
func (c *conn) writeRaw(p []byte) (int, error) {
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return 0, net.ErrClosed
	}
	c.wmu.Lock()
	if len(c.out) > 2*c.hub.opts.QueueBytes {
		// Pongs piling up: a client that pings without reading. What the
		// queue holds is at most QueueBytes, so this is not a slow reader
		// of publications.
		c.wmu.Unlock()
		c.kill(errSlow)
		return 0, errSlow
	}
	if c.out == nil {
		c.out = getOut()
	}
	c.out = append(c.out, p...)
	c.wmu.Unlock()
	c.schedule()
	return len(p), nil
}

// Close writes what is pending, as far as the socket takes it now (the
// library closes right after its close frame), then ends c.
func (k *corkConn) Close() error {
	k.c.flushNow()
	k.c.kill(net.ErrClosed)
	k.Conn.Close() // kill leaves it to finish when Disconnect came first
	return nil
}

// hijackWriter lets the WebSocket library take the connection over with
// small buffers, and routes its writes through the hub's writers.
type hijackWriter struct {
	http.ResponseWriter
	c *conn
}

func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	cc := &corkConn{Conn: nc, c: w.c}
	w.c.wmu.Lock()
	w.c.setConnLocked(nc)
	w.c.wmu.Unlock()
	br := brw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(nc, 512)
	}
	w.c.br = br
	// Control frames are at most 131 bytes, so each reaches corkConn in
	// one Write.
	return cc, bufio.NewReadWriter(br, bufio.NewWriterSize(cc, 256)), nil
}

// errNoHijack reports a ResponseWriter the hub cannot take over.
var errNoHijack = errors.New("live: connection cannot be taken over")

// waitReadable waits, on a shallow stack, until c's socket has something
// to read. A reader that parks here rather than deep inside the WebSocket
// library lets the runtime shrink its stack to the minimum while the
// connection is idle. It returns at once when that cannot be done.
func (c *conn) waitReadable() error {
	if c.raw == nil || c.br == nil || c.br.Buffered() > 0 {
		return nil
	}
	return c.raw.Read(readable)
}
