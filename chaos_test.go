package live_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/sse"
)

var chaosFor = flag.Duration("live.chaos", 10*time.Second, "how long TestResumeChaos publishes")

// chaosConnects counts the connections chaos clients made.
var chaosConnects atomic.Int64

// chaosLog is what one client saw of one channel.
type chaosLog struct {
	seqs       []uint64 // positions received, in order, after dropping ones already seen
	duplicates int      // positions received again
	resets     int
	cursor     string
}

// TestResumeChaos runs 50 clients, half SSE and half WebSocket, on 5
// channels while 200 publications a second are made. Every client is
// dropped every 0.5 to 3 s (half abruptly, half with a clean close) and
// comes back 0 to 1 s later with its cursors. Every client must end with
// every publication of its channels, once, in order, and no reset.
func TestResumeChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos takes seconds")
	}
	const clients, channels, rate = 50, 5, 200
	s := newTestServer(t, &live.Options{MaxConnsPerIP: -1})
	names := make([]string, channels)
	start := make(map[string]string) // channel -> cursor before the first publication
	for i := range names {
		names[i] = fmt.Sprintf("chaos-%d", i)
		start[names[i]] = "0." + mustCursor(t, s, names[i]).Epoch
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := make([]map[string]*chaosLog, clients)
	published := make(map[string]uint64) // channel -> last seq, once publishing ended
	var final sync.WaitGroup
	done := make(chan struct{}) // closed when publishing has ended
	var wg sync.WaitGroup
	ready := make(chan struct{}, clients)
	for i := range clients {
		mine := names
		if i%2 == 0 { // SSE: one channel per stream
			mine = names[i/2%channels : i/2%channels+1]
		}
		logs[i] = make(map[string]*chaosLog)
		for _, ch := range mine {
			logs[i][ch] = &chaosLog{cursor: start[ch]}
		}
		r := rand.New(rand.NewPCG(uint64(i), 7))
		wg.Add(1)
		final.Add(1)
		go func() {
			defer wg.Done()
			chaosClient(ctx, s, i%2 == 0, logs[i], r, ready, done, published, &final)
		}()
	}
	for range clients {
		<-ready
	}

	// Publish at the given rate, round robin over the channels.
	tick := time.NewTicker(time.Second / rate)
	end := time.After(*chaosFor)
	n := 0
publish:
	for {
		select {
		case <-end:
			break publish
		case <-tick.C:
		}
		ch := names[n%channels]
		pos, err := s.hub.Publish(ctx, ch, n)
		if err != nil {
			t.Fatal(err)
		}
		published[ch] = pos.Seq
		n++
	}
	tick.Stop()
	close(done)

	// Every client must catch up within a bounded time.
	caught := make(chan struct{})
	go func() { final.Wait(); close(caught) }()
	select {
	case <-caught:
	case <-time.After(30 * time.Second):
		t.Error("clients did not all catch up within 30 s")
	}
	cancel()
	wg.Wait()

	lost, dups, resets, reorders := 0, 0, 0, 0
	for i, byChannel := range logs {
		for ch, l := range byChannel {
			dups += l.duplicates
			resets += l.resets
			want := published[ch]
			for k, seq := range l.seqs {
				if seq != uint64(k+1) {
					reorders++
					t.Errorf("client %d, %s: position %d at index %d", i, ch, seq, k)
					break
				}
			}
			if got := uint64(len(l.seqs)); got < want {
				lost += int(want - got)
				t.Errorf("client %d, %s: %d of %d", i, ch, got, want)
			}
		}
	}
	t.Logf("%d publications in %v; %d clients, %d connections: %d lost, %d duplicates dropped by clients, %d reorders, %d resets",
		n, *chaosFor, clients, chaosConnects.Load(), lost, dups, reorders, resets)
	if resets != 0 {
		t.Errorf("%d resets, want 0", resets)
	}
}

// chaosClient connects, reads for a while, drops, and reconnects with its
// cursors until ctx ends; after done it reconnects once more and reads
// until it has every publication of its channels.
func chaosClient(ctx context.Context, s *testServer, sse bool, logs map[string]*chaosLog, r *rand.Rand,
	ready chan<- struct{}, done <-chan struct{}, published map[string]uint64, final *sync.WaitGroup) {
	first := true
	caughtUp := false
	markCaught := func() {
		if !caughtUp {
			caughtUp = true
			final.Done()
		}
	}
	defer markCaught()
	for ctx.Err() == nil {
		var finished bool
		select {
		case <-done:
			finished = true
		default:
		}
		stay := time.Duration(500+r.IntN(2500)) * time.Millisecond
		if finished {
			stay = time.Minute // read until caught up
		}
		connCtx, cancel := context.WithTimeout(ctx, stay)
		complete := func() bool {
			if !finished {
				return false
			}
			for ch, l := range logs {
				if len(l.seqs) == 0 || l.seqs[len(l.seqs)-1] < published[ch] {
					return false
				}
			}
			return true
		}
		abrupt := r.IntN(2) == 0
		chaosConnects.Add(1)
		if sse {
			chaosSSE(connCtx, s, logs, &first, ready, complete)
		} else {
			chaosWS(connCtx, s, logs, &first, ready, abrupt, complete)
		}
		cancel()
		if finished && complete() {
			markCaught()
			<-ctx.Done()
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(r.IntN(1000)) * time.Millisecond):
		}
	}
}

func (l *chaosLog) record(cursor string) {
	pos, err := live.ParsePosition(cursor)
	if err != nil {
		return
	}
	last := uint64(0)
	if len(l.seqs) > 0 {
		last = l.seqs[len(l.seqs)-1]
	}
	if pos.Seq <= last {
		l.duplicates++
		return
	}
	l.seqs = append(l.seqs, pos.Seq)
	l.cursor = cursor
}

func chaosSSE(ctx context.Context, s *testServer, logs map[string]*chaosLog, first *bool, ready chan<- struct{}, complete func() bool) {
	for ch, l := range logs {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.srv.URL+"/live/"+ch, nil)
		req.Header.Set("Last-Event-ID", l.cursor)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if *first {
			*first = false
			ready <- struct{}{}
		}
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if ev.Comment != "" {
				continue
			}
			switch {
			case ev.Event == "reset":
				l.resets++
				l.cursor = ev.ID
			case ev.Data != "":
				l.record(ev.ID)
			}
			if complete() {
				return
			}
		}
	}
}

func chaosWS(ctx context.Context, s *testServer, logs map[string]*chaosLog, first *bool, ready chan<- struct{}, abrupt bool, complete func() bool) {
	c, _, err := websocket.Dial(ctx, s.wsURL(), nil)
	if err != nil {
		return
	}
	defer func() {
		if abrupt {
			c.CloseNow()
		} else {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}()
	c.SetReadLimit(-1)
	for ch, l := range logs {
		b, _ := json.Marshal(map[string]string{"type": "subscribe", "channel": ch, "cursor": l.cursor})
		if c.Write(ctx, websocket.MessageText, b) != nil {
			return
		}
	}
	acks := 0
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return // dropped, by us or by the deadline
		}
		var f wsFrame
		json.Unmarshal(b, &f)
		l := logs[f.Channel]
		switch f.Type {
		case "subscribed":
			if acks++; acks == len(logs) && *first {
				*first = false
				ready <- struct{}{}
			}
		case "data":
			l.record(f.Cursor)
		case "reset":
			l.resets++
			l.cursor = f.Cursor
		}
		if complete() {
			return
		}
	}
}
