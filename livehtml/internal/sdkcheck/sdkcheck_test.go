package sdkcheck

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/livehtml"
	"github.com/starfederation/datastar-go/datastar"
)

// sdk returns what the SDK writes for one event.
func sdk(t *testing.T, send func(*datastar.ServerSentEventGenerator) error) string {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if err := send(datastar.NewSSE(w, r)); err != nil {
		t.Fatal(err)
	}
	return w.Body.String()
}

// TestSDK publishes each event through a hub and compares what a page's
// stream gets, without the id line the hub adds (the SDK writes none by
// default), with the SDK's bytes: the event line and every data line are
// the same.
func TestSDK(t *testing.T) {
	hub := live.NewHub(nil)
	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	srv := httptest.NewServer(mux)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hub.Close(ctx)
		srv.Close()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/feed", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 16)
	go func() {
		defer close(events)
		br := bufio.NewReader(resp.Body)
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			ev.WriteString(line)
			if line == "\n" {
				if e := ev.String(); !strings.HasPrefix(e, ":") && strings.Count(e, "\n") > 2 {
					events <- e
				}
				ev.Reset()
			}
		}
	}()

	elements := "<div id=\"feed\">\n  <p>a &amp; b</p>\n</div>"
	signals := map[string]any{"count": 3, "html": "<b>", "nested": map[string]any{"on": true}}
	cases := []struct {
		name string
		m    livehtml.Message
		send func(*datastar.ServerSentEventGenerator) error
	}{
		{"elements by id", livehtml.PatchElements{Elements: livehtml.HTML(elements)},
			func(s *datastar.ServerSentEventGenerator) error { return s.PatchElements(elements) }},
		{"elements, every option",
			livehtml.PatchElements{Selector: "#feed > ul", Mode: "append", Namespace: "svg", UseViewTransition: true, Elements: livehtml.HTML(elements)},
			func(s *datastar.ServerSentEventGenerator) error {
				return s.PatchElements(elements, datastar.WithSelector("#feed > ul"), datastar.WithModeAppend(),
					datastar.WithNamespaceSVG(), datastar.WithViewTransitions())
			}},
		{"elements, outer and html spelled out", livehtml.PatchElements{Mode: "outer", Namespace: "html", Elements: livehtml.HTML(elements)},
			func(s *datastar.ServerSentEventGenerator) error {
				return s.PatchElements(elements, datastar.WithModeOuter(), datastar.WithNamespaceHTML())
			}},
		{"remove", livehtml.PatchElements{Selector: "#row-1", Mode: "remove"},
			func(s *datastar.ServerSentEventGenerator) error {
				return s.PatchElements("", datastar.WithSelector("#row-1"), datastar.WithModeRemove())
			}},
		{"signals marshalled", livehtml.PatchSignals{Signals: signals},
			func(s *datastar.ServerSentEventGenerator) error { return s.MarshalAndPatchSignals(signals) }},
		{"signals raw, several lines, only if missing", livehtml.PatchSignals{Signals: json.RawMessage("{\n  \"a\": 1,\n  \"b\": null\n}"), OnlyIfMissing: true},
			func(s *datastar.ServerSentEventGenerator) error {
				return s.PatchSignals([]byte("{\n  \"a\": 1,\n  \"b\": null\n}"), datastar.WithOnlyIfMissing(true))
			}},
	}
	for _, mode := range []string{"inner", "replace", "prepend", "before", "after"} {
		cases = append(cases, struct {
			name string
			m    livehtml.Message
			send func(*datastar.ServerSentEventGenerator) error
		}{"mode " + mode, livehtml.PatchElements{Selector: "#feed", Mode: mode, Elements: livehtml.HTML(elements)},
			func(s *datastar.ServerSentEventGenerator) error {
				return s.PatchElements(elements, datastar.WithSelector("#feed"), datastar.WithMode(datastar.ElementPatchMode(mode)))
			}})
	}
	for _, c := range cases {
		pos, err := livehtml.Publish(ctx, hub, "feed", c.m)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got string
		select {
		case got = <-events:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no event within 5s", c.name)
		}
		id := "id: " + pos.String() + "\n"
		if !strings.HasPrefix(got, id) {
			t.Fatalf("%s: %q does not start with %q", c.name, got, id)
		}
		// The SDK ends each event with one more blank line, after the
		// one that dispatches it, which dispatches nothing.
		want, ok := strings.CutSuffix(sdk(t, c.send), "\n\n\n")
		if !ok {
			t.Fatalf("%s: the SDK's event no longer ends with two blank lines: compare afresh", c.name)
		}
		if want += "\n\n"; got[len(id):] != want {
			t.Errorf("%s:\n hub %q\n sdk %q", c.name, got[len(id):], want)
		}
	}
}
