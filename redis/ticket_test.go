package redisbroker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
)

// TestTicketAcrossNodes: two nodes sharing a TicketKey and the broker's
// IdempotencyStore accept each other's tickets, each once.
func TestTicketAcrossNodes(t *testing.T) {
	u := redisURL(t)
	a, _, _ := newBroker(t, u, nil)
	b, _, _ := newBroker(t, u, nil)
	// Each test broker has a prefix of its own: both nodes use A's store,
	// as nodes of one application share their prefix.
	store := a.Idempotency()
	key := []byte("the nodes' ticket key, 32 bytes!")
	serve := func(br live.Broker) (*live.Hub, string) {
		hub := live.NewHub(&live.Options{Broker: br, TicketKey: key, TicketStore: store})
		srv := httptest.NewServer(hub)
		t.Cleanup(func() {
			servertest.CloseHub(t, hub)
			srv.Close()
		})
		return hub, srv.URL
	}
	hubA, urlA := serve(a)
	_, urlB := serve(b)
	status := func(base, ticket string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/red?ticket="+url.QueryEscape(ticket), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error string }
		if resp.StatusCode != http.StatusOK {
			json.NewDecoder(resp.Body).Decode(&body)
		}
		return resp.StatusCode, body.Error
	}
	tk, err := hubA.Ticket(live.Identity{User: "alice"}, []string{"red"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := status(urlB, tk); code != http.StatusOK {
		t.Fatalf("a ticket minted on A, used on B: %d; want 200", code)
	}
	for _, base := range []string{urlA, urlB} {
		if code, e := status(base, tk); code != http.StatusUnauthorized || e != "ticket_used" {
			t.Errorf("the ticket used again: %d %q; want 401 ticket_used", code, e)
		}
	}
}
