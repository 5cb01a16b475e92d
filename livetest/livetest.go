// Package livetest helps test applications that use live: it records
// what a hub published, with assertions that read well and diffs from
// go-cmp, and connects test clients over real SSE or WebSocket streams.
// Everything it starts is cleaned up through t.Cleanup.
//
//	rec := livetest.NewRecorder(t)
//	hub := live.NewHub(&live.Options{Broker: rec})
//	… exercise a handler wrapped with hub.Hook …
//	rec.Published(t, "todos", map[string]any{"type": "add", "item": map[string]any{"id": "t1"}})
package livetest

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// Publication is one recorded publication.
type Publication struct {
	Channel string
	Data    json.RawMessage
}

// A Recorder is a live.Broker, an in-memory one, that also records every
// publication made through it, for assertions.
type Recorder struct {
	*live.MemoryBroker

	mu   sync.Mutex // guards pubs and next
	pubs []Publication
	next int // first publication not yet checked by Published or Sequence
}

var (
	_ live.Broker  = (*Recorder)(nil)
	_ live.History = (*Recorder)(nil)
)

// NewRecorder returns a recording broker, closed at the end of the test.
// Give it to live.NewHub in Options.Broker.
func NewRecorder(t testing.TB) *Recorder {
	r := &Recorder{MemoryBroker: live.NewMemoryBroker(nil)}
	t.Cleanup(func() { r.Close() })
	return r
}

// Publish records the publication and passes it on.
func (r *Recorder) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	pos, err := r.MemoryBroker.Publish(ctx, channel, data)
	if err == nil {
		r.mu.Lock()
		r.pubs = append(r.pubs, Publication{Channel: channel, Data: append(json.RawMessage(nil), data...)})
		r.mu.Unlock()
	}
	return pos, err
}

// All returns every publication recorded so far.
func (r *Recorder) All() []Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Publication(nil), r.pubs...)
}

// Published checks that the next unchecked publication was want on
// channel. want is compared as JSON: a Go value, or a json.RawMessage.
func (r *Recorder) Published(t testing.TB, channel string, want any) {
	t.Helper()
	r.Sequence(t, channel, want)
}

// Sequence checks that the next unchecked publications were wants, in
// order, all on channel.
func (r *Recorder) Sequence(t testing.TB, channel string, wants ...any) {
	t.Helper()
	r.mu.Lock()
	got := r.pubs[r.next:]
	if len(got) > len(wants) {
		got = got[:len(wants)]
	}
	got = append([]Publication(nil), got...)
	r.next += len(got)
	r.mu.Unlock()

	want := make([]any, len(wants))
	for i, w := range wants {
		want[i] = map[string]any{"channel": channel, "data": asJSON(t, w)}
	}
	have := make([]any, len(got))
	for i, p := range got {
		have[i] = map[string]any{"channel": p.Channel, "data": asJSON(t, p.Data)}
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Errorf("publications (-want +got):\n%s", diff)
	}
}

// Nothing checks that nothing was published since the last check.
func (r *Recorder) Nothing(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	rest := append([]Publication(nil), r.pubs[r.next:]...)
	r.next = len(r.pubs)
	r.mu.Unlock()
	for _, p := range rest {
		t.Errorf("unexpected publication on %q: %s", p.Channel, p.Data)
	}
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
