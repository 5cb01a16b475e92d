package live

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-live/live/observe"
)

// What Options.Observe's hooks see, and the counts Stats gives by
// transport. The hub copies the hooks once, in NewHub, so a hot path pays
// one nil check for a hook that is not set.

// A transport is how a connection reaches its client, an index into
// transports.
type transport uint8

const (
	trSSE transport = iota
	trSSEMux
	trWS
	trPoll
	numTransports
)

// transports names each transport as Stats and the hooks do.
var transports = [numTransports]string{observe.SSE, observe.SSEMux, observe.WebSocket, observe.Poll}

// transportOf returns the transport of a connection opened by r: ws
// connections are WebSockets, multiplexed streams or long-polls.
func transportOf(r *http.Request, ws bool) transport {
	switch {
	case !ws:
		return trSSE
	case r == nil || isWebSocket(r):
		return trWS
	case r.URL != nil && r.URL.Query().Has("poll"):
		return trPoll
	}
	return trSSEMux
}

// clockStart is the origin of nanotime.
var clockStart = time.Now()

// nanotime returns the time on the process's monotonic clock, in
// nanoseconds since it started; never 0 once a nanosecond has passed.
func nanotime() int64 { return int64(time.Since(clockStart)) }

// observePublish reports a publication the broker answered, which took
// since start.
func (h *Hub) observePublish(channel string, start int64, err error) {
	h.obs.Published(channel, time.Duration(nanotime()-start), err)
}

// observePoll reports a long-poll held since start, answered now.
func (h *Hub) observePoll(start time.Time) {
	if h.obs.PollHeld != nil {
		h.obs.PollHeld(time.Since(start))
	}
}

// tracedKey keys, in a publication's context, the function
// Options.Observe.Inject returned to hear how the publication ended.
type tracedKey struct{}

// inject asks Options.Observe.Inject for the trace a publication on
// channel carries, and returns ctx and meta carrying it (meta as withMeta
// made it, with the trace added) and, under tracedKey, what to call once
// the publication ends. The hub's own messages on reserved channels carry
// none.
func (h *Hub) inject(ctx context.Context, channel string, m []byte) (context.Context, []byte) {
	if reserved(channel) {
		return ctx, m
	}
	t, done := h.obs.Inject(ctx, channel)
	if done != nil {
		ctx = context.WithValue(ctx, tracedKey{}, done)
	}
	if t == "" || len(t) > observe.MaxTrace {
		return ctx, m
	}
	m, _ = json.Marshal(meta{Except: exceptOf(ctx), Text: textOf(ctx), Trace: t})
	return withHubMeta(ctx, m), m
}

// traced tells the function Inject returned for the publication made
// under ctx, if any, how it ended.
func (h *Hub) traced(ctx context.Context, err error) {
	if h.obs.Inject == nil {
		return
	}
	if done, ok := ctx.Value(tracedKey{}).(func(error)); ok {
		done(err)
	}
}

// fanOut tells Options.Observe.FanOut that a publication with meta mt
// reached the hub on channel, and returns what to call once it is queued,
// or nil.
func (h *Hub) fanOut(channel string, mt meta) func() {
	if h.obs.FanOut == nil {
		return nil
	}
	return h.obs.FanOut(channel, mt.Trace)
}

// appendPing appends a heartbeat ping whose payload is the time it is
// queued, which the client's pong echoes (RFC 6455 5.5.3): pong measures
// the round trip from it.
func appendPing(b []byte) []byte {
	b = appendWSHeader(b, opPing, 8)
	return binary.BigEndian.AppendUint64(b, uint64(nanotime()))
}

// pong reports the round trip of a heartbeat ping whose pong carried p,
// unmasked. Pongs the hub did not ask for this way are ignored.
func (c *conn) pong(p []byte) {
	if c.hub.obs.Pong == nil || len(p) != 8 {
		return
	}
	sent := int64(binary.BigEndian.Uint64(p))
	if rtt := nanotime() - sent; sent > 0 && rtt >= 0 && rtt < int64(time.Hour) {
		c.hub.obs.Pong(time.Duration(rtt))
	}
}

// pongMasked reports the round trip of a pong read from the socket with
// its masking key and masked payload.
func (c *conn) pongMasked(key, p []byte) {
	if c.hub.obs.Pong == nil || len(p) != 8 {
		return
	}
	var b [8]byte
	for i, x := range p {
		b[i] = x ^ key[i%4]
	}
	c.pong(b[:])
}

// observeWrite reports a writer's turn on c that wrote frames, the oldest
// publication among them having reached the hub at oldest (0: none).
func (c *conn) observeWrite(frames int, oldest int64) {
	var latency time.Duration
	if oldest != 0 {
		latency = time.Duration(nanotime() - oldest)
	}
	c.hub.obs.Wrote(transports[c.tr], frames, latency)
}

// localMembers returns the members this hub holds, summed over its
// presence channels.
func (p *presence) localMembers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pc := range p.chans {
		for user := range pc.local {
			n += pc.weight(user)
		}
	}
	return n
}

// observePoll reports a long-poll's answer, carrying frames, as a write: a
// poll's connection lives for one poll, so the oldest publication queued
// for it is the oldest it answers with.
func (c *conn) observePoll(frames int) {
	if c.hub.obs.Wrote == nil || frames == 0 {
		return
	}
	c.mu.Lock()
	oldest := c.oldest
	c.mu.Unlock()
	c.observeWrite(frames, oldest)
}
