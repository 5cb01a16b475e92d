package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	"golang.org/x/sync/errgroup"
)

// testState checks, for brokers that implement live.Conditional, that a
// State's If-Match holds across nodes: writers that each read a counter
// and write it plus one with If-Match, retrying after 412, on nodes in
// turn, lose no increment.
func (s *suite) testState(t *testing.T) {
	for _, nodes := range []int{2, 3} {
		t.Run(strconv.Itoa(nodes)+"Nodes", func(t *testing.T) { s.testStateIfMatch(t, nodes) })
	}
	t.Run("DataLoss", s.testStateDataLoss)
}

// testStateDataLoss checks that a State's writes go on after the server
// lost the channel, as it forgets one idle for longer than it keeps
// channels: the write that finds the channel gone is taken in the new
// numbering instead of waiting for a write that will never come, and
// conditional writes work again at the version the hub then has. A hub
// that found the loss first (its subscription broke) answers writes with
// 503 state_unavailable until it has rebuilt the value, which it then
// pushes to its clients.
func (s *suite) testStateDataLoss(t *testing.T) {
	if s.cfg.LoseData == nil {
		t.Skip("Config.LoseData is nil")
	}
	b := s.broker(t)
	conditional(t, b)
	n := servertest.NewNode(t, b, nil)
	ctx, cancel := timeout(t)
	defer cancel()
	channel := channelName(t)
	st, err := n.Hub.State(ctx, channel, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	stream := servertest.OpenStream(t, n.SSE+channel, "")
	if _, err := st.Apply(ctx, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	s.loseData(t)
	// do sends a request, again while the value is being rebuilt, after
	// what the hub pushes before or once it is done (as a client waits
	// for Retry-After), and returns the status of the first other answer.
	do := func(method string, h http.Header, body string, out *stateValue) int {
		t.Helper()
		for {
			status, code, err := stateDo(ctx, http.DefaultClient, method, srv.URL, h, body, out)
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusServiceUnavailable || code != "state_unavailable" {
				return status
			}
			stream.Next(t)
		}
	}
	var got stateValue
	if status := do("PATCH", nil, `{"n":2}`, &got); status != http.StatusOK {
		t.Fatalf("PATCH after the server lost the channel answered %d", status)
	}
	for attempt := 1; ; attempt++ {
		var cur stateValue
		if status := do("GET", nil, "", &cur); status != http.StatusOK {
			t.Fatalf("GET after the loss answered %d", status)
		}
		status := do("PATCH", http.Header{"If-Match": {etag(cur.Version)}}, `{"n":3}`, &got)
		if status == http.StatusOK {
			break
		}
		if status != http.StatusPreconditionFailed || attempt == 20 {
			t.Fatalf("PATCH with If-Match at the hub's version %d after the loss, attempt %d: %d", cur.Version, attempt, status)
		}
	}
	if got.Data.N != 3 {
		t.Errorf("value after the writes that followed the loss: n = %d at version %d, want 3", got.Data.N, got.Version)
	}
}

// etag is the If-Match of a State's version.
func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// stateValue is the counter's GET reply.
type stateValue struct {
	Data    struct{ N int } `json:"data"`
	Version uint64          `json:"version"`
}

func (s *suite) testStateIfMatch(t *testing.T, nodes int) {
	const writers, each = 50, 2
	channel := channelName(t)
	urls := make([]string, nodes)
	streams := make([]*servertest.Stream, nodes)
	for i := range urls {
		b := s.broker(t)
		if i == 0 {
			conditional(t, b)
		}
		n := servertest.NewNode(t, b, nil)
		ctx, cancel := timeout(t)
		st, err := n.Hub.State(ctx, channel, &live.StateOptions{Initial: map[string]int{"n": 0}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(st)
		t.Cleanup(srv.Close)
		urls[i] = srv.URL
		streams[i] = servertest.OpenStream(t, n.SSE+channel, "")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
	t.Cleanup(client.CloseIdleConnections)

	// About 2,000 requests, each a round trip through the broker: more
	// than one wait's bound on a loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), 6*waitTimeout)
	defer cancel()
	start := time.Now()
	var mu sync.Mutex // guards ok and refused
	var ok, refused int
	g, ctx := errgroup.WithContext(ctx)
	for w := range writers {
		g.Go(func() error {
			turn := w
			for range each {
				for {
					// Read on one node, write on the next, as a client
					// behind a load balancer may.
					var cur stateValue
					if _, _, err := stateDo(ctx, client, "GET", urls[turn%nodes], nil, "", &cur); err != nil {
						return err
					}
					turn++
					var got stateValue
					status, _, err := stateDo(ctx, client, "PATCH", urls[turn%nodes],
						http.Header{"If-Match": {`"` + strconv.FormatUint(cur.Version, 10) + `"`}},
						fmt.Sprintf(`{"n":%d}`, cur.Data.N+1), &got)
					if err != nil {
						return err
					}
					if status == http.StatusPreconditionFailed {
						mu.Lock()
						refused++
						mu.Unlock()
						continue
					}
					if status != http.StatusOK {
						return fmt.Errorf("writer %d: PATCH answered %d", w, status)
					}
					if got.Version != cur.Version+1 {
						return fmt.Errorf("writer %d: PATCH with If-Match %d answered version %d, want %d",
							w, cur.Version, got.Version, cur.Version+1)
					}
					mu.Lock()
					ok++
					mu.Unlock()
					break
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writers over %d nodes: %d × 200, %d × 412 in %v", writers, nodes, ok, refused, time.Since(start).Round(time.Millisecond))

	// Every node ends at the same value, one increment per 200, once its
	// stream has brought the last write.
	for i, url := range urls {
		for {
			e := streams[i].Next(t)
			pos, err := live.ParsePosition(e.ID)
			if err != nil {
				t.Fatalf("node %d: event %+v: %v", i, e, err)
			}
			if pos.Seq >= uint64(ok) {
				break
			}
		}
		ctx, cancel := timeout(t)
		var cur stateValue
		_, _, err := stateDo(ctx, client, "GET", url, nil, "", &cur)
		cancel()
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if cur.Data.N != ok || cur.Version != uint64(ok) {
			t.Errorf("node %d: n = %d at version %d after %d × 200, want %d at version %d",
				i, cur.Data.N, cur.Version, ok, ok, ok)
		}
	}
}

// stateDo sends a request to a State's handler and decodes its JSON reply
// into out, or returns the error code of a refusal.
func stateDo(ctx context.Context, client *http.Client, method, url string, h http.Header, body string, out any) (status int, code string, err error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		var refusal struct{ Error string }
		json.Unmarshal(b, &refusal)
		return resp.StatusCode, refusal.Error, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return 0, "", fmt.Errorf("%s %s: %s: %w", method, url, b, err)
	}
	return resp.StatusCode, "", nil
}
