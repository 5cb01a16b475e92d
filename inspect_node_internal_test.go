package live

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/go-live/live/internal/inspectlink"
)

// A beat's details fit in maxBeatInfo however many connections, channels
// and events there are.
func TestFitBeat(t *testing.T) {
	long := strings.Repeat("x", 200)
	n := inspectlink.Node{ID: "h", Detail: true, Users: map[string][]inspectlink.Conn{}}
	for u := range inspectlink.MaxUsers {
		user := strings.Repeat("u", 50) + string(rune('a'+u))
		for range inspectlink.MaxConns {
			c := inspectlink.Conn{User: user, Transport: "ws", Remote: "10.0.0.1"}
			for range 100 {
				c.Channels = append(c.Channels, long[:60])
			}
			n.Users[user] = append(n.Users[user], c)
		}
	}
	for range inspectlink.MaxEvents {
		n.Events = append(n.Events, inspectlink.Event{Kind: "authorize", Detail: strings.Repeat("d", 300), Channel: long})
	}
	for range 2 * inspectlink.MaxChannels {
		n.Busiest = append(n.Busiest, inspectlink.Channel{Name: long, Subscribers: 1})
	}
	fitBeat(&n)
	b, _ := json.Marshal(n)
	if len(b) > maxBeatInfo {
		t.Fatalf("%d bytes, want at most %d", len(b), maxBeatInfo)
	}
	if len(n.Users) == 0 || len(n.Events) == 0 {
		t.Fatalf("trimmed everything: %d users, %d events", len(n.Users), len(n.Events))
	}
}

// A beat with the inspector's fields decodes, and one without them (an
// older hub's) still does.
func TestBeatInfoDecodes(t *testing.T) {
	for _, data := range []string{
		`{"op":"alive","from":"b","at":1,"info":{"id":"b","conns":3,"connsBy":{"ws":3}},"ask":{"users":["ann"]}}`,
		`{"op":"alive","from":"b","at":1}`,
	} {
		var m controlMsg
		if err := json.Unmarshal([]byte(data), &m); err != nil || m.Op != "alive" || m.From != "b" {
			t.Fatalf("%s: %+v, %v", data, m, err)
		}
	}
}

// failingBroker fails every publish.
type failingBroker struct{ *MemoryBroker }

func (failingBroker) Publish(context.Context, string, []byte) (Position, error) {
	return Position{}, errors.New("broker down")
}

// The hub's ring keeps the newest refusals and errors, newest first, and
// a failed publish is one of them; the details list channels by
// subscribers and users' connections.
func TestInspectEvents(t *testing.T) {
	h := NewHub(&Options{Broker: failingBroker{NewMemoryBroker(nil)}})
	defer h.Close(context.Background())
	for i := range 70 {
		h.note("authorize", "refused "+strconv.Itoa(i), "c", "")
	}
	if _, err := h.Publish(context.Background(), "news", 1); err == nil {
		t.Fatal("publish did not fail")
	}
	n := h.describe(true, nil)
	if len(n.Events) != inspectlink.MaxEvents {
		t.Fatalf("%d events, want %d", len(n.Events), inspectlink.MaxEvents)
	}
	if e := n.Events[0]; e.Kind != "broker" || e.Channel != "news" || !strings.Contains(e.Detail, "broker down") {
		t.Fatalf("newest event: %+v", e)
	}
	if e := n.Events[1]; e.Detail != "refused 69" {
		t.Fatalf("second newest: %+v", e)
	}
	if e := n.Events[len(n.Events)-1]; e.Detail != "refused 21" {
		t.Fatalf("oldest kept: %+v", e)
	}
}
