package live_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/go-live/live"
)

// muxFrame reads the next event of a multiplexed SSE stream as the frame
// it carries.
func (s *sseStream) muxFrame(t testing.TB) wsFrame {
	t.Helper()
	ev, ok := s.next(t)
	if !ok {
		t.Fatal("SSE stream ended")
	}
	if ev.Event != "" || ev.HasID {
		t.Fatalf("multiplexed event has event %q, id %q; want bare data", ev.Event, ev.ID)
	}
	var f wsFrame
	if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
		t.Fatalf("event data %q: %v", ev.Data, err)
	}
	return f
}

func (s *sseStream) expectMux(t testing.TB, typ, channel string) wsFrame {
	t.Helper()
	f := s.muxFrame(t)
	if f.Type != typ || f.Channel != channel {
		t.Fatalf("got %+v; want %s on %q", f, typ, channel)
	}
	return f
}

func TestSSEMultiplexed(t *testing.T) {
	for _, base := range []string{"/live/", "/api/live"} {
		t.Run(base, func(t *testing.T) {
			s := newTestServer(t, nil)
			st := openSSE(t, s.srv.URL+base+"?channels=a,b:1,a", nil)
			s.expectOrdered(t, st, "a", "b:1")
			s.publish(t, "b:1", 1)
			s.publish(t, "a", 2)
			s.publish(t, "other", 3)
			f := st.expectMux(t, "data", "b:1")
			if string(f.Data) != "1" || f.Cursor == "" {
				t.Fatalf("frame %+v", f)
			}
			f = st.expectMux(t, "data", "a")
			if string(f.Data) != "2" {
				t.Fatalf("frame %+v", f)
			}
		})
	}
}

// expectOrdered reads the "subscribed" frames of channels, in order.
func (s *testServer) expectOrdered(t testing.TB, st *sseStream, channels ...string) []wsFrame {
	t.Helper()
	var fs []wsFrame
	for _, ch := range channels {
		fs = append(fs, st.expectMux(t, "subscribed", ch))
	}
	return fs
}

func TestSSEMultiplexedResume(t *testing.T) {
	s := newTestServer(t, nil)
	a1 := s.publish(t, "a", "a1")
	s.publish(t, "a", "a2")
	s.publish(t, "b", "b1")
	s.publish(t, "a", "a3")

	q := url.Values{"channels": {"a,b,c"}}
	q.Set("cursor.a", a1.String())
	q.Set("cursor.c", "1.nonsense") // a cursor from another numbering
	st := openSSE(t, s.srv.URL+"/live/?"+q.Encode(), nil)

	st.expectMux(t, "subscribed", "a")
	for _, want := range []string{`"a2"`, `"a3"`} {
		if f := st.expectMux(t, "data", "a"); string(f.Data) != want {
			t.Fatalf("replayed %s; want %s", f.Data, want)
		}
	}
	st.expectMux(t, "subscribed", "b") // no cursor: live only
	st.expectMux(t, "subscribed", "c")
	if f := st.expectMux(t, "reset", "c"); f.Reason == "" {
		t.Fatalf("reset without reason: %+v", f)
	}
	s.publish(t, "b", "b2")
	if f := st.expectMux(t, "data", "b"); string(f.Data) != `"b2"` {
		t.Fatalf("got %s", f.Data)
	}
}

func TestSSEMultiplexedRefusals(t *testing.T) {
	opts := &live.Options{
		MaxSubscriptions: 3,
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if strings.HasPrefix(channel, "secret") {
				return live.ErrForbidden
			}
			return nil
		},
	}
	s := newTestServer(t, opts)

	t.Run("one refused, the others stream", func(t *testing.T) {
		st := openSSE(t, s.srv.URL+"/live/?channels=secret,open", nil)
		if f := st.expectMux(t, "error", "secret"); f.Code != "forbidden" {
			t.Fatalf("code %q", f.Code)
		}
		st.expectMux(t, "subscribed", "open")
		s.publish(t, "secret", 1)
		s.publish(t, "open", 2)
		if f := st.expectMux(t, "data", "open"); string(f.Data) != "2" {
			t.Fatalf("got %s", f.Data)
		}
	})

	for _, tc := range []struct {
		query  string
		status int
		code   string
	}{
		{"channels=", 400, "bad_channel"},
		{"channels=,,", 400, "bad_channel"},
		{"channels=a,b%20c", 400, "bad_channel"},
		{"channels=a,..", 400, "bad_channel"},
		{"channels=a,b,c,d", 400, "too_many_subscriptions"},
		{"channels=secret1,secret2", 403, "forbidden"},
		{"channels=a&token=x", 400, "credentials_in_query"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			resp, err := http.Get(s.srv.URL + "/live/?" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != tc.status || body.Error != tc.code {
				t.Fatalf("got %d %q; want %d %q", resp.StatusCode, body.Error, tc.status, tc.code)
			}
		})
	}
}

func TestSSEMultiplexedClosedHub(t *testing.T) {
	s := newTestServer(t, nil)
	st := openSSE(t, s.srv.URL+"/api/live?channels=x", nil)
	st.expectMux(t, "subscribed", "x")
	if err := s.hub.Close(t.Context()); err != nil && !errors.Is(err, live.ErrClosed) {
		t.Fatal(err)
	}
	for {
		if _, ok := st.next(t); !ok {
			return
		}
	}
}

// TestSSEManyChannels follows thousands of channels on one stream: the
// stream's acknowledgements fit its queue, and the hub follows them
// without a goroutine each.
func TestSSEManyChannels(t *testing.T) {
	const n = 5000
	s := newTestServer(t, &live.Options{MaxSubscriptions: n})
	names := make([]string, n)
	for i := range names {
		names[i] = "u" + strconv.Itoa(i)
	}
	before := runtime.NumGoroutine()
	st := openSSE(t, s.srv.URL+"/live/?channels="+strings.Join(names, ","), nil)
	s.expectOrdered(t, st, names...)
	if added := runtime.NumGoroutine() - before; added > n/20 {
		t.Errorf("following %d channels added %d goroutines", n, added)
	}
	s.publish(t, names[n-1], 1)
	s.publish(t, names[0], 2)
	if f := st.expectMux(t, "data", names[n-1]); string(f.Data) != "1" {
		t.Fatalf("frame %+v", f)
	}
	if f := st.expectMux(t, "data", names[0]); string(f.Data) != "2" {
		t.Fatalf("frame %+v", f)
	}
}
