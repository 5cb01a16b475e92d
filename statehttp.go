package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// stateReply is the body of GET and of successful writes: what React
// useDeltaSync's initial fetch expects.
type stateReply struct {
	Data    json.RawMessage `json:"data"`
	Version uint64          `json:"version"`
}

// ServeHTTP serves the value: GET answers {"data":…,"version":N} with an
// ETag; PATCH (or POST) merges the JSON body in with the State's Merge;
// PUT replaces the value. A write with If-Match: "N" (or ?version=N) is
// refused with 412 and the current version unless the value is at N,
// decided by the broker when it is a [Conditional] one, so that the check
// holds whichever Hub takes the write (see [State.SetIf]).
// Writes answer with the value they made and its version (on a broker
// that is not Conditional, where another Hub's write may come between,
// the value as it is now and its version). Authorize writes with your
// own middleware: ServeHTTP does not consult Options.Authorize.
//
// Requests pass the hub's gate as a stream's do: the origin rule
// (Options.OriginPatterns; any other Origin gets 403, OPTIONS answers
// allowed origins' preflights), no credentials in the query, and
// Options.Identify (401 when it refuses), and
// writes must send a JSON body as such (Content-Type application/json or
// another +json type; anything else gets 415): a page on another site
// can send a text/plain or form body without a preflight, never a JSON
// one.
func (s *State) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		// Preflights carry no credentials: the origin decides.
		if s.hub.allowOrigin(w, r) {
			s.hub.answerPreflight(w, "GET, PATCH, POST, PUT")
		}
		return
	}
	if _, ok := s.hub.admit(w, r, "", ""); !ok {
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.mu.Lock()
		data, version, stale := s.value, s.version.Seq, s.stale
		s.mu.Unlock()
		if stale {
			unknown(w)
			return
		}
		s.reply(w, data, version)
		return
	case http.MethodPatch, http.MethodPost, http.MethodPut:
	default:
		w.Header().Set("Allow", "GET, HEAD, PATCH, POST, PUT, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not supported here")
		return
	}
	if !isJSON(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json")
		return
	}
	want, conditional, err := wantVersion(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_version", err.Error())
		return
	}
	body, err := readBody(w, r, s.hub.opts.MaxMessageBytes)
	if err != nil {
		return
	}
	var wr written
	if r.Method == http.MethodPut {
		wr, err = s.write(r.Context(), conditional, want, func(json.RawMessage) (json.RawMessage, error) { return body, nil })
	} else {
		wr, err = s.write(r.Context(), conditional, want, func(cur json.RawMessage) (json.RawMessage, error) { return s.merge(cur, body) })
	}
	switch {
	case errors.Is(err, ErrConflict):
		w.Header().Set("ETag", etag(wr.version))
		writeConflict(w, http.StatusPreconditionFailed, "the value has changed; refetch and retry", strconv.FormatUint(wr.version, 10))
	case errors.Is(err, errBadUpdate):
		writeError(w, http.StatusBadRequest, "bad_update", err.Error())
	case errors.Is(err, errStale):
		unknown(w)
	case errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "closed", "the live hub is shutting down")
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case wr.value != nil:
		s.reply(w, wr.value, wr.version) // what the write made
	default:
		// Other writes came between: the value as it is now, after this
		// write.
		data, v := s.Get()
		if v < wr.version {
			v = wr.version
		}
		s.reply(w, data, v)
	}
}

// unknown answers a request for a value that is being rebuilt.
func unknown(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "state_unavailable", "the value is being rebuilt from the broker; retry shortly")
}

func (s *State) reply(w http.ResponseWriter, data json.RawMessage, version uint64) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag(version))
	json.NewEncoder(w).Encode(stateReply{Data: data, Version: version})
}

func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// wantVersion reads the version a conditional write expects, from
// If-Match ("N", W/"N") or ?version=N.
func wantVersion(r *http.Request) (uint64, bool, error) {
	v := r.Header.Get("If-Match")
	if v == "" {
		v = r.URL.Query().Get("version")
		if v == "" {
			return 0, false, nil
		}
	}
	if v == "*" {
		return 0, false, nil
	}
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, ok := parseSeq(v)
	if !ok {
		return 0, false, fmt.Errorf("live: If-Match must be a version such as \"12\"")
	}
	return n, true, nil
}
