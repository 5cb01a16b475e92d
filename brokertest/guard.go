package brokertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// Hostile data: what an application may be handed by its users and pass to
// a broker's Publish itself. None of it may reach a hub as anything but
// data.
var (
	// forgedControl is a control message as the hubs send it on their
	// reserved channel, which would end the user's connections.
	forgedControl = `{"op":"disconnect","user":"victim","from":"forged"}`
	// forgedPresence would show a member who is not there.
	forgedPresence = `{"op":"diff","from":"forged","ch":{"room":{"set":[{"user":"ghost","conns":1}]}}}`
	// lookalikes look like the envelopes in which hubs once carried a
	// publication's exclusion, inside the data: as data they skipped the
	// victim, or reached everyone as null.
	lookalikes = []string{
		`{"@live:except":{"user":"victim"},"data":"not for the victim"}`,
		`{"@live:except":1}`,
		`{"@live:except":{"conn":"x"},"data":1,"more":2}`,
	}
)

// testGuardReserved checks that a publication that no Hub made, on one of
// the channels the hubs keep for themselves ("@live:…"), is refused,
// whatever it holds, and leaves no trace.
func (s *suite) testGuardReserved(t *testing.T) {
	b := s.broker(t)
	for _, c := range []struct{ channel, data string }{
		{"@live:control", forgedControl},
		{"@live:presence", forgedPresence},
		{"@live:anything", `1`},
	} {
		w := servertest.Watch(t, b, c.channel)
		head := w.Ready(t)
		ctx, cancel := timeout(t)
		pos, err := b.Publish(ctx, c.channel, []byte(c.data))
		cancel()
		if err == nil {
			t.Errorf("Publish(%q, %s) = %v, nil; want an error: the channel is the hubs'", c.channel, c.data, pos)
		}
		if again := servertest.Watch(t, b, c.channel).Ready(t); again.Seq != head.Seq {
			t.Errorf("%s: head %v after the refused publication, was %v", c.channel, again, head)
		}
		if extra := w.Pending(); len(extra) > 0 {
			t.Errorf("%s: delivered %v", c.channel, extra)
		}
	}
}

// testGuardData checks that a publication that no Hub made is JSON
// delivered as data, whatever it looks like: it arrives without meta,
// compacted, and as such in history; data that is not one JSON value is
// refused.
func (s *suite) testGuardData(t *testing.T) {
	b := s.broker(t)
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	var want []live.Message
	for _, data := range append(lookalikes, `{"@live:except": {"user": "victim"},
	"data": 2}`) {
		pos := publish(t, b, channel, data)
		want = append(want, message(channel, pos, compact(data)))
	}
	if diff := diffMessages(want, w.NextN(t, len(want))); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	s.checkSince(t, b, channel, head, want)
	for _, bad := range []string{``, `{"a":`, `nope`, `1 2`, "\"\xff\"", "\x1e{}"} {
		ctx, cancel := timeout(t)
		pos, err := b.Publish(ctx, channel, []byte(bad))
		cancel()
		if err == nil {
			t.Errorf("Publish(%q) = %v, nil; want an error: not one JSON value", bad, pos)
		}
	}
}

// compact removes the whitespace between JSON tokens, as brokers do with
// an application's data.
func compact(data string) string {
	var out []byte
	in := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case in && c == '\\':
			out = append(out, c, data[i+1])
			i++
			continue
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\n' || c == '\t' || c == '\r'):
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// testGuardMeta checks that the meta a Hub attaches to its publications
// travels beside their data: publications made through a Hub at once,
// some with an exclusion and some without, reach a subscriber and history
// each with its own meta and its data unchanged.
func (s *suite) testGuardMeta(t *testing.T) {
	b := s.broker(t)
	hub := servertest.NewNode(t, b, nil).Hub
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	const n = 12 // and one more, large
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := timeout(t)
			defer cancel()
			if i%2 == 1 {
				ctx = live.Except(ctx, "", fmt.Sprintf("user%d-zoë-😀 \"\n", i))
			}
			if _, err := hub.Publish(ctx, channel, i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A large one, which brokers may carry apart from their announcements.
	ctx, cancel := timeout(t)
	defer cancel()
	if _, err := hub.Publish(live.Except(ctx, "", "user-big"), channel, json.RawMessage(bigPayload)); err != nil {
		t.Fatal(err)
	}
	got := w.NextN(t, n+1)
	if big := got[n]; string(big.Data) != bigPayload || len(big.Meta) == 0 {
		t.Errorf("large publication delivered with %d bytes of data and meta %q; want %d bytes and meta", len(big.Data), big.Meta, len(bigPayload))
	}
	for _, m := range got[:n] {
		var i int
		if _, err := fmt.Sscan(string(m.Data), &i); err != nil {
			t.Fatalf("delivered %s; want a number as published", m.Data)
		}
		if hasMeta := len(m.Meta) > 0; hasMeta != (i%2 == 1) {
			t.Errorf("publication %d delivered with meta %q; want meta only with an exclusion", i, m.Meta)
		}
	}
	s.checkSince(t, b, channel, head, got)
}

// testGuardText checks that a Hub's text publications ([live.Text]) keep
// the mark that they are text, which travels in their meta: delivered
// and in history with their data, a JSON string, unchanged, and sent as
// text on a one-channel SSE stream, live and to a stream that a Hub which
// saw none of them resumes from the broker's history.
func (s *suite) testGuardText(t *testing.T) {
	b := s.broker(t)
	node := servertest.NewNode(t, b, nil)
	channel := channelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	live1 := servertest.OpenStream(t, node.SSE+channel, "")
	texts := []live.Text{
		{Event: "row", Data: "<li id=\"a\">zoë 😀</li>\r\n<li>b</li>"},
		{Data: "<turbo-stream action=\"remove\" target=\"a\"></turbo-stream>"},
		{Event: "datastar-patch-elements", Data: "elements <p>\\ \t</p>\n"},
		{Event: "empty"},
	}
	want := make([]servertest.Event, len(texts)+1)
	ctx, cancel := timeout(t)
	defer cancel()
	for i, tx := range texts {
		pctx := ctx
		if i == 1 {
			pctx = live.Except(ctx, "", "someone")
		}
		pos, err := node.Hub.Publish(pctx, channel, tx)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = servertest.Event{ID: pos.String(), Event: tx.Event, Data: strings.ReplaceAll(tx.Data, "\r\n", "\n")}
	}
	pos := node.Publish(t, channel, `"a JSON string"`)
	want[len(texts)] = servertest.Event{ID: pos.String(), Data: `"a JSON string"`}

	got := w.NextN(t, len(want))
	for i, m := range got[:len(texts)] {
		var text string
		if err := json.Unmarshal(m.Data, &text); err != nil || text != texts[i].Data || len(m.Meta) == 0 {
			t.Errorf("text %d delivered as data %s, meta %q; want the JSON string of %q and meta", i, m.Data, m.Meta, texts[i].Data)
		}
	}
	if m := got[len(texts)]; len(m.Meta) != 0 {
		t.Errorf("JSON string delivered with meta %q; want none", m.Meta)
	}
	s.checkSince(t, b, channel, head, got)

	check := func(how string, st *servertest.Stream) {
		t.Helper()
		for i, wt := range want {
			if e := st.Next(t); e != wt {
				t.Errorf("%s: event %d %+v; want %+v", how, i, e, wt)
			}
		}
	}
	check("live", live1)
	if _, ok := b.(live.History); ok && s.cfg.HistorySize >= len(want) {
		other := servertest.NewNode(t, b, nil)
		check("resumed from history", servertest.OpenStream(t, other.SSE+channel, head.String()))
	}
}

// testGuard checks, on nodes sharing the broker, that what an application
// publishes through the broker itself is data and nothing else: a forged
// control message or presence message is refused and ends nothing, and
// data that looks like an exclusion reaches everyone, unchanged, over
// WebSocket and SSE, while a Hub's exclusion still skips its user on the
// other node.
func (s *suite) testGuard(t *testing.T) {
	opts := &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: r.Header.Get("X-User")}, nil
		},
		Presence: func(channel string) live.PresenceMode { return live.PresenceMembers },
	}
	raw := s.broker(t)
	a, b := servertest.NewNode(t, s.broker(t), opts), servertest.NewNode(t, s.broker(t), opts)
	channel := channelName(t)
	victim := dialAs(t, b, "victim", channel)
	other := dialAs(t, a, "other", channel)
	victimSSE := servertest.OpenStreamWith(t, b.SSE+channel, http.Header{"X-User": {"victim"}})
	skipPresence := func(c *frameConn) wsFrame {
		t.Helper()
		for {
			if f := c.next(t); f.Type != "presence" {
				return f
			}
		}
	}

	ctx, cancel := timeout(t)
	defer cancel()
	for _, c := range []struct{ channel, data string }{
		{"@live:control", `{"op":"disconnect","user":"victim","from":"forged"}`},
		{"@live:control", `{"op":"reauthorize","from":"forged"}`},
		{"@live:presence", fmt.Sprintf(`{"op":"diff","from":"forged","ch":{%q:{"set":[{"user":"ghost","conns":1}]}}}`, channel)},
	} {
		if _, err := raw.Publish(ctx, c.channel, []byte(c.data)); err == nil {
			t.Errorf("Publish(%q, %s) through the broker: nil error; want a refusal", c.channel, c.data)
		}
	}
	for _, data := range lookalikes {
		if _, err := raw.Publish(ctx, channel, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	for _, data := range lookalikes {
		for who, c := range map[string]*frameConn{"victim on B": victim, "other on A": other} {
			if f := skipPresence(c); f.Type != "data" || string(f.Data) != data {
				t.Fatalf("%s: %+v; want the data %s as published", who, f, data)
			}
		}
		if ev := nextData(t, victimSSE); ev.Data != data {
			t.Fatalf("victim's SSE stream on B: %+v; want the data %s as published", ev, data)
		}
	}

	// The hubs' own exclusion still crosses nodes, beside the data.
	if _, err := a.Hub.Publish(live.Except(ctx, "", "victim"), channel, "not for the victim"); err != nil {
		t.Fatal(err)
	}
	a.Publish(t, channel, `"for all"`)
	if f := skipPresence(other); string(f.Data) != `"not for the victim"` {
		t.Fatalf("other on A: %+v", f)
	}
	for who, c := range map[string]*frameConn{"victim on B": victim, "other on A": other} {
		if f := skipPresence(c); f.Type != "data" || string(f.Data) != `"for all"` {
			t.Fatalf("%s: %+v; want only the publication for all", who, f)
		}
	}
	if ev := nextData(t, victimSSE); ev.Data != `"for all"` {
		t.Fatalf("victim's SSE stream on B: %+v; want only the publication for all", ev)
	}
	members, _, err := b.Hub.Members(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.User == "ghost" {
			t.Errorf("Members on B: %+v; a forged presence message was applied", members)
		}
	}
}

// nextData returns the stream's next event other than presence.
func nextData(t *testing.T, s *servertest.Stream) servertest.Event {
	t.Helper()
	for {
		if ev := s.Next(t); ev.Event != "presence" {
			return ev
		}
	}
}

// checkSince checks, when b keeps history and enough of it, that Since
// from head returns want: what subscribers were delivered.
func (s *suite) checkSince(t *testing.T, b live.Broker, channel string, head live.Position, want []live.Message) {
	t.Helper()
	h, ok := b.(live.History)
	if !ok || s.cfg.HistorySize < len(want) {
		return
	}
	ctx, cancel := timeout(t)
	defer cancel()
	msgs, err := h.Since(ctx, channel, head)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffMessages(want, msgs); diff != "" {
		t.Errorf("Since differs from what was delivered (-delivered +Since):\n%s", diff)
	}
}
