package livetest

import (
	"context"
	"testing"
	"time"

	"github.com/go-live/live/liveclient"
)

// Client is a test's subscriber on real streams.
type Client struct {
	msgs chan liveclient.Message
	*liveclient.Client
}

// Connect follows channels at url (a ws:// WebSocket URL, or the http://
// prefix of the SSE handler) and returns once every channel is subscribed,
// so whatever the test publishes next reaches the client. It reconnects
// quickly when dropped. The connection ends with the test.
func Connect(t testing.TB, url string, channels ...string) *Client {
	t.Helper()
	connected := make(chan struct{}, len(channels))
	c := &Client{msgs: make(chan liveclient.Message, 1024)}
	c.Client = liveclient.New(url, &liveclient.Options{
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnState: func(s string, _ int) {
			if s == "connected" {
				select {
				case connected <- struct{}{}:
				default:
				}
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Follow(ctx, channels, func(m liveclient.Message) error {
			select {
			case c.msgs <- m:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("livetest: %v", err)
		}
	})
	want := 1
	if len(url) > 4 && url[:4] == "http" {
		want = len(channels) // one stream per channel
	}
	deadline := time.After(wait(t))
	for range want {
		select {
		case <-connected:
		case <-deadline:
			t.Fatalf("livetest: not subscribed to %v at %s", channels, url)
		}
	}
	return c
}

// Next returns the next message, failing the test if none arrives before
// the test's deadline (or within 10 seconds without one).
func (c *Client) Next(t testing.TB) liveclient.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait(t)):
		t.Fatal("livetest: no message")
		return liveclient.Message{}
	}
}

// wait is how long to wait for something: until shortly before the test's
// deadline, or 10 seconds.
func wait(t testing.TB) time.Duration {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			return max(time.Until(dl)-time.Second, time.Second)
		}
	}
	return 10 * time.Second
}
