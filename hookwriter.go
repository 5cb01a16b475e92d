package live

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// hookWriter holds a handler's response until the handler returns,
// flushes, hijacks or writes more than max bytes, and keeps the body, up
// to max bytes, for the event. Holding lets finish send a small response
// with a Content-Length, complete before the publication.
type hookWriter struct {
	w         http.ResponseWriter
	max       int
	status    int    // final status, 0 until WriteHeader or Write
	committed bool   // status and held body passed to w
	body      []byte // the response body so far, while not overflow
	overflow  bool   // the body exceeded max; capture stopped
	hijacked  bool
}

func (hw *hookWriter) Header() http.Header { return hw.w.Header() }

// Unwrap lets http.ResponseController reach the deadlines and full duplex
// of the writer underneath.
func (hw *hookWriter) Unwrap() http.ResponseWriter { return hw.w }

func (hw *hookWriter) WriteHeader(code int) {
	switch {
	case hw.hijacked:
		return
	case hw.committed:
		hw.w.WriteHeader(code) // net/http reports the superfluous call
	case code < 100 || code > 999:
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	case code < 200 && code != http.StatusSwitchingProtocols:
		hw.w.WriteHeader(code) // informational: sent at once, status still open
	case hw.status == 0:
		hw.status = code
	}
}

func (hw *hookWriter) Write(p []byte) (int, error) {
	if hw.hijacked {
		return 0, http.ErrHijacked
	}
	if hw.status == 0 {
		hw.status = http.StatusOK
	}
	if !bodyAllowed(hw.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if !hw.overflow && len(hw.body)+len(p) > hw.max {
		if err := hw.commit(); err != nil {
			return 0, err
		}
		hw.overflow, hw.body = true, nil
	}
	if !hw.committed {
		hw.body = append(hw.body, p...)
		return len(p), nil
	}
	n, err := hw.w.Write(p)
	if !hw.overflow {
		hw.body = append(hw.body, p[:n]...)
	}
	return n, err
}

// Flush and FlushError send what is held and flush; handlers that stream
// through the hook keep streaming.
func (hw *hookWriter) Flush() { _ = hw.FlushError() }

func (hw *hookWriter) FlushError() error {
	if hw.hijacked {
		return http.ErrHijacked
	}
	if err := hw.commit(); err != nil {
		return err
	}
	return http.NewResponseController(hw.w).Flush()
}

// Hijack sends what is held and hands over the connection; the hook then
// publishes nothing, as it cannot know the outcome.
func (hw *hookWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if hw.status != 0 {
		if err := hw.commit(); err != nil {
			return nil, nil, err
		}
	}
	c, rw, err := http.NewResponseController(hw.w).Hijack()
	if err == nil {
		hw.hijacked = true
	}
	return c, rw, err
}

// commit passes the status and the held body to w.
func (hw *hookWriter) commit() error {
	if hw.committed {
		return nil
	}
	hw.committed = true
	if hw.status == 0 {
		hw.status = http.StatusOK
	}
	hw.w.WriteHeader(hw.status)
	if len(hw.body) == 0 {
		return nil
	}
	_, err := hw.w.Write(hw.body)
	return err
}

// finish sends a response still held when the handler returned, with a
// Content-Length unless the handler chose its framing.
func (hw *hookWriter) finish() {
	if hw.committed || hw.hijacked {
		return
	}
	if hw.status == 0 {
		hw.status = http.StatusOK
	}
	hd := hw.w.Header()
	if bodyAllowed(hw.status) && !hasFraming(hd) {
		hd.Set("Content-Length", strconv.Itoa(len(hw.body)))
	}
	_ = hw.commit()
}

// hasFraming reports whether the handler set a Content-Length, a
// Transfer-Encoding or trailers, which a Content-Length would contradict.
func hasFraming(hd http.Header) bool {
	if hd.Get("Content-Length") != "" || hd.Get("Transfer-Encoding") != "" || hd.Get("Trailer") != "" {
		return true
	}
	for k := range hd {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
