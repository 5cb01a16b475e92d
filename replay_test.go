package live_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"github.com/go-live/live/internal/sse"
)

// TestResumeHeapWithinBound resumes ten clients from the first cursor of
// a 40 MB history, and they never read: the hub holds what it may hold
// for each connection, not the history ten times over.
func TestResumeHeapWithinBound(t *testing.T) {
	b := newMemoryBroker(t, 200)
	servertest.ExpectResumeHeapBounded(t, servertest.NewNode(t, b, nil), "big")
}

// pageCounter records where each page of history was read from.
type pageCounter struct {
	*live.MemoryBroker
	mu    sync.Mutex // guards pages and whole
	pages map[live.Position]int
	whole int
}

func (b *pageCounter) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	b.mu.Lock()
	b.whole++
	b.mu.Unlock()
	return b.MemoryBroker.Since(ctx, channel, after)
}

func (b *pageCounter) SincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	b.mu.Lock()
	b.pages[after]++
	b.mu.Unlock()
	return b.MemoryBroker.SincePage(ctx, channel, after, maxMessages, maxBytes)
}

// TestResumeSharesPages resumes ten clients from one cursor at once:
// each page of the range is read from history once, for all of them.
func TestResumeSharesPages(t *testing.T) {
	b := &pageCounter{MemoryBroker: newMemoryBroker(t, 100), pages: make(map[live.Position]int)}
	s := newTestServer(t, &live.Options{Broker: b})
	value := strings.Repeat("x", 100<<10)
	first := s.publish(t, "shared", value)
	for range 59 {
		s.publish(t, "shared", value)
	}
	var recs []*live.Recorder
	for range 10 {
		recs = append(recs, s.hub.AttachRecorderFrom(t, "shared", first.String()))
	}
	for _, r := range recs {
		r.Release()
	}
	for i, r := range recs {
		frames := r.Frames(t, 60)
		for j, raw := range frames[1:60] {
			var f struct {
				Type, Cursor string
			}
			json.Unmarshal(raw, &f)
			if want := (live.Position{Epoch: first.Epoch, Seq: first.Seq + 1 + uint64(j)}).String(); f.Type != "data" || f.Cursor != want {
				t.Fatalf("client %d: frame %d is %s at %s; want data at %s", i, j+1, f.Type, f.Cursor, want)
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.whole != 0 {
		t.Errorf("Since read the whole range %d times", b.whole)
	}
	if len(b.pages) < 2 {
		t.Errorf("%d pages read; want the replay read a page at a time", len(b.pages))
	}
	for after, n := range b.pages {
		if n > 1 {
			t.Errorf("the page after %v was read %d times", after, n)
		}
	}
	t.Logf("%d pages read for 10 clients", len(b.pages))
}

// TestResumeSlowReader resumes a client that reads one event at a time
// while the channel publishes one for each it reads: it gets every
// publication in order, or the slow-client treatment, never a silent gap.
func TestResumeSlowReader(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy live.SlowPolicy
	}{
		{"SlowDisconnect", live.SlowDisconnect},
		{"SlowReset", live.SlowReset},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newMemoryBroker(t, 2000)
			s := newTestServer(t, &live.Options{Broker: b, QueueBytes: 64 << 10, SlowPolicy: tt.policy})
			value := strings.Repeat("x", 16<<10)
			first := s.publish(t, "slow", value)
			head := first
			for range 599 {
				head = s.publish(t, "slow", value)
			}
			const during = 50 // publications made while the client reads
			cursor, published := first, 0
			resets, ends := 0, 0
			for cursor != head || published < during {
				r := openSlowSSE(t, s.srv.URL+"/live/slow", cursor.String())
				for {
					ev, ok := r.next()
					if !ok {
						ends++
						break
					}
					if ev.Data == "" && ev.Event == "" {
						continue // the acknowledgement
					}
					pos, err := parseCursor(ev.ID)
					if err != nil {
						t.Fatal(err)
					}
					switch {
					case ev.Event == "reset":
						if !strings.Contains(ev.Data, `"slow"`) {
							t.Fatalf("reset %s; want one for a slow client", ev.Data)
						}
						resets++
					case pos.Epoch != cursor.Epoch || pos.Seq != cursor.Seq+1:
						t.Fatalf("got %v after %v: a gap without a reset", pos, cursor)
					}
					cursor = pos
					if published < during {
						head = s.publish(t, "slow", value)
						published++
					}
					if cursor == head && published == during {
						break
					}
				}
				r.close()
			}
			st := s.hub.Stats()
			t.Logf("%d resets, %d disconnections; Stats.SlowClients %d", resets, ends, st.SlowClients)
			if tt.policy == live.SlowReset && ends > 0 {
				t.Errorf("the stream ended %d times under SlowReset", ends)
			}
			if tt.policy == live.SlowDisconnect && resets > 0 {
				t.Errorf("%d resets under SlowDisconnect", resets)
			}
			if int64(resets+ends) != st.SlowClients {
				t.Errorf("%d resets and %d disconnections, but Stats.SlowClients = %d", resets, ends, st.SlowClients)
			}
		})
	}
}

func parseCursor(s string) (live.Position, error) { return live.ParsePosition(s) }

// slowSSE reads an SSE stream one event at a time on the test's
// goroutine, with a small receive buffer, so that the client reads only
// as fast as the test does.
type slowSSE struct {
	r      *sse.Reader
	body   interface{ Close() error }
	cancel context.CancelFunc
}

func openSlowSSE(t *testing.T, url, cursor string) *slowSSE {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
	var dialer net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(16 << 10)
		}
		return c, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Last-Event-Id", cursor)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return &slowSSE{r: sse.NewReader(resp.Body), body: resp.Body, cancel: cancel}
}

// next returns the next event; ok is false when the stream ended.
func (r *slowSSE) next() (ev sse.Event, ok bool) {
	for {
		ev, err := r.r.Next()
		if err != nil {
			return ev, false
		}
		if ev.Comment == "" {
			return ev, true
		}
	}
}

func (r *slowSSE) close() {
	r.cancel()
	r.body.Close()
}
