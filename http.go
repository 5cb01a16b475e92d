package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// errorBody is every HTTP error's JSON body: a stable code for programs and
// a message for people.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{Error: code, Message: msg})
}

// A refusal turns a request, or one subscription of it, away: the HTTP
// status, a stable code, and the message the client sees, in an HTTP
// answer's JSON body or in an error frame. answer, when set, is the HTTP
// body's message where it differs from the frame's.
type refusal struct {
	status    int
	code, msg string
	answer    string
}

// write answers an HTTP request with f.
func (f *refusal) write(w http.ResponseWriter) {
	msg := f.msg
	if f.answer != "" {
		msg = f.answer
	}
	writeError(w, f.status, f.code, msg)
}

// frame is f as an error frame about channel, echoing the client's ref.
func (f *refusal) frame(channel string, ref json.RawMessage) *frame {
	return errorFrame(f.code, f.msg, channel, ref)
}

// authorize runs Options.Authorize for op on channel with r; every
// admission and every check made again (Hub.Reauthorize, a recheck, a
// WebSocket's publish frames) comes here. It returns nil when Authorize
// allows, else the refusal: its message is the error's own only when it
// came from Deny. Any other error is logged.
func (h *Hub) authorize(r *http.Request, channel string, op Op) *refusal {
	if f := ticketRefusal(r, channel, op); f != nil {
		return f
	}
	err := h.opts.Authorize(r, channel, op)
	if err == nil {
		return nil
	}
	var d *denial
	var f refusal
	switch {
	case errors.As(err, &d):
		h.noteRefusal(r, channel, op, d.msg)
		return &refusal{status: http.StatusForbidden, code: "forbidden", msg: d.msg}
	case errors.Is(err, ErrUnknownChannel):
		f = refusal{status: http.StatusNotFound, code: "unknown_channel", msg: "no such channel"}
	case op == OpPublish:
		f = refusal{status: http.StatusForbidden, code: "forbidden", msg: "not allowed to publish on this channel"}
	default:
		f = refusal{status: http.StatusForbidden, code: "forbidden", msg: "not allowed to subscribe to this channel"}
	}
	remote := ""
	if r != nil {
		remote = r.RemoteAddr
	}
	h.note("authorize", string(op)+": "+err.Error(), channel, remote)
	h.opts.Logger.Info("live: refused by Authorize", "op", string(op), "channel", channel, "remote", remote, "err", err)
	return &f
}

// identify runs Options.Identify and returns the request that Authorize
// and the connection keep, carrying the identity. It answers the request
// itself when it refuses.
func (h *Hub) identify(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if r.URL.Query().Has(ticketParam) {
		return h.admitTicket(w, r)
	}
	if h.opts.Identify == nil {
		return r, true
	}
	id, err := h.opts.Identify(r)
	if err != nil {
		msg := "sign in first"
		var d *denial
		if errors.As(err, &d) {
			msg = d.msg
		} else {
			h.opts.Logger.Info("live: refused by Identify", "remote", r.RemoteAddr, "err", err)
		}
		h.note("identify", msg, "", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "unauthenticated", msg)
		return nil, false
	}
	if id.Info != nil {
		info, err := json.Marshal(id.Info)
		switch {
		case err != nil:
			h.opts.Logger.Error("live: Options.Identify returned an Info that does not encode as JSON", "user", id.User, "err", err)
			writeError(w, http.StatusInternalServerError, "bad_identity", "the server could not encode who you are")
			return nil, false
		case len(info) > maxInfoBytes:
			h.opts.Logger.Error("live: Options.Identify returned an Info over 1 KiB", "user", id.User, "bytes", len(info))
			writeError(w, http.StatusInternalServerError, "identity_too_large", "the server's public record of you is too large")
			return nil, false
		}
		id.Info = json.RawMessage(info)
	}
	if !id.Expires.IsZero() && !id.Expires.After(time.Now()) {
		refuseExpired(w)
		return nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), identityKey{}, id)), true
}

// admit is the gate every request to the hub passes, on every transport
// and a State's handler: a channel it names must be valid and not
// reserved; its query must carry no credentials; its origin must be
// allowed; Options.Identify says who it is; and, for a channel, Authorize
// must allow op. It answers the request itself when it refuses, and
// returns the request carrying the identity.
func (h *Hub) admit(w http.ResponseWriter, r *http.Request, channel string, op Op) (*http.Request, bool) {
	if channel != "" {
		if status, code, msg := channelRefusal(channel); code != "" {
			writeError(w, status, code, msg)
			return nil, false
		}
	}
	if !h.allowQuery(w, r) || !h.allowOrigin(w, r) || !h.roster.admit(w, r) {
		return nil, false
	}
	r, ok := h.identify(w, r)
	if !ok {
		return nil, false
	}
	if channel != "" {
		if f := h.authorize(r, channel, op); f != nil {
			f.write(w)
			return nil, false
		}
	}
	return r, true
}

// channelRefusal says why a client may not name channel, as an HTTP
// status, an error code and a message, or returns code "" when it may.
func channelRefusal(channel string) (status int, code, msg string) {
	if err := ValidChannel(channel); err != nil {
		return http.StatusBadRequest, "bad_channel", err.Error()
	}
	if reserved(channel) {
		return http.StatusForbidden, "reserved", errReserved.Error()
	}
	return 0, "", ""
}

// credentialParams are query parameters that usually carry credentials.
var credentialParams = []string{"access_token", "token", "auth", "authorization", "api_key", "apikey", "key", "jwt", "password", "secret", "session"}

// allowQuery refuses a request with credentials in its query string, unless
// Options.AllowQueryCredentials.
func (h *Hub) allowQuery(w http.ResponseWriter, r *http.Request) bool {
	if h.opts.AllowQueryCredentials || r.URL.RawQuery == "" {
		return true
	}
	q := r.URL.Query()
	for name := range q {
		for _, p := range credentialParams {
			if strings.EqualFold(name, p) {
				writeError(w, http.StatusBadRequest, "credentials_in_query",
					"send credentials in a cookie or header, not the URL (or set Options.AllowQueryCredentials)")
				return false
			}
		}
	}
	return true
}

// allowOrigin admits same-origin requests, requests without an Origin
// (not from a browser script), and origins matching Options.OriginPatterns,
// for which it sets the CORS headers. Anything else gets a 403, even for
// methods a browser would send without a preflight: CORS hides responses
// but does not stop side effects such as a publish.
func (h *Hub) allowOrigin(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	same, ok := h.originAllowed(r, origin)
	if !ok {
		h.note("origin", "origin "+clip(origin)+" refused", "", r.RemoteAddr)
		writeError(w, http.StatusForbidden, "bad_origin", "origin "+clip(origin)+" may not use this endpoint")
		return false
	}
	if !same {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Set("Access-Control-Allow-Credentials", "true")
		hd.Add("Vary", "Origin")
	}
	return true
}

// originAllowed reports whether origin may use the hub, and whether it is
// the request's own host. Only http and https origins qualify: "null",
// file: and extension origins are refused.
func (h *Hub) originAllowed(r *http.Request, origin string) (same, ok bool) {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return false, false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true, true
	}
	for _, p := range h.opts.OriginPatterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if m, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); m {
			return false, true
		}
	}
	return false, false
}

func clip(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// servePreflight answers CORS preflight requests from allowed origins.
func (h *Hub) servePreflight(w http.ResponseWriter, r *http.Request) {
	if !h.allowOrigin(w, r) {
		return
	}
	h.answerPreflight(w, "GET, POST")
}

// answerPreflight answers a preflight that allowOrigin admitted.
func (h *Hub) answerPreflight(w http.ResponseWriter, methods string) {
	hd := w.Header()
	hd.Set("Access-Control-Allow-Methods", methods)
	hd.Set("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Authorization, If-Match, Live-Mutation-Id, Live-Connection")
	hd.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// isJSON reports whether a Content-Type names JSON: application/json, or
// any type with the +json suffix, with or without parameters.
func isJSON(contentType string) bool {
	t, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return t == "application/json" || (strings.HasPrefix(t, "application/") && strings.HasSuffix(t, "+json"))
}

// publishReply answers a successful HTTP publish. "success" keeps the
// reply React LiveProvider apps expect; the cursor is the publication's position.
type publishReply struct {
	Success bool   `json:"success"`
	Channel string `json:"channel"`
	Cursor  string `json:"cursor"`
}

// servePublish publishes the request body, which must be one JSON value.
func (h *Hub) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "publish with POST")
		return
	}
	channel := pathChannel(r)
	if channel == "" {
		writeError(w, http.StatusBadRequest, "bad_channel", "the URL names no channel: publish at …/{channel}")
		return
	}
	r, ok := h.admit(w, r, channel, OpPublish)
	if !ok {
		return
	}
	if h.isState(channel) {
		writeError(w, http.StatusForbidden, "state_channel", "write to a state channel through its own endpoint")
		return
	}
	data, err := readBody(w, r, h.opts.MaxMessageBytes)
	if err != nil {
		return
	}
	pos, err := h.publish(r.Context(), channel, data)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			writeError(w, http.StatusServiceUnavailable, "closed", "the live hub is shutting down")
			return
		}
		if errors.Is(err, ErrTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the publication is larger than subscribers' queues allow")
			return
		}
		h.opts.Logger.Warn("live: publish failed", "channel", channel, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the broker did not take the publication")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(publishReply{Success: true, Channel: channel, Cursor: pos.String()})
}

// readBody reads a JSON body of at most limit bytes, answering the request
// itself when the body is unacceptable.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (json.RawMessage, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the body exceeds the limit")
		} else {
			writeError(w, http.StatusBadRequest, "bad_body", "reading the body: "+err.Error())
		}
		return nil, err
	}
	data, err := compactValue(b)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", err.Error())
		return nil, err
	}
	return data, nil
}

// errBadJSON describes a body or data field that is not one JSON value.
var errBadJSON = errors.New("live: the data is not a single valid JSON value in UTF-8")

// compactValue checks that b is exactly one JSON value in valid UTF-8 (a
// WebSocket text frame must be, or browsers drop the connection) and
// compacts it.
func compactValue(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil || buf.Len() == 0 || !utf8.Valid(buf.Bytes()) {
		return nil, errBadJSON
	}
	return buf.Bytes(), nil
}

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// pathChannel returns the channel r's URL path names, or "" when it names
// none. A route with a {channel} wildcard names its value. A route that
// matches one exact path and has no wildcard ("GET /api/live", "/ws")
// names none. Otherwise (a subtree route such as the prefix mount's
// "/live/", or a router that sets no Request.Pattern) the path's last
// segment names the channel. The query never names the channel of a
// path: a guard that reads the path sees what is served.
func pathChannel(r *http.Request) string {
	if v := r.PathValue("channel"); v != "" {
		return v
	}
	if p := r.Pattern; p != "" && !strings.HasSuffix(p, "/") && !strings.Contains(p, "{") {
		return ""
	}
	p := r.URL.Path
	return p[strings.LastIndexByte(p, '/')+1:]
}
