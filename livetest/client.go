package livetest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live/liveclient"
)

// Wait is how long Connect waits for the subscriptions and Next for a
// message, unless the test's deadline comes sooner.
const Wait = 5 * time.Second

// Client is a test's subscriber on real streams, with faults to inject.
type Client struct {
	msgs chan liveclient.Message
	*liveclient.Client

	ended    chan struct{} // closed when the client has stopped for good
	err      error         // why; written before ended is closed
	reported atomic.Bool   // err has failed the test already

	mu     sync.Mutex // guards conns and paused
	conns  map[net.Conn]struct{}
	paused chan struct{} // non-nil while paused; closed to resume
}

// Connect follows channels at url (a ws:// WebSocket URL, or the http://
// prefix of the SSE handler) and returns once every channel is subscribed,
// so whatever the test publishes next reaches the client. It reconnects
// quickly when dropped. The connection ends with the test. If the hub
// refuses the client, Connect fails the test at once with the hub's
// answer.
func Connect(t testing.TB, url string, channels ...string) *Client {
	t.Helper()
	return ConnectWith(t, url, nil, channels...)
}

// ConnectWith is Connect with the requests' options, for hubs whose
// Authorize reads the request: opts.Header is sent with every request
// (Cookie, Authorization), and opts.HTTPClient's Jar and TLS settings are
// used (httptest.Server.Client() for a TLS test server). livetest makes
// its own transport from them, so that Drop can cut the connections, and
// sets the backoff and OnState itself.
func ConnectWith(t testing.TB, url string, opts *liveclient.Options, channels ...string) *Client {
	t.Helper()
	var o liveclient.Options
	if opts != nil {
		o = *opts
	}
	connected := make(chan struct{}, len(channels))
	c := &Client{msgs: make(chan liveclient.Message, 1024), conns: make(map[net.Conn]struct{}), ended: make(chan struct{})}
	base, _ := http.DefaultTransport.(*http.Transport)
	client := &http.Client{}
	if o.HTTPClient != nil {
		client.Jar = o.HTTPClient.Jar
		if tr, ok := o.HTTPClient.Transport.(*http.Transport); ok {
			base = tr
		}
	}
	transport := base.Clone()
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
	client.Transport = transport
	o.HTTPClient = client
	o.MinBackoff, o.MaxBackoff = 5*time.Millisecond, 100*time.Millisecond
	o.OnState = func(s string, _ int) {
		if s == "connected" {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
	}
	c.Client = liveclient.New(url, &o)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(c.ended)
		c.err = c.Follow(ctx, channels, func(m liveclient.Message) error {
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
		if c.err == nil && ctx.Err() == nil {
			c.err = errors.New("the client stopped")
		}
	}()
	t.Cleanup(func() {
		stopped := false
		select {
		case <-c.ended:
			stopped = true // before the test's end: on its own
		default:
		}
		cancel()
		c.Resume()
		<-c.ended
		transport.CloseIdleConnections()
		if stopped && !c.reported.Load() {
			t.Errorf("livetest: the client at %s stopped: %v", url, c.err)
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
		case <-c.ended:
			c.reported.Store(true)
			t.Fatalf("livetest: connecting to %s: %v", url, c.err)
		case <-deadline:
			t.Fatalf("livetest: not subscribed to %v at %s within %v", channels, url, wait(t))
		}
	}
	return c
}

// Next returns the next message. It fails the test at once if the client
// has stopped (the hub refused it, say), and after Wait if nothing came.
func (c *Client) Next(t testing.TB) liveclient.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	default:
	}
	select {
	case m := <-c.msgs:
		return m
	case <-c.ended:
		c.reported.Store(true)
		t.Fatalf("livetest: no message: the client stopped: %v", c.err)
	case <-time.After(wait(t)):
		t.Fatalf("livetest: no message within %v", wait(t))
	}
	return liveclient.Message{}
}

// Ended waits until the hub ends the client for good, and returns how:
// Code 4001 when the application disconnected the user (Hub.Disconnect),
// or the HTTP status a reconnection was refused with (401 when
// Options.Identify refused who the client is), or 0 with Channel set when
// Hub.Reauthorize stopped a channel. Use it to test revocation: remove
// the user, then check that their client was cut off with the code you
// expect, as the example shows. It fails the test if the client is still
// connected after Wait, or stopped for another reason. Messages that
// arrived before the ending stay for Next; once ended, the client is not
// reported at the end of the test as having stopped.
func (c *Client) Ended(t testing.TB) *liveclient.EndError {
	t.Helper()
	select {
	case <-c.ended:
	case <-time.After(wait(t)):
		t.Fatalf("livetest: the client was not ended within %v", wait(t))
		return nil
	}
	c.reported.Store(true)
	var end *liveclient.EndError
	if !errors.As(c.err, &end) {
		t.Fatalf("livetest: the client stopped, not ended by the hub: %v", c.err)
		return nil
	}
	return end
}

// Nothing checks that no message arrives within d. It is the one check
// that waits for time to pass: keep d short.
func (c *Client) Nothing(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Errorf("livetest: unexpected message %+v", m)
	case <-c.ended:
		c.reported.Store(true)
		t.Errorf("livetest: the client stopped: %v", c.err)
	case <-time.After(d):
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

// wait is how long to wait for something: Wait, or less when the test's
// deadline is sooner.
func wait(t testing.TB) time.Duration {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			return max(min(time.Until(dl)-time.Second, Wait), time.Second)
		}
	}
	return Wait
}
