package natsbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-live/live/liveclient"
	"github.com/go-live/live/livetest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/google/go-cmp/cmp"
)

// The same client resumes on node B through liveclient, which is what a
// Go service following a hub would use.
func TestResumeWithLiveClient(t *testing.T) {
	url := natsURL(t)
	nc := connect(t, url)
	opts := &natsbroker.Options{Prefix: testPrefix(t, url)}
	nodeA := newNode(t, nc, opts)
	nodeB := newNode(t, connect(t, url), opts)
	channel := channelName(t)

	c := livetest.Connect(t, nodeA.SSE, channel)
	first := nodeA.Publish(t, channel, `1`)
	if m := c.Next(t); m.Cursor != first.String() {
		t.Fatalf("message %+v, want %v", m, first)
	}
	c.Drop() // the client reconnects to node A and resumes there
	second := nodeB.Publish(t, channel, `2`)
	if m := c.Next(t); m.Cursor != second.String() || m.Reset {
		t.Fatalf("message after the drop %+v, want %v", m, second)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan string, 16)
	done := make(chan error, 1)
	onB := liveclient.New(nodeB.SSE, &liveclient.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	onB.SetCursor(channel, c.Cursor(channel))
	third := nodeA.Publish(t, channel, `3`)
	go func() {
		done <- onB.Follow(ctx, []string{channel}, func(m liveclient.Message) error {
			got <- fmt.Sprint(m.Cursor, " ", string(m.Data), " ", m.Reset)
			return nil
		})
	}()
	fourth := nodeB.Publish(t, channel, `4`)
	want := []string{third.String() + " 3 false", fourth.String() + " 4 false"}
	var have []string
	for range want {
		select {
		case s := <-got:
			have = append(have, s)
		case err := <-done:
			t.Fatalf("Follow returned %v", err)
		case <-time.After(waitTimeout):
			t.Fatalf("no message on node B after %v", have)
		}
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Errorf("messages on node B (-want +got):\n%s", diff)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow: %v", err)
	}
}
