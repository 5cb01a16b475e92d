package live

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveSSE streams one channel as Server-Sent Events.
//
// Each publication is one event whose data is the published JSON and whose
// id is its cursor, so EventSource resumes by itself: on reconnection it
// sends Last-Event-ID and the stream replays what was missed. A cursor can
// also be given as ?cursor=, or as ?version=N (a bare sequence number in
// the channel's current numbering, which the seed's useDeltaSync sends).
// When a cursor cannot be honoured the stream starts with a named "reset"
// event instead, and the client must refetch.
func (h *Hub) serveSSE(w http.ResponseWriter, r *http.Request) {
	channel := channelOf(r)
	if err := ValidChannel(channel); err != nil {
		writeError(w, http.StatusBadRequest, "bad_channel", err.Error())
		return
	}
	if !h.allowQuery(w, r) || !h.allowOrigin(w, r) {
		return
	}
	if err := h.opts.Authorize(r, channel, OpSubscribe); err != nil {
		writeAuthError(w, err)
		return
	}
	if r.Method == http.MethodHead {
		setStreamHeaders(w)
		w.WriteHeader(http.StatusOK)
		return
	}

	c := newConn(h, r, false)
	if err := h.enter(c); err != nil {
		refuse(w, err)
		return
	}
	defer h.leave(c)

	// Subscribe before answering, so that a client that has seen the
	// response headers receives everything published after that.
	err := h.subscribe(r.Context(), c, channel, resumeFromRequest(r), nil)
	if err != nil {
		writeSubscribeError(w, err)
		return
	}

	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		h.opts.Logger.Error("live: SSE needs a flushable ResponseWriter; wrap yours with an Unwrap method", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c.setAbort(func() {
		_ = rc.SetWriteDeadline(time.Now())
		cancel()
	})
	err = c.serve(ctx, &sseTransport{w: w, rc: rc, timeout: h.opts.WriteTimeout})
	if errors.Is(err, errSlow) {
		h.opts.Logger.Info("live: SSE client too slow; stream ended", "channel", channel, "remote", r.RemoteAddr)
	}
}

func setStreamHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
}

// resumeFromRequest reads the resume cursor of an SSE request. The
// Last-Event-ID header wins over query parameters: EventSource keeps the
// URL it was opened with but updates the header on every reconnection.
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
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return resumeFrom{given: true, err: err}
		}
		return resumeFrom{given: true, anyEpoch: true, pos: Position{Seq: seq}}
	}
	return resumeFrom{}
}

func parseResume(s string) resumeFrom {
	p, err := ParseCursor(s)
	return resumeFrom{given: true, pos: p, err: err}
}

// channelOf returns the channel a request names: the {channel} path value,
// else the last path segment, else the "channel" query parameter.
func channelOf(r *http.Request) string {
	if v := r.PathValue("channel"); v != "" {
		return v
	}
	p := r.URL.Path
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	if p != "" {
		return p
	}
	return r.URL.Query().Get("channel")
}

// sseTransport writes frames to an HTTP response stream. Each batch is
// written into the server's buffer and flushed once, so a burst of queued
// events costs one system call.
type sseTransport struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

var heartbeatComment = []byte(": heartbeat\n\n")

func (t *sseTransport) write(_ context.Context, batch []*frame) error {
	t.deadline()
	for _, f := range batch {
		if f.sse == nil {
			continue
		}
		if _, err := t.w.Write(f.sse); err != nil {
			return err
		}
	}
	return t.rc.Flush()
}

func (t *sseTransport) heartbeat(context.Context) error {
	t.deadline()
	if _, err := t.w.Write(heartbeatComment); err != nil {
		return err
	}
	return t.rc.Flush()
}

// deadline bounds the next write. A ResponseWriter that cannot set
// deadlines is still served, without the bound.
func (t *sseTransport) deadline() {
	_ = t.rc.SetWriteDeadline(time.Now().Add(t.timeout))
}
