// Package liveclient follows channels of a live.Hub from Go: a service
// that consumes live updates, or a test. It reconnects with capped,
// jittered exponential backoff and resumes every channel from its cursor,
// so nothing inside the hub's history window is lost; when the hub cannot
// replay, the handler is told with a reset message and refetches.
//
//	c := liveclient.New("ws://localhost:8080/ws", nil)
//	err := c.Follow(ctx, []string{"metrics:dashboard"}, func(m liveclient.Message) error {
//		if m.Reset {
//			return refetch(ctx)
//		}
//		return apply(m.Data)
//	})
package liveclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live/internal/sse"
	"golang.org/x/sync/errgroup"
)

// Options configures a Client. A nil *Options, or a zero field, means the
// default documented on the field.
type Options struct {
	// Header is sent with every connection, for cookies or authorization.
	Header http.Header

	// HTTPClient makes SSE requests and WebSocket handshakes. Default
	// http.DefaultClient.
	HTTPClient *http.Client

	// MinBackoff and MaxBackoff bound the wait before reconnecting: it
	// starts at MinBackoff, doubles per failed attempt up to MaxBackoff,
	// and is drawn uniformly below that ("full jitter"), so clients that
	// lost the same server do not return all at once. Defaults 1s and 30s.
	MinBackoff, MaxBackoff time.Duration

	// OnState, if set, is told of connection changes: "connecting",
	// "connected" or "disconnected", with the number of the attempt.
	// "connected" means subscribed: over WebSocket once every channel is
	// acknowledged, over SSE once per channel's stream.
	OnState func(state string, attempt int)
}

// Message is one publication, or a reset, on a followed channel.
type Message struct {
	Channel string
	Cursor  string          // where the channel stands after this message
	Data    json.RawMessage // the published JSON; nil for a reset
	// Event is the event name of a text publication (live.Text), whose
	// Data is the text as a JSON string. Over WebSocket that is exact.
	// A one-channel SSE stream sends text as it is, not as JSON: there a
	// text without an event name that reads as JSON (say "42") is taken
	// for JSON, and an empty one is not seen; follow over WebSocket to
	// tell text from JSON always.
	Event string
	// Reset reports that the hub could not replay what the client missed
	// (Reason says why): the handler must refetch the channel's state.
	Reset  bool
	Reason string
}

// Decode unmarshals a message's data into a T.
func Decode[T any](m Message) (T, error) {
	var v T
	err := json.Unmarshal(m.Data, &v)
	return v, err
}

// A Client follows channels of one hub. It is safe for concurrent use;
// each Follow call owns its connections.
type Client struct {
	url  string
	sse  bool
	opts Options

	mu      sync.Mutex // guards cursors
	cursors map[string]string
}

// New returns a client for the hub at url: a ws:// or wss:// URL of its
// WebSocket handler, or the http:// or https:// prefix under which its SSE
// handler serves /{channel} (one stream per channel).
func New(url string, opts *Options) *Client {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	return &Client{
		url:     url,
		sse:     strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://"),
		opts:    o,
		cursors: make(map[string]string),
	}
}

// SetCursor makes the next connection resume channel from cursor, for
// example one saved by a previous process.
func (c *Client) SetCursor(channel, cursor string) {
	c.mu.Lock()
	c.cursors[channel] = cursor
	c.mu.Unlock()
}

// Cursor returns the cursor of the last message handled on channel.
func (c *Client) Cursor(channel string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursors[channel]
}

// An EndError is why Follow stopped when the hub ended the client for
// good, which reconnecting would not undo. Find it with errors.As.
type EndError struct {
	// Code is the WebSocket close code the hub ended an open connection
	// with, 4001 for Hub.Disconnect (a one-channel SSE stream's "refused"
	// event with code "disconnected" counts as 4001 too); or the HTTP
	// status it refused a connection with: 401 when Options.Identify
	// refused who the client is, 403 when Authorize refused a channel; or
	// 0 when the hub stopped one channel of an open connection
	// (Hub.Reauthorize), which Channel names.
	Code int
	// Reason is the close reason, or the error code the hub answered with
	// ("unauthenticated", "forbidden").
	Reason string
	// Message is the hub's message, when it gave one.
	Message string
	// Channel is the channel refused, when the ending concerns one.
	Channel string
	url     string
}

func (e *EndError) Error() string {
	s := fmt.Sprintf("liveclient: %s: ended by the hub: %d %s", e.url, e.Code, e.Reason)
	if e.Channel != "" {
		s += " (channel " + e.Channel + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// statusDisconnected is the WebSocket close status of Hub.Disconnect.
const statusDisconnected = 4001

// refusal returns the EndError of an HTTP answer that refused a
// connection, with the hub's error code and message from its JSON body.
func (c *Client) refusal(resp *http.Response, channel string) *EndError {
	var body struct{ Error, Message string }
	if resp.Body != nil {
		json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body)
	}
	if body.Error == "" {
		body.Error = http.StatusText(resp.StatusCode)
	}
	return &EndError{Code: resp.StatusCode, Reason: body.Error, Message: body.Message, Channel: channel, url: c.url}
}

// errStop wraps a handler's error so that Follow returns it instead of
// reconnecting.
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }

// Follow subscribes to channels and calls handle for each message, in
// order within a channel and never concurrently, until ctx ends (then it
// returns nil), handle returns an error (then it returns that error), or
// the hub ends the client for good (then it returns an *EndError): it
// disconnected the user (Hub.Disconnect), stopped a channel
// (Hub.Reauthorize), or refused a connection with a 4xx answer (a 401 from
// Options.Identify, say), which retrying would not change. Other endings
// (a network failure, a server going away or asking to try again later)
// are followed by a reconnection. Publications already handled are never
// handled again.
func (c *Client) Follow(ctx context.Context, channels []string, handle func(Message) error) error {
	var mu sync.Mutex // serializes handle across SSE streams
	deliver := func(m Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !m.Reset && !c.advance(m.Channel, m.Cursor) {
			return nil // seen already
		}
		if m.Reset {
			c.SetCursor(m.Channel, m.Cursor)
		}
		if err := handle(m); err != nil {
			return errStop{err}
		}
		return nil
	}
	var err error
	if c.sse {
		g, gctx := errgroup.WithContext(ctx)
		for _, ch := range channels {
			g.Go(func() error {
				return c.loop(gctx, func(ctx context.Context) error { return c.sseOnce(ctx, ch, deliver) })
			})
		}
		err = g.Wait()
	} else {
		err = c.loop(ctx, func(ctx context.Context) error { return c.wsOnce(ctx, channels, deliver) })
	}
	var stop errStop
	if errors.As(err, &stop) {
		return stop.err
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// advance records cursor for channel and reports whether it is new: a
// later position in the same epoch, or any position in another epoch.
func (c *Client) advance(channel, cursor string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.cursors[channel]
	if cursor == "" {
		return true // coalesced messages carry no cursor
	}
	ps, pe, _ := strings.Cut(prev, ".")
	ns, ne, _ := strings.Cut(cursor, ".")
	if prev != "" && pe == ne {
		p, _ := strconv.ParseUint(ps, 10, 64)
		n, _ := strconv.ParseUint(ns, 10, 64)
		if n <= p {
			return false
		}
	}
	c.cursors[channel] = cursor
	return true
}

// loop runs once until ctx ends or a handler stops it, waiting with
// backoff between attempts. once reports a nil error after a connection
// that was established, which resets the backoff.
func (c *Client) loop(ctx context.Context, once func(context.Context) error) error {
	attempt := 0
	for {
		c.state("connecting", attempt)
		err := once(ctx)
		var stop errStop
		if errors.As(err, &stop) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			attempt = 0 // it was connected: start again from the smallest wait
		}
		c.state("disconnected", attempt)
		ceiling := min(c.opts.MaxBackoff, c.opts.MinBackoff<<min(attempt, 20))
		attempt++
		t := time.NewTimer(rand.N(ceiling) + 1)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Client) state(s string, attempt int) {
	if c.opts.OnState != nil {
		c.opts.OnState(s, attempt)
	}
}

// refused reports whether an HTTP status refuses the request for good:
// retrying will not help.
func refused(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout
}

// wsFrame is any frame the hub sends over WebSocket.
type wsFrame struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Cursor  string          `json:"cursor"`
	Reason  string          `json:"reason"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Event   string          `json:"event"`
}

// wsOnce runs one WebSocket connection. It returns nil if the connection
// was established and later lost.
func (c *Client) wsOnce(ctx context.Context, channels []string, deliver func(Message) error) error {
	conn, resp, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{HTTPHeader: c.opts.Header, HTTPClient: c.opts.HTTPClient})
	if err != nil {
		if resp != nil && refused(resp.StatusCode) {
			return errStop{c.refusal(resp, "")}
		}
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(-1)
	for _, ch := range channels {
		sub := map[string]string{"type": "subscribe", "channel": ch}
		if cur := c.Cursor(ch); cur != "" {
			sub["cursor"] = cur
		}
		b, _ := json.Marshal(sub)
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			return err
		}
	}
	connected, acks := false, 0
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == statusDisconnected {
				return errStop{&EndError{Code: int(ce.Code), Reason: ce.Reason, url: c.url}}
			}
			if connected {
				return nil
			}
			return err
		}
		var f wsFrame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		switch f.Type {
		case "subscribed":
			// Connected once every channel is acknowledged: from then on
			// nothing published is missed.
			if acks++; acks == len(channels) && !connected {
				connected = true
				c.state("connected", 0)
			}
			if c.Cursor(f.Channel) == "" {
				c.SetCursor(f.Channel, f.Cursor)
			}
		case "data":
			err = deliver(Message{Channel: f.Channel, Cursor: f.Cursor, Data: f.Data, Event: f.Event})
		case "reset":
			err = deliver(Message{Channel: f.Channel, Cursor: f.Cursor, Reset: true, Reason: f.Reason})
		case "error":
			if f.Channel != "" {
				return errStop{&EndError{Reason: f.Code, Message: f.Message, Channel: f.Channel, url: c.url}}
			}
		}
		if err != nil {
			return err
		}
	}
}

// sseOnce runs one SSE stream for channel. It returns nil if the stream
// was established and later lost.
func (c *Client) sseOnce(ctx context.Context, channel string, deliver func(Message) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.url, "/")+"/"+url.PathEscape(channel), nil)
	if err != nil {
		return errStop{err}
	}
	for k, v := range c.opts.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	if cur := c.Cursor(channel); cur != "" {
		req.Header.Set("Last-Event-ID", cur)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if refused(resp.StatusCode) {
			return errStop{c.refusal(resp, channel)}
		}
		return fmt.Errorf("liveclient: %s: %s", channel, resp.Status)
	}
	c.state("connected", 0)
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			return nil // established, then lost
		}
		cur := ""
		if ev.HasID {
			cur = ev.ID
		}
		switch {
		case ev.Comment != "":
		case ev.Event == "reset":
			var body struct{ Reason string }
			json.Unmarshal([]byte(ev.Data), &body)
			err = deliver(Message{Channel: channel, Cursor: cur, Reset: true, Reason: body.Reason})
		case ev.Event == "refused":
			// The hub ended the stream: Hub.Disconnect, or
			// Hub.Reauthorize of its channel.
			var body struct{ Code, Message string }
			json.Unmarshal([]byte(ev.Data), &body)
			end := &EndError{Reason: body.Code, Message: body.Message, Channel: channel, url: c.url}
			if body.Code == "disconnected" {
				end.Code, end.Reason, end.Channel = statusDisconnected, body.Message, ""
			}
			return errStop{end}
		case ev.Event == "status" || ev.Event == "presence":
			// The hub's notices are not publications.
		case ev.Event != "" && ev.Event != "message":
			// A text publication (live.Text) with an event name, which
			// the stream sends as it is.
			err = deliver(Message{Channel: channel, Cursor: cur, Data: textData(ev.Data), Event: ev.Event})
		case ev.Data != "":
			// A publication: JSON, or a text publication without a
			// name, which the stream sends as it is too, and which
			// reads as JSON only if the text is JSON.
			data := json.RawMessage(ev.Data)
			if !json.Valid(data) {
				data = textData(ev.Data)
			}
			err = deliver(Message{Channel: channel, Cursor: cur, Data: data})
		case ev.HasID && c.Cursor(channel) == "":
			c.SetCursor(channel, ev.ID)
		}
		if err != nil {
			return err
		}
	}
}

// textData returns text as a JSON string, as WebSocket frames carry a text
// publication.
func textData(text string) json.RawMessage {
	b, _ := json.Marshal(text)
	return b
}
