package servertest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/sse"
)

// An Event is one Server-Sent Event.
type Event struct {
	ID, Event, Data string
}

// A Stream reads the Server-Sent Events of one response on a goroutine of
// its own.
type Stream struct {
	events chan Event
	done   chan struct{} // closed when the reader has returned
	cancel context.CancelFunc
}

// OpenStream requests url, with Last-Event-ID lastID if it is not empty,
// and returns once the response headers arrived: the Hub has registered
// the subscription, so what is published next reaches it. The stream is
// closed at the end of t.
func OpenStream(t testing.TB, url, lastID string) *Stream {
	t.Helper()
	var h http.Header
	if lastID != "" {
		h = http.Header{"Last-Event-Id": {lastID}}
	}
	return OpenStreamWith(t, url, h)
}

// OpenStreamWith is OpenStream with the request's headers.
func OpenStreamWith(t testing.TB, url string, header http.Header) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	s := &Stream{events: make(chan Event, 1<<12), done: make(chan struct{}), cancel: cancel}
	go s.read(resp.Body)
	t.Cleanup(s.Close)
	return s
}

func (s *Stream) read(body io.ReadCloser) {
	defer close(s.done)
	defer close(s.events)
	defer body.Close()
	r := sse.NewReader(body)
	for {
		e, err := r.Next()
		if err != nil {
			return
		}
		// Comments, bare id lines (which move the cursor only), presence
		// events and the hub's status notices, which
		// EventSource.onmessage does not see either, are left out.
		if (e.Data != "" || e.Event != "") && e.Event != "presence" && !e.Notice() {
			s.events <- Event{ID: e.ID, Event: e.Event, Data: e.Data}
		}
	}
}

// Close disconnects, as a browser tab that goes away. It may be called
// again.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

// Next waits for the next event.
func (s *Stream) Next(t testing.TB) Event {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended while an event was awaited")
		}
		return e
	case <-time.After(Timeout):
		t.Fatal("no event")
	}
	panic("unreachable")
}

// ExpectNext reads the next event, failing t at once unless it is the
// publication at pos.
func (s *Stream) ExpectNext(t testing.TB, pos live.Position) {
	t.Helper()
	if e := s.Next(t); e.ID != pos.String() {
		t.Fatalf("event %+v, want %v", e, pos)
	}
}

// CheckContiguous reports events whose ids do not follow the one before,
// starting after cursor: a gap, a duplicate, a reordering or a reset.
func CheckContiguous(t testing.TB, cursor string, events []Event) {
	t.Helper()
	prev, err := live.ParsePosition(cursor)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		pos, err := live.ParsePosition(e.ID)
		if err != nil || pos.Epoch != prev.Epoch || pos.Seq != prev.Seq+1 {
			t.Errorf("event %+v after %v: not the next position", e, prev)
		}
		prev = pos
	}
}

// Until returns the events that arrive until one satisfies stop, which it
// includes, or until the stream ends.
func (s *Stream) Until(t testing.TB, stop func(Event) bool) []Event {
	t.Helper()
	var got []Event
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return got
			}
			got = append(got, e)
			if stop(e) {
				return got
			}
		case <-time.After(Timeout):
			t.Fatal("the stream neither ended nor sent what was awaited")
		}
	}
}
