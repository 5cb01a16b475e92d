package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// pollOnce sends one long-poll and returns its frames.
func pollOnce(t *testing.T, s *testServer, hold string, cursors map[string]string, channels ...string) []wsFrame {
	t.Helper()
	q := url.Values{"channels": {strings.Join(channels, ",")}, "poll": {hold}}
	for ch, c := range cursors {
		q.Set("cursor."+ch, c)
	}
	resp, err := http.Get(s.srv.URL + "/api/live?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("poll: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var frames []wsFrame
	if err := json.NewDecoder(resp.Body).Decode(&frames); err != nil {
		t.Fatal(err)
	}
	return frames
}

func TestLongPoll(t *testing.T) {
	s := newTestServer(t, nil)

	// The first poll knows no cursors: it answers at once with them.
	frames := pollOnce(t, s, "", nil, "a", "b")
	cursors := map[string]string{}
	for _, f := range frames {
		if f.Type != "subscribed" {
			t.Fatalf("first poll: %+v", frames)
		}
		cursors[f.Channel] = f.Cursor
	}
	if len(cursors) != 2 {
		t.Fatalf("first poll: %+v", frames)
	}

	// Nothing new: an empty answer once the hold has passed.
	if frames := pollOnce(t, s, "0", cursors, "a", "b"); len(frames) != 0 {
		t.Fatalf("nothing new: %+v", frames)
	}

	// Published between polls: the next poll gets it at once, by cursor.
	s.publish(t, "a", 1)
	frames = pollOnce(t, s, "", cursors, "a", "b")
	if len(frames) != 1 || frames[0].Type != "data" || string(frames[0].Data) != "1" {
		t.Fatalf("after a publication: %+v", frames)
	}
	cursors["a"] = frames[0].Cursor

	// Published while a poll waits: it answers then.
	done := make(chan []wsFrame, 1)
	go func() { done <- pollOnce(t, s, "", cursors, "a", "b") }()
	for s.hub.Stats().Subscriptions < 2 {
		runtime.Gosched() // until the poll has subscribed
	}
	s.publish(t, "b", 2)
	frames = <-done
	if len(frames) != 1 || frames[0].Channel != "b" || string(frames[0].Data) != "2" {
		t.Fatalf("held poll: %+v", frames)
	}
	cursors["b"] = frames[0].Cursor

	// A cursor that cannot be honoured is a reset, as on every transport.
	frames = pollOnce(t, s, "", map[string]string{"a": "1.nope", "b": cursors["b"]}, "a", "b")
	if len(frames) != 1 || frames[0].Type != "reset" || frames[0].Channel != "a" {
		t.Fatalf("bad cursor: %+v", frames)
	}

	// A poller that left costs nothing.
	if st := s.hub.Stats(); st.Connections != 0 || st.Subscriptions != 0 {
		t.Fatalf("after the polls: %d connections, %d subscriptions", st.Connections, st.Subscriptions)
	}
}

// TestLongPollLosesNothing polls with the cursors it reached while a
// publisher publishes: every publication arrives once, in order.
func TestLongPollLosesNothing(t *testing.T) {
	s := newTestServer(t, nil)
	const n = 300
	go func() {
		for i := range n {
			s.hub.Publish(context.Background(), fmt.Sprint("c", i%3), i)
		}
	}()
	cursors := map[string]string{}
	for _, f := range pollOnce(t, s, "", nil, "c0", "c1", "c2") {
		cursors[f.Channel] = f.Cursor
	}
	// The first poll's cursors are where each channel stood: count from
	// there.
	start := map[string]int{}
	for ch, c := range cursors {
		pos, _ := live.ParseCursor(c)
		start[ch] = int(pos.Seq)
	}
	got := map[string][]int{}
	total := start["c0"] + start["c1"] + start["c2"]
	for total < n {
		for _, f := range pollOnce(t, s, "", cursors, "c0", "c1", "c2") {
			if f.Type != "data" {
				t.Fatalf("frame %+v", f)
			}
			var i int
			json.Unmarshal(f.Data, &i)
			got[f.Channel] = append(got[f.Channel], i)
			cursors[f.Channel] = f.Cursor
			total++
		}
	}
	for k, ch := range []string{"c0", "c1", "c2"} {
		var want []int
		for i := start[ch]*3 + k; i < n; i += 3 {
			want = append(want, i)
		}
		if diff := cmp.Diff(want, got[ch]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", ch, diff)
		}
	}
}

func TestLongPollRefusals(t *testing.T) {
	s := newTestServer(t, &live.Options{Authorize: func(_ *http.Request, ch string, _ live.Op) error {
		if ch == "secret" {
			return live.ErrForbidden
		}
		return nil
	}})
	for _, tc := range []struct{ query, want string }{
		{"channels=a&poll=soon", "400"},
		{"channels=a&poll=-1", "400"},
		{"channels=secret&poll=0", "403"},
		{"channels=a&poll=0&token=x", "400"},
	} {
		if got := httpCode(t, "GET", s.srv.URL+"/api/live?"+tc.query, ""); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.query, got, tc.want)
		}
	}
	frames := pollOnce(t, s, "0", nil, "secret", "open")
	if len(frames) != 2 || frames[0].Type != "error" || frames[0].Channel != "secret" || frames[1].Type != "subscribed" {
		t.Fatalf("one refused channel: %+v", frames)
	}
	// Closing the hub answers a waiting poll.
	done := make(chan []wsFrame, 1)
	go func() { done <- pollOnce(t, s, "", map[string]string{"open": frames[1].Cursor}, "open") }()
	for s.hub.Stats().Subscriptions < 1 {
		runtime.Gosched()
	}
	s.hub.Close(context.Background())
	if frames := <-done; len(frames) != 0 {
		t.Fatalf("poll at Close: %+v", frames)
	}
}
