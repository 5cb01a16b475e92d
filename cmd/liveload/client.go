package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// A subscriber is one client connection of the load side. It reads
// publications of the load channel, checks that their indexes follow each
// other, records their latency, and on a dropped connection resumes with
// its cursor.
type subscriber struct {
	l      *loader
	addr   string // the server's, one of the nodes'
	node   int    // its index among the nodes
	user   string // ?u=, with -presence
	own    string // its own channel, in the many-channel scenario (many.go)
	cursor string // the last cursor seen, for resuming

	presFrames, presBytes atomic.Int64 // presence frames received
	presCount             atomic.Int64 // the count the last one gave

	// next is the index expected next from each source: publications
	// from several nodes carry indexes i with i%sources naming the node's
	// share, each in order. -1 before the first.
	next     []atomic.Int64
	received atomic.Int64
	lost     atomic.Int64 // indexes skipped
	dups     atomic.Int64 // indexes seen twice or out of order
	resets   atomic.Int64
	connects atomic.Int64 // times subscribed

	told  atomic.Int64 // ms the server said to wait before reconnecting (Hub.Drain), until taken
	moved bool         // in the drain scenario: its node is the one that leaves
}

// run keeps the subscriber connected until ctx ends.
func (s *subscriber) run(ctx context.Context, ready chan<- struct{}) {
	s.next = make([]atomic.Int64, max(s.l.sources, 1))
	for i := range s.next {
		s.next[i].Store(-1)
	}
	first := true
	for ctx.Err() == nil {
		var err error
		switch s.l.transport {
		case "ws":
			if s.l.wsLibrary {
				err = s.runWS(ctx, ready, first)
			} else {
				err = s.runRawWS(ctx, ready, first)
			}
		case "poll":
			err = s.runPoll(ctx, ready, first)
		default:
			err = s.runSSE(ctx, ready, first)
		}
		if first {
			first = false
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && s.l.verbose {
			fmt.Println("subscriber:", err)
		}
		if s.l.paced {
			s.pace(ctx)
			continue
		}
		// Reconnect at once: the storm is the point. A refused dial
		// backs off a little so the loop does not spin.
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (s *subscriber) subscribed(ready chan<- struct{}, first bool) {
	s.connects.Add(1)
	s.l.live.Add(1)
	if !first {
		s.l.arrived()
	}
	if first {
		ready <- struct{}{}
	}
}

// dial connects to the server. The connection closes when ctx ends, or
// when stop is called.
func (s *subscriber) dial(ctx context.Context) (c net.Conn, stop func(), err error) {
	var d net.Dialer
	if c, err = d.DialContext(ctx, "tcp", s.addr); err != nil {
		return nil, nil, err
	}
	unhook := context.AfterFunc(ctx, func() { c.Close() })
	return c, func() {
		unhook()
		c.Close()
	}, nil
}

func (s *subscriber) runSSE(ctx context.Context, ready chan<- struct{}, first bool) error {
	c, stop, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer stop()

	path := "/live/" + loadChannel + s.query()
	if s.l.peer != "" {
		path = peerRoutes[s.l.peer].path
	}
	if s.own != "" {
		path = s.manySSEPath()
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + s.addr + "\r\nAccept: text/event-stream\r\n"
	if s.cursor != "" {
		req += "Last-Event-ID: " + s.cursor + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return err
	}
	if s.l.peer != "" {
		// Some peers send their headers with the first event only; the
		// server's count of running handlers says when all are in.
		s.subscribed(ready, first)
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("SSE: %s", resp.Status)
	}
	body := io.Reader(br)
	if len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked" {
		body = bufio.NewReaderSize(httputil.NewChunkedReader(br), 4096)
	}
	// The generator reads events with a parser of its own rather than
	// internal/sse: it reads lines in place, allocating nothing per
	// event, so that tens of thousands of subscribers in one process
	// measure the server rather than themselves.
	lines := body.(interface {
		ReadSlice(byte) ([]byte, error)
	})
	if s.l.peer == "" {
		s.subscribed(ready, first)
	}
	defer s.l.live.Add(-1)
	var id []byte
	reset, presence := false, false
	var long []byte // a line longer than the reader's buffer (a presence snapshot)
	for {
		line, err := lines.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, line...)
			continue
		}
		if err != nil {
			return err
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		switch {
		case bytes.HasPrefix(line, []byte("id: ")):
			id = append(id[:0], bytes.TrimSpace(line[4:])...)
		case bytes.HasPrefix(line, []byte("event: reset")):
			reset = true
		case bytes.HasPrefix(line, []byte("event: presence")):
			presence = true
		case bytes.HasPrefix(line, []byte("retry: ")):
			if n, ok := number(line, "retry: "); ok {
				s.told.Store(n)
			}
		case bytes.HasPrefix(line, []byte("data: ")):
			switch {
			case presence:
				s.presence(line[6:])
			case !reset:
				s.deliver(line[6:])
			}
		case len(line) == 1: // the end of an event
			if len(id) > 0 {
				s.cursor = string(id)
			}
			if reset {
				s.reset()
				reset = false
			}
			presence = false
		}
	}
}

func (s *subscriber) runWS(ctx context.Context, ready chan<- struct{}, first bool) error {
	c, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/ws"+s.query(), &websocket.DialOptions{HTTPClient: s.l.http})
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(-1) // a presence snapshot of thousands of members is large
	// Reads take a context without Done, which costs the library nothing
	// per read; the connection closes when ctx ends.
	stop := context.AfterFunc(ctx, func() { c.CloseNow() })
	defer stop()
	rctx := context.Background()
	for _, sub := range s.subscribeFrames() {
		if err := c.Write(ctx, websocket.MessageText, []byte(sub)); err != nil {
			return err
		}
	}
	up := false
	defer func() {
		if up {
			s.l.live.Add(-1)
		}
	}()
	for {
		_, b, err := c.Read(rctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				s.tell([]byte(ce.Reason))
			}
			return err
		}
		s.wsMessage(b, ready, first, &up)
	}
}

// wsMessage handles one frame of the multiplexed protocol (a WebSocket
// message, or one of a poll's); up records that the subscription was
// acknowledged.
func (s *subscriber) wsMessage(b []byte, ready chan<- struct{}, first bool, up *bool) {
	switch string(field(b, `"type":"`)) {
	case "data":
		if d := bytes.Index(b, []byte(`"data":`)); d >= 0 {
			s.deliver(b[d+7:])
		}
		if cur := field(b, `"cursor":"`); cur != nil {
			s.cursor = string(cur)
		}
	case "subscribed":
		if cur := field(b, `"cursor":"`); cur != nil && s.cursor == "" {
			s.cursor = string(cur)
		}
		if !*up {
			*up = true
			s.subscribed(ready, first)
		}
	case "reset":
		s.reset()
		if cur := field(b, `"cursor":"`); cur != nil {
			s.cursor = string(cur)
		}
	case "presence":
		s.presence(b)
	case "close":
		if n, ok := number(b, `"retry":`); ok {
			s.told.Store(n)
		}
	}
}

// tell takes the delay a close reason gives, "restart; retry in N ms".
func (s *subscriber) tell(reason []byte) {
	if n, ok := number(reason, "retry in "); ok {
		s.told.Store(n)
	}
}

// runPoll long-polls the multiplexed stream's URL, each poll from the
// cursor the last one reached, until a poll fails.
func (s *subscriber) runPoll(ctx context.Context, ready chan<- struct{}, first bool) error {
	up := false
	defer func() {
		if up {
			s.l.live.Add(-1)
		}
	}()
	for {
		q := "channels=" + loadChannel + "&poll"
		if s.cursor != "" {
			q += "&cursor." + loadChannel + "=" + url.QueryEscape(s.cursor)
		}
		if s.user != "" {
			q += "&u=" + s.user
		}
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/live/?"+q, nil)
		if err != nil {
			return err
		}
		resp, err := s.l.polls.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("poll: %s", resp.Status)
		}
		var frames []json.RawMessage
		if err := json.Unmarshal(body, &frames); err != nil {
			return err
		}
		for _, b := range frames {
			s.wsMessage(b, ready, first, &up)
		}
		if !up && s.cursor != "" { // a poll that resumed has no acknowledgement
			up = true
			s.subscribed(ready, first)
		}
		if s.told.Load() > 0 {
			return io.EOF // a drain's close frame: come back after the delay
		}
	}
}

// channels are the channels the subscriber follows: the load channel, or
// in the many-channel scenario its own, and the shared one with
// -channels own+shared.
func (s *subscriber) channels() []string {
	switch {
	case s.own == "":
		return []string{loadChannel}
	case s.l.shared:
		return []string{s.own, sharedChannel}
	}
	return []string{s.own}
}

// subscribeFrames are the frames that subscribe a WebSocket of live's to
// the subscriber's channels, the first from its cursor.
func (s *subscriber) subscribeFrames() []string {
	var frames []string
	for k, ch := range s.channels() {
		sub := `{"type":"subscribe","channel":"` + ch + `"`
		if k == 0 && s.cursor != "" {
			sub += `,"cursor":"` + s.cursor + `"`
		}
		frames = append(frames, sub+"}")
	}
	return frames
}

// query names the subscriber's user, with -presence.
func (s *subscriber) query() string {
	if s.user == "" {
		return ""
	}
	return "?u=" + s.user
}

// presence counts a presence frame and keeps its count.
func (s *subscriber) presence(b []byte) {
	s.presFrames.Add(1)
	s.presBytes.Add(int64(len(b)))
	if n, ok := number(b, `"count":`); ok {
		s.presCount.Store(n)
	}
}

// field returns the string after key in b, up to the next quote.
func field(b []byte, key string) []byte {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil
	}
	b = b[i+len(key):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return nil
	}
	return b[:j]
}

// reset takes a reset: whatever comes next is taken as it comes.
func (s *subscriber) reset() {
	s.resets.Add(1)
	for i := range s.next {
		s.next[i].Store(-1)
	}
}

// deliver takes one publication, {"t":<unix ns>,"i":<index>,…}.
func (s *subscriber) deliver(data []byte) {
	now := time.Now().UnixNano()
	t, ok1 := number(data, `"t":`)
	i, ok2 := number(data, `"i":`)
	if !ok1 || !ok2 {
		return
	}
	s.received.Add(1)
	s.l.received.Add(1)
	s.l.hist.record(time.Duration(now - t))
	if s.l.paced && !s.moved {
		s.l.stay.record(time.Duration(now - t))
	}
	if n, ok := number(data, `"n":`); ok && int(n) != s.node {
		s.l.cross.record(time.Duration(now - t))
	}
	step := int64(len(s.next))
	next := &s.next[i%step]
	switch want := next.Load(); {
	case want < 0 || i == want:
	case i > want:
		s.lost.Add((i - want) / step)
	default:
		s.dups.Add(1)
		return
	}
	next.Store(i + step)
}

func number(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	var n int64
	digits := 0
	for _, c := range b[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits > 0
}

// histogram records latencies in buckets of about 1.5% width from 1 µs
// to about 100 s, lock-free.
type histogram struct {
	counts [64 * 27]atomic.Int64
	max    atomic.Int64
}

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	// 64 buckets per doubling.
	b := 0
	for us >= 2 {
		us /= 2
		b += 64
	}
	b += int((us - 1) * 64)
	return min(b, 64*27-1)
}

func bucketValue(b int) time.Duration {
	us := float64(uint64(1) << (b / 64))
	us *= 1 + float64(b%64)/64
	return time.Duration(us * float64(time.Microsecond))
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(d)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (h *histogram) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.max.Store(0)
}

// quantile returns the latency below which q of the records fall.
func (h *histogram) quantile(q float64) time.Duration {
	var total int64
	for i := range h.counts {
		total += h.counts[i].Load()
	}
	if total == 0 {
		return 0
	}
	want := int64(q * float64(total))
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen > want {
			return bucketValue(i + 1)
		}
	}
	return time.Duration(h.max.Load())
}

// loader owns the subscribers.
type loader struct {
	polls     *http.Client // keeps one connection per poller
	addrs     []string     // the nodes' data addresses; subscribers are spread over them
	sources   int          // nodes publishing at once, at most
	transport string
	presence  string // -presence
	own       bool   // -channels: each subscriber follows a channel of its own
	shared    bool   // -channels own+shared: and also the shared channel
	peer      string // the peer library under load, or "" for live
	wsLibrary bool   // -wsclient library
	verbose   bool
	http      *http.Client

	live     atomic.Int64 // subscribers connected now
	received atomic.Int64

	// The drain scenario (drain.go): subscribers reconnect as live.js
	// does, those of the node that leaves to the others, and their
	// arrivals are counted per 100 ms from moveStart.
	paced     bool
	gone      atomic.Int64 // the node that leaves, or -1
	moveStart atomic.Int64 // unix ns; 0 until the move starts
	arrivals  [6000]atomic.Int64
	stay      histogram // deliveries to subscribers not moved
	hist      histogram
	cross     histogram // deliveries a node other than the subscriber's published
	subs      []*subscriber
}
