package live

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// serveSSE streams one channel as Server-Sent Events.
//
// Each publication is one event whose data is the published JSON and whose
// id is its cursor, so EventSource resumes by itself: on reconnection it
// sends Last-Event-ID and the stream replays what was missed. A cursor can
// also be given as ?cursor=, or as ?version=N (a bare sequence number in
// the channel's current numbering, which React's useDeltaSync sends).
// When a cursor cannot be honoured the stream starts with a named "reset"
// event instead, and the client must refetch.
//
// ?connection=<id> names the stream's connection (see
// [NewConnectionID]), for a page that sends the same id in its writes'
// [ConnectionHeader].
func (h *Hub) serveSSE(w http.ResponseWriter, r *http.Request) {
	channel := pathChannel(r)
	if r.URL.Query().Has("channels") {
		if channel != "" {
			writeError(w, http.StatusBadRequest, "bad_channel",
				"this URL streams channel "+clip(channel)+" only; ask for several channels at a URL that names none, such as the prefix mount's own path")
			return
		}
		h.serveSSEMux(w, r)
		return
	}
	if channel == "" {
		writeError(w, http.StatusBadRequest, "bad_channel", "the URL names no channel: stream one at …/{channel}, or several with ?channels=a,b")
		return
	}
	g := h.controlGen()
	r, ok := h.admit(w, r, channel, OpSubscribe)
	if !ok {
		return
	}
	if r.URL.Query().Has("presence") {
		h.servePresence(w, r, channel)
		return
	}
	key := ""
	if q := r.URL.Query(); q.Has("connection") {
		key = q.Get("connection")
		if !validConnKey(key) {
			writeError(w, http.StatusBadRequest, "bad_connection",
				"connection must be a connection id such as live.NewConnectionID makes: 16 to 24 characters of A-Z, a-z, 0-9, - and _")
			return
		}
	}
	if r.Method == http.MethodHead {
		setStreamHeaders(w)
		w.WriteHeader(http.StatusOK)
		return
	}

	c := newConn(h, r, false)
	if key != "" {
		c.key = key
	}
	if err := h.enter(c, g); err != nil {
		if errors.Is(err, errDraining) {
			refuseDraining(w, true) // EventSource comes back only after a 200
			return
		}
		refuse(w, err)
		return
	}

	// Subscribe before answering, so that a client that has seen the
	// response headers receives everything published after that.
	if f := h.start(r.Context(), c, channel, resumeFromRequest(r), nil, g, true); f != nil {
		h.leave(c)
		f.write(w)
		return
	}
	h.stream(w, r, c, false)
}

// serveSSEMux streams several channels on one response, for browsers that
// cannot open a WebSocket: HTTP/1.1 allows them only six connections per
// host, so one EventSource per channel does not scale. The request is
//
//	GET …?channels=a,b,c&cursor.a=<cursor>
//
// and every event's data is one frame exactly as the WebSocket sends it
// ("subscribed", "data", "reset", "error"), with no id lines: the client
// keeps each channel's cursor and reconnects with them, also when it
// changes its set of channels. A channel the client may not read gets an
// error frame and the others stream; when none can be read, or the list
// itself is malformed, the answer is an HTTP error with a JSON body.
func (h *Hub) serveSSEMux(w http.ResponseWriter, r *http.Request) {
	g := h.controlGen()
	r, ok := h.admit(w, r, "", "")
	if !ok {
		return
	}
	// While the hub drains, a poller is served until its turn (drain.go);
	// any other stream is turned away before the list is checked, as
	// live.js asks ?channels= why a WebSocket failed.
	until, draining := h.pollTurn(r)
	if draining && !until.After(time.Now()) {
		h.answerRestart(w, r)
		return
	}
	q := r.URL.Query()
	var channels []string
	seen := make(map[string]bool)
	for _, v := range q["channels"] {
		for ch := range strings.SplitSeq(v, ",") {
			if ch == "" || seen[ch] {
				continue
			}
			if status, code, msg := channelRefusal(ch); code != "" {
				writeError(w, status, code, msg)
				return
			}
			seen[ch] = true
			channels = append(channels, ch)
		}
	}
	hold, err := pollHold(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_poll", err.Error())
		return
	}
	if draining {
		hold = min(hold, time.Until(until))
	}
	resumed := make(map[string]bool)
	switch {
	case len(channels) == 0:
		writeError(w, http.StatusBadRequest, "bad_channel", "channels names no channel; send ?channels=a,b")
		return
	case len(channels) > h.opts.MaxSubscriptions:
		writeError(w, http.StatusBadRequest, "too_many_subscriptions", errTooManySubscriptions.Error())
		return
	}

	c := newConn(h, r, true)
	c.until = until
	c.acks = len(channels)
	if err := h.enter(c, g); err != nil {
		refuse(w, err)
		return
	}

	// The first refusal is the answer when no channel can be streamed.
	var first *refusal
	subscribed := 0
	leave := h.joinAll(channels)
	for _, ch := range channels {
		from := resumeFrom{}
		k := "cursor." + ch
		if q.Has(k) {
			from = parseResume(q.Get(k))
		}
		if f := h.start(r.Context(), c, ch, from, nil, 0, false); f != nil {
			c.push(f.frame(ch, nil))
			if first == nil {
				first = f
			}
			continue
		}
		resumed[ch] = q.Has(k)
		subscribed++
	}
	leave()
	if subscribed == 0 || r.Method == http.MethodHead {
		h.leave(c)
	}
	if subscribed == 0 {
		first.write(w)
		return
	}
	if r.Method == http.MethodHead {
		setStreamHeaders(w)
		w.WriteHeader(http.StatusOK)
		return
	}
	if q.Has("poll") {
		h.poll(w, r, c, hold, resumed)
		return
	}
	h.stream(w, r, c, true)
}

// stream answers an SSE request whose subscriptions are in place and
// hands it to the hub's writers. On HTTP/1.1 it takes the connection over
// from net/http, so an idle stream costs no goroutine and no buffers;
// otherwise (HTTP/2, or a ResponseWriter that cannot be hijacked) the
// writers write through the ResponseWriter and this goroutine waits until
// the stream ends.
func (h *Hub) stream(w http.ResponseWriter, r *http.Request, c *conn, mux bool) {
	setStreamHeaders(w)
	if h.takeOverSSE(w, r, c, mux) {
		return
	}
	// The head goes with the first write, which the writers make: a
	// Disconnect or Reauthorize that comes once the client has the head
	// finds the stream theirs, and writes its last words after what was
	// queued.
	w.WriteHeader(http.StatusOK)
	s := newStreamConn(w, http.NewResponseController(w), h.opts.Logger)
	c.mu.Lock()
	empty := len(c.q) == 0
	c.mu.Unlock()
	if empty {
		// Nothing to send the head with (every subscription queues its
		// acknowledgement, so this is not expected): send it alone.
		_ = s.rc.Flush()
	}
	c.takeOver(s, sseWire(mux), nil)
	select {
	case <-s.closed:
	case <-r.Context().Done():
		c.kill(context.Cause(r.Context()))
	}
	s.done()
}

// takeOverSSE hijacks an HTTP/1.1 connection for the hub's writers,
// writing the response head itself: the headers set so far, and no
// chunked encoding, since the stream ends when the connection does.
func (h *Hub) takeOverSSE(w http.ResponseWriter, r *http.Request, c *conn, mux bool) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Method != http.MethodGet {
		return false
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	_ = brw // nothing is buffered to write; what the client sends next is ignored
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	hd := w.Header()
	hd.Set("Connection", "close")
	hd.Del("Content-Length")
	hd.Del("Transfer-Encoding")
	hd.Write(&head)
	head.WriteString("\r\n")
	if !h.ownAuthorize {
		// Nothing to authorize again (Hub.Reauthorize): let the request
		// go, which saves an idle stream about 1.7 KiB.
		c.mu.Lock()
		c.req = nil
		c.mu.Unlock()
	}
	c.takeOver(nc, sseWire(mux), head.Bytes())
	// The client sends nothing more: its socket becoming readable tells
	// at once when it leaves. The hub's close watcher waits for that
	// without a goroutine per stream where the system allows; elsewhere
	// a reader goroutine does.
	if c.raw != nil && h.closes.watch(c, c.raw) {
		return true
	}
	h.spawn(c, func() {
		var b [1]byte
		for {
			if _, err := nc.Read(b[:]); err != nil {
				c.kill(err)
				return
			}
		}
	})
	return true
}

// sseWire is how an SSE stream encodes frames: those of many channels
// (mux) in WebSocket frames, one channel's as SSE events.
func sseWire(mux bool) wire {
	if mux {
		return wireSSEMux
	}
	return wireSSE
}

func setStreamHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
}

// resumeFromRequest reads the resume cursor of an SSE request. The
// Last-Event-ID header wins over query parameters: EventSource keeps the
// URL it was opened with but updates the header on every reconnection,
// so the header is the later position: a page's stream URL may carry the
// cursor it was rendered at, and a reconnected stream resumes after what
// it received, without replaying it.
func resumeFromRequest(r *http.Request) resumeFrom {
	if v, ok := r.Header["Last-Event-Id"]; ok && len(v) > 0 {
		return parseResume(v[0])
	}
	q := r.URL.Query()
	if q.Has("cursor") {
		return parseResume(q.Get("cursor"))
	}
	if q.Has("version") {
		v := q.Get("version")
		seq, ok := parseSeq(v)
		if !ok {
			return resumeFrom{given: true, err: fmt.Errorf("live: malformed version %.80q", v)}
		}
		return resumeFrom{given: true, anyEpoch: true, pos: Position{Seq: seq}}
	}
	return resumeFrom{}
}

// A streamConn is an SSE stream that cannot be taken over from net/http
// (HTTP/2, or a ResponseWriter that cannot be hijacked). The hub's writers
// write it through the ResponseWriter, as they write a taken-over
// connection, while the handler's goroutine waits for it to end: the
// ResponseWriter is usable only until the handler returns.
type streamConn struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	log    *slog.Logger
	closed chan struct{} // closed by Close: the handler may return
	once   sync.Once

	// The handler returns after the write, and the deadline being set,
	// that it finds in progress; none starts after.
	mu       sync.Mutex // held while writing; guards gone
	gone     bool
	writing  atomic.Bool // a write is in progress
	dlMu     sync.Mutex  // held while setting a deadline; guards dlClosed
	dlClosed bool
}

func newStreamConn(w http.ResponseWriter, rc *http.ResponseController, log *slog.Logger) *streamConn {
	return &streamConn{w: w, rc: rc, log: log, closed: make(chan struct{})}
}

// Write writes p and flushes it to the client.
func (s *streamConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return 0, net.ErrClosed
	}
	s.writing.Store(true)
	defer s.writing.Store(false)
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
		if errors.Is(err, http.ErrNotSupported) {
			s.log.Error("live: SSE needs a flushable ResponseWriter; wrap yours with an Unwrap method", "err", err)
		}
	}
	return n, err
}

// SetWriteDeadline bounds writes. A ResponseWriter that cannot set
// deadlines is still served, without the bound.
func (s *streamConn) SetWriteDeadline(t time.Time) error {
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	if s.dlClosed {
		return net.ErrClosed
	}
	_ = s.rc.SetWriteDeadline(t)
	return nil
}

// Close lets the handler return, which ends the stream once what was
// written is sent. A write still in progress waits for a client that does
// not read: it is interrupted, which resets the stream (HTTP/2 resets a
// stream whose write deadline passes), so that the handler returns now.
func (s *streamConn) Close() error {
	if s.writing.Load() {
		s.SetWriteDeadline(time.Now())
	}
	s.once.Do(func() { close(s.closed) })
	return nil
}

// done is called by the handler before it returns: no write or deadline
// starts after it, and one in progress ends first. It clears the write
// deadline, since on HTTP/2 one that passes after the handler returned
// would reset the stream before what was written is sent (last words, as
// Disconnect's, are written with a short one).
func (s *streamConn) done() {
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
	s.dlMu.Lock()
	_ = s.rc.SetWriteDeadline(time.Time{})
	s.dlClosed = true
	s.dlMu.Unlock()
}
