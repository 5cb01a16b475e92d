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
	return pollQuery(t, s, q)
}

// pollQuery sends one long-poll with query q and returns its frames.
func pollQuery(t *testing.T, s *testServer, q url.Values) []wsFrame {
	t.Helper()
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
		pos, _ := live.ParsePosition(c)
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
	// Closing the hub answers a waiting poll, saying why as a WebSocket's
	// close frame would.
	done := make(chan []byte, 1)
	go func() {
		done <- pollRaw(s, "", url.Values{"channels": {"open"}, "poll": {""}, "cursor.open": {frames[1].Cursor}})
	}()
	for s.hub.Stats().Subscriptions < 1 {
		runtime.Gosched()
	}
	s.hub.Close(context.Background())
	if got, want := string(<-done), `[{"type":"close","closeCode":1001,"reason":"server shutting down"}]`; got != want {
		t.Fatalf("poll at Close: %s; want %s", got, want)
	}
}

// TestLongPollResumeAcknowledged resumes channels over long-poll from
// cursors the poller holds no acknowledgement for (saved by the page, or
// reached over another transport): named in ack, each is acknowledged
// first, then what followed its cursor arrives, and later polls go on
// without acknowledgements.
func TestLongPollResumeAcknowledged(t *testing.T) {
	s := newTestServer(t, nil)
	a1 := s.publish(t, "a", 1)
	s.publish(t, "a", 2)
	b1 := s.publish(t, "b", 1)
	s.publish(t, "a", 3)

	q := url.Values{"channels": {"a,b,c"}, "poll": {""}, "ack": {"a,b,nowhere"}}
	q.Set("cursor.a", a1.String())
	q.Set("cursor.b", b1.String())
	frames := pollQuery(t, s, q)
	var types []string
	got := map[string][]string{}
	cursors := map[string]string{}
	acked := map[string]bool{}
	for _, f := range frames {
		types = append(types, f.Type+" "+f.Channel)
		switch f.Type {
		case "subscribed":
			acked[f.Channel] = true
			if f.Conn == "" {
				t.Errorf("acknowledgement without the connection's name: %+v", f)
			}
		case "data":
			if !acked[f.Channel] {
				t.Fatalf("data before its channel's acknowledgement: %v", types)
			}
			got[f.Channel] = append(got[f.Channel], string(f.Data))
		default:
			t.Fatalf("frame %+v", f)
		}
		cursors[f.Channel] = f.Cursor
	}
	if diff := cmp.Diff(map[string]bool{"a": true, "b": true, "c": true}, acked); diff != "" {
		t.Fatalf("acknowledged (-want +got):\n%s\nframes %v", diff, types)
	}
	// What followed a's cursor may take more polls; none brings an
	// acknowledgement again, and the last holds: nothing more is news.
	for len(got["a"]) < 2 {
		frames := pollQuery(t, s, url.Values{"channels": {"a,b,c"}, "poll": {""}, "cursor.a": {cursors["a"]}, "cursor.b": {cursors["b"]}, "cursor.c": {cursors["c"]}})
		for _, f := range frames {
			if f.Type != "data" {
				t.Fatalf("later poll: %+v", f)
			}
			got[f.Channel] = append(got[f.Channel], string(f.Data))
			cursors[f.Channel] = f.Cursor
		}
	}
	if diff := cmp.Diff(map[string][]string{"a": {"2", "3"}}, got); diff != "" {
		t.Errorf("after the cursors (-want +got):\n%s", diff)
	}
	if frames := pollOnce(t, s, "0", cursors, "a", "b", "c"); len(frames) != 0 {
		t.Errorf("nothing new, no ack asked: %+v", frames)
	}

	// Asked again, the acknowledgement is news by itself: the poll
	// answers at once rather than holding.
	q = url.Values{"channels": {"a"}, "poll": {""}, "ack": {"a"}, "cursor.a": {cursors["a"]}}
	frames = pollQuery(t, s, q)
	if len(frames) != 1 || frames[0].Type != "subscribed" || frames[0].Channel != "a" {
		t.Fatalf("ack with nothing new: %+v", frames)
	}
}

// TestResumeAcknowledgedEverywhere resumes a channel from a cursor on
// every transport: each acknowledges the subscription, then sends what
// followed the cursor.
func TestResumeAcknowledgedEverywhere(t *testing.T) {
	s := newTestServer(t, nil)
	from := s.publish(t, "r", 1)
	s.publish(t, "r", 2)

	t.Run("websocket", func(t *testing.T) {
		ws := dialWS(t, s.wsURL(), nil)
		ws.send(t, map[string]string{"type": "subscribe", "channel": "r", "cursor": from.String()})
		ws.expect(t, "subscribed")
		if f := ws.expect(t, "data"); string(f.Data) != "2" {
			t.Fatalf("after the cursor: %+v", f)
		}
	})
	t.Run("sse", func(t *testing.T) {
		st := openSSE(t, s.srv.URL+"/api/live/r", http.Header{"Last-Event-Id": {from.String()}})
		ev, _ := st.next(t)
		if ev.Data != "" || !ev.HasID {
			t.Fatalf("first event %+v; want the bare id that acknowledges", ev)
		}
		if ev := st.nextData(t); ev.Data != "2" {
			t.Fatalf("after the cursor: %+v", ev)
		}
	})
	t.Run("sse multiplexed", func(t *testing.T) {
		st := openSSE(t, s.srv.URL+"/api/live?channels=r&cursor.r="+url.QueryEscape(from.String()), nil)
		st.expectMux(t, "subscribed", "r")
		if f := st.expectMux(t, "data", "r"); string(f.Data) != "2" {
			t.Fatalf("after the cursor: %+v", f)
		}
	})
	t.Run("poll", func(t *testing.T) {
		frames := pollQuery(t, s, url.Values{"channels": {"r"}, "poll": {""}, "ack": {"r"}, "cursor.r": {from.String()}})
		var types []string
		for _, f := range frames {
			types = append(types, f.Type+" "+string(f.Data))
		}
		if diff := cmp.Diff([]string{"subscribed ", "data 2"}, types); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}
