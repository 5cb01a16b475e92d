package live

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Optimistic concurrency for mutating handlers: If-Match against the
// resource's version, and the 412 body both Hook and State answer with.

// ifMatch reports whether the If-Match header values admit current, with
// the strong comparison RFC 9110 requires for If-Match. Unquoted tags are
// accepted as if quoted, for clients that send a bare version.
func ifMatch(values []string, current string) bool {
	if current == "" {
		return false
	}
	cur := entityTag(current)
	for _, v := range values {
		for {
			var tag string
			tag, v = nextTag(v)
			if tag == "" {
				break
			}
			if tag == "*" || (!strings.HasPrefix(cur, "W/") && entityTag(tag) == cur) {
				return true
			}
		}
	}
	return false
}

// entityTag returns v as an entity tag: quoted unless it already is.
func entityTag(v string) string {
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `W/"`) {
		return v
	}
	return `"` + v + `"`
}

// nextTag returns the first entity tag of an If-Match list and the rest.
// Quoted tags may contain commas, so the list is scanned, not split.
func nextTag(s string) (tag, rest string) {
	s = strings.TrimLeft(s, " \t,")
	if s == "" {
		return "", ""
	}
	open := 0
	if strings.HasPrefix(s, "W/") {
		open = 2
	}
	if open < len(s) && s[open] == '"' {
		if end := strings.IndexByte(s[open+1:], '"'); end >= 0 {
			n := open + end + 2
			return s[:n], s[n:]
		}
	}
	if i := strings.IndexByte(s, ','); i >= 0 {
		return strings.TrimSpace(s[:i]), s[i:]
	}
	return strings.TrimSpace(s), ""
}

// conflictBody is the JSON body of a 409 or 412 answer.
type conflictBody struct {
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Version json.RawMessage `json:"version"`
}

// WriteConflict answers a write that lost a race the way [Hub.Hook]
// answers a stale If-Match: status (412 when the request's If-Match
// failed, 409 when a version sent in the body did) and the JSON body
// {"error":"conflict","message":…,"version":<current>}, where current is
// the resource's version: a JSON number when it is one (as a State's
// versions are), otherwise a string, "" if the resource no longer exists.
// Call it from a
// handler's atomic compare-and-write, which the hook's own check cannot
// replace; the client refetches, or merges onto version, and retries.
func WriteConflict(w http.ResponseWriter, status int, current string) {
	msg := "the resource has changed; merge onto the current version and retry"
	if current == "" {
		msg = "the resource no longer exists"
	}
	writeConflict(w, status, msg, current)
}

// writeConflict writes the body of every 409 and 412 the package answers:
// the Hook's, WriteConflict's and a State's.
func writeConflict(w http.ResponseWriter, status int, msg, version string) {
	v := json.RawMessage(quote(version))
	if _, ok := parseSeq(version); ok {
		v = json.RawMessage(version)
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(conflictBody{Error: "conflict", Message: msg, Version: v})
}
