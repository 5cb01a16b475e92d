package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/go-live/live"
)

// ExpectStateRebuiltAfterCut checks a State on two Hubs whose broker keeps
// history for fewer than writes publications: the link of cut's to the
// broker is cut for hold while pub's State takes writes increments, then
// healed, and pub writes once more. cut must find the hole it cannot fill
// from history and rebuild from the broker's snapshot: afterwards both
// Hubs, and a GET on each, serve the same value at the same version, and a
// client of cut's is brought to it.
func ExpectStateRebuiltAfterCut(t testing.TB, link *Proxy, cut, pub *Node, writes int, hold time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout+hold)
	defer cancel()
	channel := ChannelName(t)
	init := &live.StateOptions{Initial: map[string]int{"n": 0}}
	stCut, err := cut.Hub.State(ctx, channel, init)
	if err != nil {
		t.Fatal(err)
	}
	stPub, err := pub.Hub.State(ctx, channel, init)
	if err != nil {
		t.Fatal(err)
	}
	get := func(st *live.State) (map[string]any, uint64, int) {
		srv := httptest.NewServer(st)
		defer srv.Close()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Data    map[string]any
			Version uint64
		}
		json.NewDecoder(resp.Body).Decode(&body)
		return body.Data, body.Version, resp.StatusCode
	}
	s := OpenStream(t, cut.SSE+channel+"?version=0", "")

	link.Cut()
	cutAt := time.Now()
	for i := 1; i <= writes; i++ {
		if _, err := stPub.Apply(ctx, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	// The rest of the outage: nothing is awaited here but time.
	time.Sleep(hold - time.Since(cutAt))
	link.Restore()
	healed := time.Now()
	last := writes + 1
	if _, err := stPub.Apply(ctx, map[string]int{"n": last}); err != nil {
		t.Fatal(err)
	}

	// The client is told to refetch, then given the rebuilt value whole.
	for {
		e := s.Next(t)
		var f struct {
			Reset bool
			Data  map[string]any
		}
		json.Unmarshal([]byte(e.Data), &f)
		if f.Reset && f.Data != nil {
			if got := fmt.Sprint(f.Data["n"]); got != strconv.Itoa(last) {
				t.Errorf("the client of the cut Hub was given n = %s, want %d", got, last)
			}
			break
		}
	}
	t.Logf("the cut Hub rebuilt the State %v after the link healed", time.Since(healed).Round(time.Millisecond))
	dataCut, vCut := stCut.Get()
	dataPub, vPub := stPub.Get()
	if string(dataCut) != string(dataPub) || vCut != vPub {
		t.Errorf("after the heal: the cut Hub has %s at %d, the other %s at %d", dataCut, vCut, dataPub, vPub)
	}
	for name, st := range map[string]*live.State{"cut": stCut, "other": stPub} {
		data, v, code := get(st)
		if code != http.StatusOK || fmt.Sprint(data["n"]) != strconv.Itoa(last) || v != vPub {
			t.Errorf("GET on the %s Hub: %d %v at %d, want n = %d at %d", name, code, data, v, last, vPub)
		}
	}
}
