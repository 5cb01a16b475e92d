package servertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/livetest"
)

// A ServerFault takes the server of a broker away and brings it back: a
// crash (Kill, then Start) or a freeze (Stop, then Cont).
type ServerFault struct {
	Down, Up func()
	Hold     time.Duration // between Down and Up

	// Resets reports that clients may be reset once the server is back,
	// as they are after a Redis restart (a new process numbers anew): the
	// test then refetches, as a page would, instead of failing.
	Resets bool
}

// ExpectWritesSurviveOutages runs ExpectWritesSurvive in two subtests:
// Killed, in which the server is killed for 5 s and started again (with
// Resets set to killResets), and Stopped, in which it is frozen for 10 s.
// start starts a private server for the subtest and returns its process
// and the nodes on it.
func ExpectWritesSurviveOutages(t *testing.T, killResets bool, start func(t *testing.T) (*Process, []*Node)) {
	for _, tc := range []struct {
		name  string
		fault func(*Process) ServerFault
	}{
		{"Killed", func(p *Process) ServerFault {
			return ServerFault{Down: p.Kill, Up: p.Start, Hold: 5 * time.Second, Resets: killResets}
		}},
		{"Stopped", func(p *Process) ServerFault {
			return ServerFault{Down: p.Stop, Up: p.Cont, Hold: 10 * time.Second}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, nodes := start(t)
			ExpectWritesSurvive(t, nodes, tc.fault(p))
		})
	}
}

// ExpectWritesSurvive runs an application on nodes, Hubs sharing one
// broker, whose API adds items through a Hub.Hook on each node, while
// writers on every node add items before, during and after fault. Pages
// follow the channel on every node, over WebSocket and SSE, resuming with
// their cursors when the node ends their connections. Every write that
// was answered 201 must reach every page once: no page is delivered an
// item twice, every page ends holding exactly the items the application
// stored, and each writer's items in the order they were answered. Unless
// fault.Resets, no page is reset.
func ExpectWritesSurvive(t testing.TB, nodes []*Node, fault ServerFault) {
	t.Helper()
	channel := ChannelName(t)
	app := &itemApp{}
	apis := make([]*httptest.Server, len(nodes))
	for i, n := range nodes {
		hook := n.Hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return channel }})
		apis[i] = httptest.NewServer(hook(http.HandlerFunc(app.add)))
		defer apis[i].Close()
	}
	var pages []*page
	for i, n := range nodes {
		pages = append(pages,
			&page{name: fmt.Sprintf("node %d's WebSocket page", i), c: livetest.Connect(t, n.WS, channel)},
			&page{name: fmt.Sprintf("node %d's SSE page", i), c: livetest.Connect(t, n.SSE, channel)})
	}

	stop := make(chan struct{})
	acked := make([][]string, len(nodes)) // per writer, in the order answered
	refused := make([][]string, len(nodes))
	var wg sync.WaitGroup
	for i, api := range apis {
		wg.Go(func() {
			client := &http.Client{Timeout: 4 * Timeout}
			tick := time.NewTicker(50 * time.Millisecond) // the writers' pace
			defer tick.Stop()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				id := fmt.Sprintf("w%d-%d", i, n)
				resp, err := client.Post(api.URL, "application/json", strings.NewReader(`{"id":"`+id+`"}`))
				if err != nil {
					t.Errorf("writer %d: %v", i, err) // no answer: its outcome is unknown
					return
				}
				io.Copy(io.Discard, resp.Body) // as a page reading the answer does: the hook has made its event by its end
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					acked[i] = append(acked[i], id)
				} else {
					refused[i] = append(refused[i], fmt.Sprintf("%s: %s", id, resp.Status))
				}
			}
		})
	}
	time.Sleep(time.Second) // writes before the fault: nothing awaited but time
	fault.Down()
	down := time.Now()
	time.Sleep(fault.Hold) // the outage
	fault.Up()
	up := time.Now()
	time.Sleep(time.Second) // writes after it
	close(stop)
	wg.Wait()
	stopped := time.Now()
	if t.Failed() {
		t.FailNow()
	}
	stored := app.items()
	n := 0
	for i := range acked {
		n += len(acked[i])
		t.Logf("writer %d: %d answered 201, %d refused %v", i, len(acked[i]), len(refused[i]), refused[i])
	}
	t.Logf("%d items stored, %d answered 201; the server was down for %v", len(stored), n, up.Sub(down).Round(time.Millisecond))
	for i := range acked {
		for _, id := range acked[i] {
			if !slices.Contains(stored, id) {
				t.Fatalf("item %s was answered 201 but not stored", id)
			}
		}
	}

	// A publication from each node, behind whatever it still has to send,
	// tells a page that it has had all.
	for i, n := range nodes {
		n.Publish(t, channel, fmt.Sprintf(`{"type":"end","node":%d}`, i))
	}
	for _, p := range pages {
		p.readUntil(t, app, stored, len(nodes), fault.Resets)
		for i, ids := range acked {
			var got []string
			for _, id := range p.items {
				if slices.Contains(ids, id) {
					got = append(got, id)
				}
			}
			if j := firstDifference(got, ids); j >= 0 {
				t.Errorf("%s holds writer %d's %d items out of the order answered: from the %dth, %v, want %v",
					p.name, i, len(got), j+1, got[j:min(j+5, len(got))], ids[j:min(j+5, len(ids))])
			}
		}
		t.Logf("%s: all %d items %v after the last write, %v after the server came back (%d resets)",
			p.name, len(stored), p.done.Sub(stopped).Round(time.Millisecond), p.done.Sub(up).Round(time.Millisecond), p.resets)
	}
	for _, n := range nodes {
		if st := n.Hub.Stats(); st.Pending != 0 || st.PendingDropped != 0 || st.HookDropped != 0 {
			t.Errorf("Stats() after the outage: %+v, want nothing pending or dropped", st)
		}
	}
}

// An itemApp is the application's store of items, shared by its nodes.
type itemApp struct {
	mu  sync.Mutex // guards ids
	ids []string
}

func (a *itemApp) add(w http.ResponseWriter, r *http.Request) {
	var item struct{ ID string }
	if err := json.NewDecoder(r.Body).Decode(&item); err != nil || item.ID == "" {
		http.Error(w, `{"error":"bad item"}`, http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.ids = append(a.ids, item.ID)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"id":%q}`, item.ID)
}

func (a *itemApp) items() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ids)
}

// A page folds the events of a channel into its list of items, as the
// demo's feed does, and refetches the list from the application when it
// is reset.
type page struct {
	name   string
	c      *livetest.Client
	items  []string
	resets int
	done   time.Time
}

// readUntil reads events until the page holds every item of want and
// has had the end of each of nodes (or a reset since, which refetches
// all), failing t if an event brings an item the page was delivered
// already since its last reset, or a reset comes when none may.
func (p *page) readUntil(t testing.TB, app *itemApp, want []string, nodes int, resets bool) {
	t.Helper()
	delivered := make(map[string]bool) // since the last reset
	ends := 0
	for ends < nodes || !p.holds(want) {
		m := p.c.Next(t)
		if m.Reset {
			if !resets {
				t.Fatalf("%s was reset (%s)", p.name, m.Reason)
			}
			p.resets++
			p.items = app.items()
			clear(delivered)
			ends = nodes // the list holds all there is
			continue
		}
		var ev struct {
			Type string
			Item struct{ ID string }
		}
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Type != "add" && ev.Type != "end" {
			t.Fatalf("%s: event %s, want an add", p.name, m.Data)
		}
		if ev.Type == "end" {
			ends++
			continue
		}
		id := ev.Item.ID
		if delivered[id] {
			t.Fatalf("%s was delivered %s twice (at %s)", p.name, id, m.Cursor)
		}
		delivered[id] = true
		if !slices.Contains(p.items, id) { // refetched with the list, or new
			p.items = append(p.items, id)
		}
	}
	p.done = time.Now()
	if len(p.items) != len(want) {
		t.Errorf("%s holds %d items, want the %d stored: %v", p.name, len(p.items), len(want), p.items)
	}
}

func (p *page) holds(want []string) bool {
	if len(p.items) < len(want) {
		return false
	}
	for _, id := range want {
		if !slices.Contains(p.items, id) {
			return false
		}
	}
	return true
}

// firstDifference returns the first index at which a and b differ, or
// -1 if they are equal.
func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
