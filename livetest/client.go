package livetest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-live/live/liveclient"
)

// Client is a test's subscriber on real streams, with faults to inject.
type Client struct {
	msgs chan liveclient.Message
	*liveclient.Client

	mu     sync.Mutex // guards conns and paused
	conns  map[net.Conn]struct{}
	paused chan struct{} // non-nil while paused; closed to resume
}

// Connect follows channels at url (a ws:// WebSocket URL, or the http://
// prefix of the SSE handler) and returns once every channel is subscribed,
// so whatever the test publishes next reaches the client. It reconnects
// quickly when dropped. The connection ends with the test.
func Connect(t testing.TB, url string, channels ...string) *Client {
	t.Helper()
	connected := make(chan struct{}, len(channels))
	c := &Client{msgs: make(chan liveclient.Message, 1024), conns: make(map[net.Conn]struct{})}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{}
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dialer.DialContext(ctx, network, addr)
		if err == nil {
			c.mu.Lock()
			c.conns[nc] = struct{}{}
			c.mu.Unlock()
		}
		return nc, err
	}
	c.Client = liveclient.New(url, &liveclient.Options{
		HTTPClient: &http.Client{Transport: transport},
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
			c.mu.Lock()
			paused := c.paused
			c.mu.Unlock()
			if paused != nil {
				select {
				case <-paused:
				case <-ctx.Done():
				}
			}
			select {
			case c.msgs <- m:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		c.Resume()
		if err := <-done; err != nil {
			t.Errorf("livetest: %v", err)
		}
		transport.CloseIdleConnections()
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

// Drop closes the client's connections abruptly, as a network failure
// would. The client reconnects and resumes from its cursors.
func (c *Client) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for nc := range c.conns {
		nc.Close()
		delete(c.conns, nc)
	}
}

// ForceReset makes the client's next connection ask for channel from a
// cursor the hub cannot honour, and drops the current one: the hub answers
// with a reset, as after a long absence.
func (c *Client) ForceReset(channel string) {
	c.SetCursor(channel, "0.forgotten")
	c.Drop()
}

// Pause stops the client reading, like a frozen browser tab, until
// Resume: the hub's queue for it fills and its slow-client policy applies.
func (c *Client) Pause() {
	c.mu.Lock()
	if c.paused == nil {
		c.paused = make(chan struct{})
	}
	c.mu.Unlock()
}

// Resume lets a paused client read again.
func (c *Client) Resume() {
	c.mu.Lock()
	if c.paused != nil {
		close(c.paused)
		c.paused = nil
	}
	c.mu.Unlock()
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
