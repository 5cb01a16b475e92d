package servertest

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A RawStream reads an SSE response as the bytes of its events, each up
// to and including the blank line that ends it, leaving out heartbeats:
// for tests of what goes on the wire, byte for byte.
type RawStream struct {
	events chan string
	done   chan struct{}
}

// OpenRawStream requests url with header and fails t unless it answers
// 200 with an event stream. The request ends when t does.
func OpenRawStream(t testing.TB, url string, header http.Header) *RawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s: %s, %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &RawStream{events: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.events)
		br := bufio.NewReader(resp.Body)
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			ev.WriteString(line)
			if line != "\n" {
				continue
			}
			e := ev.String()
			ev.Reset()
			if strings.HasPrefix(e, ":") {
				continue // a heartbeat
			}
			select {
			case s.events <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.done
	})
	return s
}

// Next returns the next event's bytes, failing t if the stream ends or
// none comes within Timeout.
func (s *RawStream) Next(t testing.TB) string {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatal("SSE stream ended")
		}
		return e
	case <-time.After(Timeout):
		t.Fatalf("no SSE event within %v", Timeout)
		return ""
	}
}

// Ended waits for the stream to end, failing t after Timeout.
func (s *RawStream) Ended(t testing.TB) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(Timeout):
		t.Fatalf("the stream did not end within %v", Timeout)
	}
}
