package live_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-live/live"
)

func FuzzParsePosition(f *testing.F) {
	for _, s := range append([]string{"1.abc", "0.k3j9x1", "18446744073709551615.e-_"}, malformedCursors...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := live.ParsePosition(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Errorf("ParsePosition(%q) = %+v, which prints as %q", s, p, p.String())
		}
		if _, err := live.ParsePosition(p.String()); err != nil {
			t.Errorf("a parsed cursor does not parse again: %v", err)
		}
	})
}

// FuzzWebSocketFrame feeds arbitrary client frames to a hub: every reply
// is one JSON object with a type, and the hub keeps working.
func FuzzWebSocketFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","channel":"c"}`, `{"type":"subscribe","channel":"c","cursor":"1.abc"}`,
		`{"type":"unsubscribe","channel":"c"}`, `{"type":"publish","channel":"c","data":{"a":1}}`,
		`{"type":"ping","ref":[1,2]}`, `{"type":5}`, `[]`, `null`, "\xff", `{"type":"subscribe","channel":"a/b"}`,
	} {
		f.Add([]byte(s))
	}
	hub := live.NewHub(&live.Options{Authorize: func(*http.Request, string, live.Op) error { return nil }})
	f.Cleanup(func() { hub.Close(context.Background()) })
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, reply := range hub.HandleFrames(frame) {
			var r struct{ Type string }
			if err := json.Unmarshal(reply, &r); err != nil || r.Type == "" {
				t.Fatalf("reply %q to %q: %v", reply, frame, err)
			}
		}
	})
}

// FuzzValidChannel checks that every valid channel name is one URL path
// segment that needs no escaping.
func FuzzValidChannel(f *testing.F) {
	for _, s := range []string{"metrics:dashboard", "a", ".", "..", "a/b", "todos:tenant-1", "é", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if live.ValidChannel(name) != nil {
			return
		}
		if url.PathEscape(name) != name || name == "." || name == ".." || strings.ContainsAny(name, "/?#% ") {
			t.Errorf("ValidChannel accepts %q, which is not a plain path segment", name)
		}
	})
}
