// Package livetest helps test applications that use live: it records
// what a hub published, with assertions that read well and diffs from
// go-cmp, and connects test clients over real SSE or WebSocket streams,
// as a signed-in user with [ConnectWith]; [Client.Ended] checks how the
// hub cut a client off (Hub.Disconnect, Hub.Reauthorize, or a refused
// reconnection), for tests of revocation. Everything it starts is cleaned
// up through t.Cleanup.
//
// httptest.Server.CloseClientConnections does not end a hub's streams:
// the hub has taken those connections over from the server. [Client.Drop]
// does.
//
//	rec := livetest.NewRecorder(t)
//	hub := live.NewHub(&live.Options{Broker: rec})
//	… exercise a handler wrapped with hub.Hook …
//	rec.Published(t, "todos", map[string]any{"type": "add", "item": map[string]any{"id": "t1"}})
package livetest

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Publication is one recorded publication: what the broker was given,
// and the position it assigned.
//
// A State's publications are recorded as the State publishes them,
// {"changes":[…]} (or {"reset":true,"data":…}), without the
// "version" that clients see: the version is the publication's position
// (Pos.Seq), which the broker assigns, so the hub adds it to each frame
// as it sends it.
//
// A [live.Text] is recorded as its broker holds it: Data is the text as a
// JSON string, Text is set, and Event is its event name.
type Publication struct {
	Channel string
	Data    json.RawMessage
	Pos     live.Position
	Text    bool   // a live.Text's, whose Data is the text as a JSON string
	Event   string // the live.Text's event name, "" for none
}

// A Recorder is a live.Broker, an in-memory one, that also records every
// publication made through it, for assertions. Assertions check each
// channel's publications in order, independently of other channels: a
// handler that publishes on a list and updates a State is checked with
// one assertion per channel.
type Recorder struct {
	*live.MemoryBroker

	mu      sync.Mutex // guards pubs and checked
	pubs    []Publication
	checked map[string]int // per channel: how many of its publications assertions have checked
}

var (
	_ live.Broker      = (*Recorder)(nil)
	_ live.History     = (*Recorder)(nil)
	_ live.Conditional = (*Recorder)(nil)
)

// NewRecorder returns a recording broker, closed at the end of the test.
// Give it to live.NewHub in Options.Broker.
func NewRecorder(t testing.TB) *Recorder {
	r := &Recorder{MemoryBroker: live.NewMemoryBroker(nil), checked: make(map[string]int)}
	t.Cleanup(func() { r.Close() })
	return r
}

// Publish records the publication and passes it on.
func (r *Recorder) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	pos, err := r.MemoryBroker.Publish(ctx, channel, data)
	r.record(ctx, channel, data, pos, err)
	return pos, err
}

// PublishIf records the publication, if it is taken, and passes it on: a
// State publishes its writes with it.
func (r *Recorder) PublishIf(ctx context.Context, channel string, head live.Position, data []byte) (live.Position, error) {
	pos, err := r.MemoryBroker.PublishIf(ctx, channel, head, data)
	r.record(ctx, channel, data, pos, err)
	return pos, err
}

// record records a publication that was taken.
func (r *Recorder) record(ctx context.Context, channel string, data []byte, pos live.Position, err error) {
	if err != nil || strings.HasPrefix(channel, "@live:") { // the hubs' own channels
		return
	}
	p := Publication{Channel: channel, Data: append(json.RawMessage(nil), data...), Pos: pos}
	// What the hub says of a publication, which the broker keeps beside
	// its data: whether it is a live.Text.
	if _, meta, err := live.CheckPublish(ctx, channel, data); err == nil && len(meta) > 0 {
		var m struct {
			Text *struct {
				Event string `json:"event"`
			} `json:"text"`
		}
		if json.Unmarshal(meta, &m) == nil && m.Text != nil {
			p.Text, p.Event = true, m.Text.Event
		}
	}
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
}

// All returns every publication recorded so far, on every channel.
func (r *Recorder) All() []Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Publication(nil), r.pubs...)
}

// Published checks that the next unchecked publication on channel was
// want. want is compared as JSON (a Go value, or a json.RawMessage), with
// opts, such as [IgnoreFields] for ids and times the server makes up; a
// [live.Text] matches a text publication of the same event and text.
func (r *Recorder) Published(t testing.TB, channel string, want any, opts ...cmp.Option) {
	t.Helper()
	wants := []any{want}
	for _, o := range opts {
		wants = append(wants, o)
	}
	r.Sequence(t, channel, wants...)
}

// Sequence checks that the next unchecked publications on channel were
// wants, in order. cmp.Option values among wants are not publications:
// they apply to every comparison.
func (r *Recorder) Sequence(t testing.TB, channel string, wants ...any) {
	t.Helper()
	var opts []cmp.Option
	var want []any
	for _, w := range wants {
		if o, ok := w.(cmp.Option); ok {
			opts = append(opts, o)
			continue
		}
		want = append(want, asWant(t, w))
	}
	got := r.take(channel, len(want))
	have := make([]any, len(got))
	for i, p := range got {
		have[i] = asJSON(t, p.Data)
		if s, ok := have[i].(string); ok && p.Text {
			have[i] = text{Event: p.Event, Data: s}
		}
	}
	if diff := cmp.Diff(want, have, opts...); diff != "" {
		t.Errorf("publications on %q (-want +got):\n%s", channel, diff)
	}
}

// take returns up to n of channel's unchecked publications and marks
// them checked.
func (r *Recorder) take(channel string, n int) []Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Publication
	skip := r.checked[channel]
	for _, p := range r.pubs {
		if p.Channel != channel {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		if len(out) == n {
			break
		}
		out = append(out, p)
	}
	r.checked[channel] += len(out)
	return out
}

// Nothing checks that nothing was published on channels since their last
// check, or on any channel when none is named.
func (r *Recorder) Nothing(t testing.TB, channels ...string) {
	t.Helper()
	r.mu.Lock()
	seen := make(map[string]int)
	var rest []Publication
	for _, p := range r.pubs {
		if seen[p.Channel]++; seen[p.Channel] <= r.checked[p.Channel] {
			continue
		}
		if len(channels) == 0 || slices.Contains(channels, p.Channel) {
			rest = append(rest, p)
			r.checked[p.Channel]++
		}
	}
	r.mu.Unlock()
	for _, p := range rest {
		t.Errorf("unexpected publication on %q: %s", p.Channel, p.Data)
	}
}

// IgnoreFields returns a cmp.Option for [Recorder.Published] and
// [Recorder.Sequence] that leaves out object fields with these names, at
// any depth: ids, timestamps and versions the server makes up.
func IgnoreFields(names ...string) cmp.Option {
	return cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return slices.Contains(names, k) })
}

// text is a text publication, as Sequence compares it.
type text struct{ Event, Data string }

// asWant turns a publication Sequence expects into what it compares.
func asWant(t testing.TB, v any) any {
	switch x := v.(type) {
	case live.Text:
		return text(x)
	case *live.Text:
		if x != nil {
			return text(*x)
		}
	}
	return asJSON(t, v)
}

// asJSON turns v into a generic JSON value so that values compare by
// meaning: a struct, a map and raw JSON that encode alike are equal.
func asJSON(t testing.TB, v any) any {
	t.Helper()
	var b []byte
	switch x := v.(type) {
	case json.RawMessage:
		b = x
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatalf("livetest: encoding %v: %v", v, err)
		}
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("livetest: %s is not JSON: %v", b, err)
	}
	return out
}
