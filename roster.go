package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live/internal/inspectlink"
)

// The roster: the hubs sharing a broker know each other through the
// control channel, so that Hub.Disconnect and Hub.Reauthorize can wait for
// every one of them. A hub says it is alive as soon as its subscription to
// the channel is ready, then every hubBeat, and says bye at Close; after
// applying control messages it tells the others up to which position of
// the channel it has applied them. A hub forgets another it has not heard
// from for hubExpire.
//
// A hub serves clients only while it can vouch for the control messages:
// its subscription is up and it has read one of its own beats back within
// hubFence. Requests wait for that (up to admitWait, then 503), and a hub
// that goes hubFence without it ends every client connection, since it can
// no longer apply revocations. It decides at each beat, so it stops within
// hubFence plus a beat, less than hubExpire: the others forget it only
// once it has stopped serving.

// hubBeat is how often a hub says it is alive. Tests shorten it.
var hubBeat = time.Second

func hubFence() time.Duration  { return 5 * hubBeat }
func hubExpire() time.Duration { return 7 * hubBeat }

// hubSettle is how long a hub follows the control channel before it
// knows every other hub: each beats within hubBeat.
func hubSettle() time.Duration { return hubBeat * 3 / 2 }

// admitWait bounds how long a request waits for a hub that cannot vouch
// for the control messages.
const admitWait = 5 * time.Second

// statusTryAgain is the WebSocket close status of connections a hub ends
// when it loses the control channel (1013, try again later).
const statusTryAgain = 1013

// errFenced ends the connections of a hub that lost the control channel.
var errFenced = errors.New("live: this server lost the control channel; reconnect")

// A peer is another hub sharing the broker.
type peer struct {
	seen  time.Time         // when it was last heard from
	info  *inspectlink.Node // what its last beat said of it, for inspectors
	acked Position          // it applied the control messages up to here
}

// A roster keeps the other hubs sharing the broker, and whether this hub
// may serve clients.
type roster struct {
	h    *Hub
	wake chan struct{} // room for one token: asks the beat loop for a beat now

	mu      sync.Mutex // guards the fields below
	peers   map[string]*peer
	seen    Position      // the last position this hub's subscription delivered
	applied Position      // the last position of others' control messages this hub applied
	since   time.Time     // when that subscription became ready; zero while it is down
	echoed  time.Time     // when this hub sent the last beat it read back
	delayed bool          // clients were told updates are delayed
	serving chan struct{} // closed while the hub serves clients
	changed chan struct{} // closed and replaced when a waiter should look again
}

func newRoster(h *Hub) *roster {
	ro := &roster{
		h:       h,
		wake:    make(chan struct{}, 1),
		peers:   make(map[string]*peer),
		serving: make(chan struct{}),
		changed: make(chan struct{}),
	}
	if h.ownBroker {
		// Nobody else shares the broker, or can take it away.
		close(ro.serving)
	}
	return ro
}

// run beats for the hub's lifetime: it says the hub is alive, forgets
// hubs not heard from, and ends every client connection while the hub
// cannot vouch for the control messages.
func (ro *roster) run() error {
	t := time.NewTicker(hubBeat)
	defer t.Stop()
	for {
		select {
		case <-ro.h.done:
			return nil
		case <-t.C:
		case <-ro.wake:
		}
		now := time.Now()
		ro.mu.Lock()
		ro.updateLocked(now)
		fenced := !ro.echoed.IsZero() && now.Sub(ro.echoed) >= hubFence()
		for id, p := range ro.peers {
			if now.Sub(p.seen) >= hubExpire() {
				delete(ro.peers, id)
				ro.changedLocked()
			}
		}
		applied := ro.applied
		ro.mu.Unlock()
		if fenced {
			ro.fence()
		}
		// The beat repeats the last acknowledgement: one a hub missed
		// (it was sent before that hub subscribed) cannot keep it
		// waiting.
		m := controlMsg{Op: "alive", At: now.UnixNano()}
		if applied != (Position{}) {
			m.Pos = applied.String()
		}
		m.Info, m.Ask = ro.h.beatInfo(now)
		ro.send(ro.h.ctx, m)
	}
}

// fence ends every connection of the hub, which cannot apply revocations.
// Clients reconnect, and wait until it can again, or go to another node.
func (ro *roster) fence() {
	h := ro.h
	var conns []*conn
	h.mu.Lock()
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	if len(conns) == 0 {
		return
	}
	h.opts.Logger.Warn("live: the control channel is out of reach; ending every connection", "conns", len(conns))
	until := time.Now().Add(closeWait)
	for _, c := range conns {
		c.mu.Lock()
		w := c.wire
		c.mu.Unlock()
		if w == wireWS || w == wireSSEMux {
			c.closeWith(statusTryAgain, "reconnect", until)
		}
		c.kill(errFenced)
	}
}

// send publishes m on the control channel, for at most a beat.
func (ro *roster) send(ctx context.Context, m controlMsg) {
	m.From = ro.h.id
	data, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(ctx, hubBeat)
	defer cancel()
	ctx, _ = withMeta(ctx, controlChannel) // the mark of a hub's own message
	if _, err := ro.h.broker.Publish(ctx, controlChannel, data); err != nil && ro.h.ctx.Err() == nil {
		ro.h.stats.brokerErrors.Add(1)
	}
}

// bye tells the others this hub is gone, once its connections are.
func (ro *roster) bye(ctx context.Context) {
	if !ro.h.ownBroker {
		ro.send(context.WithoutCancel(ctx), controlMsg{Op: "bye"})
	}
}

// ready records a new subscription to the control channel, whose head is
// head, and beats at once.
func (ro *roster) ready(head Position) {
	ro.mu.Lock()
	ro.since = time.Now()
	ro.seen = head
	ro.changedLocked()
	back := ro.delayed
	ro.delayed = false
	ro.mu.Unlock()
	if back {
		ro.h.tellDelayed(false)
	}
	select {
	case ro.wake <- struct{}{}:
	default:
	}
}

// broke records that the subscription to the control channel ended: new
// requests wait until it is back.
func (ro *roster) broke() {
	ro.mu.Lock()
	ro.since = time.Time{}
	ro.updateLocked(time.Now())
	tell := !ro.delayed && ro.h.ctx.Err() == nil
	ro.delayed = true
	ro.mu.Unlock()
	if tell {
		ro.h.tellDelayed(true)
	}
}

// tellDelayed tells every client of the hub that updates are delayed (its
// link to the broker broke) or flow again: a "status" frame, or a
// "status" event on a one-channel SSE stream, which EventSource.onmessage
// never sees.
func (h *Hub) tellDelayed(delayed bool) {
	status := "live"
	if delayed {
		status = "delayed"
	}
	f := control{Type: "status", Status: status}.encode(true)
	body, _ := json.Marshal(struct {
		Status string `json:"status"`
	}{status})
	f.sse = append(append([]byte("event: status\ndata: "), body...), "\n\n"...)
	for _, c := range h.connections() {
		c.push(f)
	}
}

// delivered records what the subscription delivered at pos, and takes in
// the hubs' own messages: beats, goodbyes and acknowledgements. It
// reports whether m was one of those.
func (ro *roster) delivered(m controlMsg, pos Position) bool {
	now := time.Now()
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if pos.Epoch != ro.seen.Epoch || pos.Seq > ro.seen.Seq {
		ro.seen = pos
	}
	ro.changedLocked()
	switch m.Op {
	case "alive", "applied":
		if m.From == ro.h.id {
			if at := time.Unix(0, m.At); m.Op == "alive" && at.After(ro.echoed) {
				ro.echoed = at
				ro.updateLocked(now)
			}
			return true
		}
		ro.ackLocked(m, now)
		return true
	case "bye":
		delete(ro.peers, m.From)
		return true
	}
	return false
}

// ackLocked takes in a beat or an acknowledgement from another hub.
func (ro *roster) ackLocked(m controlMsg, now time.Time) {
	if m.From == "" {
		return
	}
	p := ro.peers[m.From]
	if p == nil {
		p = &peer{}
		ro.peers[m.From] = p
	}
	p.seen = now
	if m.Info != nil {
		p.info = m.Info
	}
	if m.Ask != nil {
		ro.h.asked(m.Ask.Users)
	}
	if m.Pos == "" { // a beat with nothing applied yet
		return
	}
	if pos, err := ParsePosition(m.Pos); err == nil && (pos.Epoch != p.acked.Epoch || pos.Seq > p.acked.Seq) {
		p.acked = pos
	}
}

// noteApplied records that this hub applied the control messages up to
// pos, which its beats repeat.
func (ro *roster) noteApplied(pos Position) {
	ro.mu.Lock()
	ro.applied = pos
	ro.mu.Unlock()
}

// acked takes in an acknowledgement read from history.
func (ro *roster) acked(m controlMsg) {
	if m.Op != "applied" && m.Op != "alive" || m.From == ro.h.id {
		return
	}
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if ro.peers[m.From] != nil {
		ro.ackLocked(m, time.Now())
		ro.changedLocked()
	}
}

// updateLocked opens or closes the door to new requests.
func (ro *roster) updateLocked(now time.Time) {
	if ro.h.ownBroker {
		return
	}
	serve := !ro.since.IsZero() && !ro.echoed.IsZero() && now.Sub(ro.echoed) < hubFence()
	select {
	case <-ro.serving:
		if !serve {
			ro.serving = make(chan struct{})
		}
	default:
		if serve {
			close(ro.serving)
		}
	}
}

func (ro *roster) changedLocked() {
	close(ro.changed)
	ro.changed = make(chan struct{})
}

// serves reports whether the hub may serve clients now.
func (ro *roster) serves() bool {
	ro.mu.Lock()
	serving := ro.serving
	ro.mu.Unlock()
	select {
	case <-serving:
		return true
	default:
		return false
	}
}

// admit waits until the hub may serve r, or answers 503.
func (ro *roster) admit(w http.ResponseWriter, r *http.Request) bool {
	ro.mu.Lock()
	serving := ro.serving
	ro.mu.Unlock()
	select {
	case <-serving:
		return true
	default:
	}
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case <-serving:
		return true
	case <-r.Context().Done():
		return false
	case <-ro.h.done:
		writeError(w, http.StatusServiceUnavailable, "closed", "the live hub is shutting down")
	case <-t.C:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the live hub cannot reach the other nodes yet; try again")
	}
	return false
}

// await waits until every hub sharing the broker has applied the control
// messages up to pos, or ctx ends. A hub that says bye, or that others
// forget, is not waited for; one that joins meanwhile is, and answers
// for pos as soon as it has read the channel past it.
func (ro *roster) await(ctx context.Context, pos Position) error {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		now := time.Now()
		ro.mu.Lock()
		changed := ro.changed
		read := ro.seen.Epoch == pos.Epoch && ro.seen.Seq >= pos.Seq
		settled := !ro.since.IsZero() && now.Sub(ro.since) >= hubSettle()
		var missing []string
		for id, p := range ro.peers {
			if p.acked.Epoch != pos.Epoch || p.acked.Seq < pos.Seq {
				missing = append(missing, id)
			}
		}
		wait := hubSettle() - now.Sub(ro.since)
		ro.mu.Unlock()
		if read && settled && len(missing) == 0 {
			return nil
		}
		var timer <-chan time.Time
		if read && !settled && wait > 0 {
			if t == nil {
				t = time.NewTimer(wait)
			} else {
				t.Reset(wait)
			}
			timer = t.C
		}
		select {
		case <-changed:
		case <-timer:
		case <-ctx.Done():
			switch {
			case !read:
				return fmt.Errorf("this hub did not read its message back from the broker: %w", ctx.Err())
			case len(missing) > 0:
				slices.Sort(missing)
				return fmt.Errorf("not confirmed by hub %s: %w", strings.Join(missing, ", hub "), ctx.Err())
			default:
				return fmt.Errorf("this hub has not heard from every other hub yet (it started or reconnected less than %v ago): %w", hubSettle(), ctx.Err())
			}
		}
	}
}

// hubID names a new hub: its host, its process and a random part, so that
// an error naming a hub that did not answer says where to look.
func hubID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), randomEpoch())
}
