package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// errBadUpdate marks a write whose update could not be merged.
var errBadUpdate = errors.New("bad update")

// StateOptions configures [Hub.State]. A nil *StateOptions means the
// defaults documented on each field.
type StateOptions struct {
	// Initial is the value at version 0. Default: {}.
	Initial any

	// Merge combines the value with an update in Apply and in PATCH
	// requests. Default MergePatch (RFC 7386).
	Merge Merge
}

// A State is a channel whose current value the Hub keeps, with a version:
// the position of the publication that made it. Writes publish the
// smallest delta that turns the old value into the new one, in React
// useDeltaSync's format, {"version":N,"changes":[…]}, so clients receive
// efficient updates without anyone writing a diff by hand. Serve the
// value with [State.ServeHTTP] ({"data":…,"version":N}, the initial fetch
// useDeltaSync expects); stream the channel as any other, where
// ?version=N resumes after version N.
//
// The value is the fold of the channel's stream: writes publish, and
// every Hub sharing the broker applies the deltas in broker order, so all
// of them agree. Clients cannot publish on a state channel directly. The
// broker carries each publication without its version, {"changes":[…]},
// since the version is the position the broker assigns; the Hub adds it
// to every frame it sends (what livetest.Recorder records is the former).
//
// When a change cannot be expressed as dotted-path changes (the value
// changes type, or a key contains a dot), the publication is a reset,
// {"version":0,"reset":true,"data":…}: version 0 is never the successor of
// a client's version, so useDeltaSync refetches, and live clients
// may take data as the new value. Resets of a state channel (a cursor too
// old to replay, a slow client brought up to date) take the same in-band
// form, so EventSource.onmessage sees them too.
//
// A State is safe for concurrent use.
type State struct {
	hub   *Hub
	name  string
	merge Merge
	init  json.RawMessage
	kind  plainKind // the channel's, whose frames the State's wrap

	// held, when non-nil, holds publications fanned out while the value is
	// rebuilt from history. Guarded by the channel's lock (hubChannel.mu).
	held []*frame

	// losses counts the holes in the stream that history could not fill;
	// a rebuild that sees it move gives up its result. Guarded by the
	// channel's lock.
	losses int

	writeMu   sync.Mutex // serializes this process's writes, so each diffs against the value it replaces
	lastWrite Position   // this process's latest write; guarded by writeMu

	// keeper wakes the goroutine that rebuilds a stale value.
	keeper chan struct{}

	mu      sync.Mutex // guards value, version, applied and stale
	value   json.RawMessage
	version Position
	applied chan struct{} // closed and replaced whenever version moves
	// stale is set while the value is unknown: the stream lost
	// publications that history could not replace. Reads answer 503 and
	// writes are refused until a rebuild, or a publication of the whole
	// value, makes it known again.
	stale bool
}

// statePayload is what a State publishes; the Hub adds the version when
// it encodes the frame, since the broker assigns it.
type statePayload struct {
	Changes []Change        `json:"changes,omitempty"`
	Reset   bool            `json:"reset,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// stateResetPrefix starts every reset a State publishes, by construction
// (encode writes it): frames tell resets from deltas by it without
// decoding what may be a large value.
const stateResetPrefix = `{"reset":true`

// encode returns the payload as JSON: a reset as stateResetPrefix, then
// the value; deltas as {"changes":[…]}.
func (p statePayload) encode() ([]byte, error) {
	if p.Reset {
		data := p.Data
		if data == nil {
			data = json.RawMessage("null")
		}
		b := make([]byte, 0, len(stateResetPrefix)+len(data)+9)
		b = append(b, stateResetPrefix+`,"data":`...)
		b = append(b, data...)
		return append(b, '}'), nil
	}
	return json.Marshal(statePayload{Changes: p.Changes})
}

// State makes channel a state channel and returns it. It subscribes to the
// channel for the Hub's lifetime; create states before serving clients.
// If the channel already has publications, State rebuilds the value from
// history and fails if history no longer reaches back to the first. It
// panics if the channel name is invalid or already a State.
func (h *Hub) State(ctx context.Context, channel string, opts *StateOptions) (*State, error) {
	if err := ValidChannel(channel); err != nil {
		panic(err)
	}
	if reserved(channel) {
		panic(errReserved)
	}
	var o StateOptions
	if opts != nil {
		o = *opts
	}
	if o.Merge == nil {
		o.Merge = MergePatch
	}
	init := json.RawMessage(`{}`)
	if o.Initial != nil {
		b, err := json.Marshal(o.Initial)
		if err != nil {
			panic(fmt.Sprintf("live: State %q: initial value: %v", channel, err))
		}
		init = b
	}
	s := &State{hub: h, name: channel, merge: o.Merge, init: init, value: init, applied: make(chan struct{}), keeper: make(chan struct{}, 1)}

	h.mu.Lock()
	if h.states == nil {
		h.states = make(map[string]*State)
	}
	if h.states[channel] != nil {
		h.mu.Unlock()
		panic(fmt.Sprintf("live: channel %q is already a State", channel))
	}
	h.states[channel] = s
	h.mu.Unlock()

	hc, err := h.acquire(ctx, channel)
	if err != nil {
		h.mu.Lock()
		delete(h.states, channel)
		h.mu.Unlock()
		return nil, fmt.Errorf("live: state %q: %w", channel, err)
	}
	s.kind = hc.plain()
	hc.mu.Lock()
	hc.setKind(s)
	hc.mu.Unlock()

	// Rebuild what was published before this process came.
	if err := s.rebuild(ctx, hc); err != nil {
		hc.mu.Lock()
		hc.setKind(hc.base())
		s.held = nil
		hc.mu.Unlock()
		h.mu.Lock()
		delete(h.states, channel)
		h.mu.Unlock()
		h.release(hc)
		return nil, fmt.Errorf("live: state %q: rebuilding: %w", channel, err)
	}
	h.group.Go(func() error {
		s.keep(hc)
		return nil
	})
	return s, nil
}

// rebuild makes the value again from what the broker keeps: its snapshot
// and the history after it, or else the whole history of the epoch.
// Deliveries are held meanwhile and applied after.
func (s *State) rebuild(ctx context.Context, hc *hubChannel) error {
	hc.mu.Lock()
	head, losses := hc.last, s.losses
	s.held = []*frame{}
	hc.mu.Unlock()

	base, at, msgs, err := s.load(ctx, head)

	hc.mu.Lock()
	defer hc.mu.Unlock()
	if s.losses != losses {
		// The stream lost more meanwhile; what was held is gone.
		return fmt.Errorf("publications lost during the rebuild: %w", ErrGone)
	}
	held := s.held
	s.held = nil
	if err == nil {
		s.mu.Lock()
		s.value, s.version, s.stale = base, at, false
		s.mu.Unlock()
		for _, m := range msgs {
			s.apply(m.Pos, m.Data)
		}
	}
	for _, f := range held {
		s.apply(f.pos, f.src)
	}
	return err
}

// load reads the value at or after head from the broker: the base value
// at position at, and the publications after it to apply.
func (s *State) load(ctx context.Context, head Position) (base json.RawMessage, at Position, msgs []Message, err error) {
	h := s.hub
	if head.Seq == 0 {
		return s.init, head, nil, nil
	}
	if snaps, ok := h.broker.(Snapshots); ok {
		pos, data, err := snaps.Snapshot(ctx, s.name)
		if err != nil && !errors.Is(err, ErrGone) {
			return nil, at, nil, err
		}
		if err == nil && pos.Epoch == head.Epoch {
			if pos.Seq >= head.Seq {
				return data, pos, nil, nil
			}
			msgs, err = h.history.Since(ctx, s.name, pos)
			if err == nil && contiguous(pos, msgs) {
				return data, pos, msgs, nil
			}
			if err != nil && !errors.Is(err, ErrGone) {
				return nil, at, nil, err
			}
		}
	}
	from := Position{Epoch: head.Epoch}
	msgs, err = h.history.Since(ctx, s.name, from)
	if err != nil {
		return nil, at, nil, err
	}
	if !contiguous(from, msgs) {
		return nil, at, nil, fmt.Errorf("history has a hole: %w", ErrGone)
	}
	return s.init, from, msgs, nil
}

// contiguous reports whether msgs follow from without a gap.
func contiguous(from Position, msgs []Message) bool {
	for _, m := range msgs {
		if m.Pos.Epoch != from.Epoch || m.Pos.Seq != from.Seq+1 {
			return false
		}
		from = m.Pos
	}
	return true
}

// keep runs for the hub's lifetime: it rebuilds the value when it is
// stale, trying again with backoff while the broker cannot.
func (s *State) keep(hc *hubChannel) {
	h := s.hub
	const minDelay, maxDelay = 100 * time.Millisecond, 5 * time.Second
	delay := minDelay
	for {
		select {
		case <-h.done:
			return
		case <-s.keeper:
		}
		s.mu.Lock()
		stale := s.stale
		s.mu.Unlock()
		if stale {
			err := s.rebuild(h.ctx, hc)
			if err != nil {
				if h.ctx.Err() != nil {
					return
				}
				h.opts.Logger.Warn("live: state value unknown; answering 503 until it is rebuilt", "channel", s.name, "err", err)
				if !h.backoff(h.ctx, delay) {
					return
				}
				delay = min(2*delay, maxDelay)
				s.wake()
				continue
			}
			delay = minDelay
			h.opts.Logger.Info("live: state value rebuilt", "channel", s.name)
			hc.mu.Lock()
			hc.pushAllLocked(s.snapshot())
			hc.mu.Unlock()
		}
	}
}

// wake asks the keeper to look at the State again.
func (s *State) wake() {
	select {
	case s.keeper <- struct{}{}:
	default:
	}
}

// save stores the value with the broker, for Hubs that rebuild it later.
// A write saves after it is applied, before it returns: a Hub that starts
// or rebuilds later finds it, or a later one, whatever history keeps. A
// failed save fails nothing (the write is published), and the next
// write's saves the value then.
func (s *State) save(ctx context.Context) {
	snaps, ok := s.hub.broker.(Snapshots)
	if !ok {
		return
	}
	s.mu.Lock()
	value, version, stale := s.value, s.version, s.stale
	s.mu.Unlock()
	if stale || version.Seq == 0 {
		return
	}
	if err := snaps.SaveSnapshot(ctx, s.name, version, value); err != nil && ctx.Err() == nil {
		s.hub.opts.Logger.Warn("live: saving a state snapshot failed; the next write tries again", "channel", s.name, "err", err)
	}
}

// encodeStateData returns what clients see for a state publication: the
// payload with its version in front.
func encodeStateData(pos Position, payload []byte) []byte {
	version := pos.Seq
	if bytes.HasPrefix(payload, []byte(stateResetPrefix)) {
		version = 0
	}
	if len(payload) < 2 || payload[0] != '{' {
		return payload
	}
	out := make([]byte, 0, len(payload)+24)
	out = append(out, `{"version":`...)
	out = strconv.AppendUint(out, version, 10)
	if len(payload) > 2 {
		out = append(out, ',')
	}
	return append(out, payload[1:]...)
}

// apply folds one publication into the value. It runs under the hub
// channel's lock, in position order.
func (s *State) apply(pos Position, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos.Epoch != s.version.Epoch {
		// A new numbering: whatever came before is unknown.
		s.value, s.version = s.init, Position{Epoch: pos.Epoch, Seq: pos.Seq - 1}
	}
	if pos.Seq <= s.version.Seq {
		return
	}
	var p statePayload
	err := json.Unmarshal(payload, &p)
	switch {
	case err != nil:
	case p.Reset:
		s.value, s.stale = p.Data, false
	default:
		var next json.RawMessage
		next, err = ApplyDelta(s.value, s.version.Seq, Delta{Version: s.version.Seq + 1, Changes: p.Changes})
		if err == nil {
			s.value = next
		}
	}
	if err != nil {
		s.hub.opts.Logger.Error("live: state publication does not apply; value kept", "channel", s.name, "version", pos.Seq, "err", err)
	}
	s.version = pos
	close(s.applied)
	s.applied = make(chan struct{})
}

// resetTo is called when the channel lost publications it cannot replay:
// the value is unknown past this point, so it starts again from the
// initial value at cursor.
func (s *State) resetTo(cursor Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hub.opts.Logger.Warn("live: state lost publications; rebuilding its value", "channel", s.name, "cursor", cursor.String())
	s.value, s.version, s.stale = s.init, cursor, true
	close(s.applied)
	s.applied = make(chan struct{})
}

// snapshot returns a frame that brings a slow client up to the current
// value in one step: a reset publication carrying the value, which
// useDeltaSync answers by refetching and live.js by adopting the data.
func (s *State) snapshot() *frame {
	s.mu.Lock()
	value, pos, stale := s.value, s.version, s.stale
	s.mu.Unlock()
	if stale {
		return s.resetFrame(pos, resetGone, false)
	}
	payload, _ := statePayload{Reset: true, Data: value}.encode()
	return s.kind.frame(Message{Channel: s.name, Pos: pos, Data: encodeStateData(pos, payload)})
}

// Get returns the current value and its version. While the value is
// being rebuilt (the stream lost publications that history could not
// replace; see [Snapshots]) Get returns the initial value at the version
// where the loss was found, and HTTP reads answer 503 instead.
func (s *State) Get() (data json.RawMessage, version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value, s.version.Seq
}

// Set replaces the value with v and publishes the delta. It returns the
// new version, once this Hub has applied it. On a [Conditional] broker
// the delta is taken only if the channel is still at the version it was
// computed from; if another write, from any Hub, came first, Set waits
// for it (a second at most) and computes the delta again, so the value at
// the version returned is v. On other brokers the delta is computed
// against this Hub's value, which may lack another Hub's latest write.
func (s *State) Set(ctx context.Context, v any) (uint64, error) {
	w, err := s.write(ctx, false, 0, func(json.RawMessage) (json.RawMessage, error) { return json.Marshal(v) })
	return w.version, err
}

// SetIf is Set, refused with ErrConflict unless the value is at version.
// On a [Conditional] broker (every broker of this module and its broker
// modules) the broker checks the version as it takes the write, so of the
// writes conditional on one version, on every Hub sharing the broker, at
// most one succeeds, at version+1. On other brokers the version is
// checked against this Hub's value only, and writes through two Hubs may
// both succeed.
//
// A version this Hub has not applied yet, which a client may have read
// from another Hub, is waited for, a second at most. A refused write
// returns the value's version, once this Hub has applied the write that
// won (waited for as long), with the error.
func (s *State) SetIf(ctx context.Context, version uint64, v any) (uint64, error) {
	w, err := s.write(ctx, true, version, func(json.RawMessage) (json.RawMessage, error) { return json.Marshal(v) })
	return w.version, err
}

// Apply merges update into the value with the State's Merge and
// publishes the delta, onto the latest value as Set does.
func (s *State) Apply(ctx context.Context, update any) (uint64, error) {
	w, err := s.write(ctx, false, 0, s.merger(update))
	return w.version, err
}

// ApplyIf is Apply, refused with ErrConflict unless the value is at
// version, checked as SetIf checks it.
func (s *State) ApplyIf(ctx context.Context, version uint64, update any) (uint64, error) {
	w, err := s.write(ctx, true, version, s.merger(update))
	return w.version, err
}

func (s *State) merger(update any) func(json.RawMessage) (json.RawMessage, error) {
	return func(cur json.RawMessage) (json.RawMessage, error) {
		u, err := json.Marshal(update)
		if err != nil {
			return nil, err
		}
		return s.merge(cur, u)
	}
}

// raceCatchUp bounds how long a write waits for a version this Hub has not
// applied yet: this Hub's previous write, which its delta must follow; the
// version a conditional write expects, which a client may have read from
// another Hub; or the version of a write that won at the broker, which an
// unconditional write is made again on and a conditional one's conflict
// names, so that the client can retry on it.
const raceCatchUp = time.Second

// written is what a write made: its version, and the value at that
// version when the write knows it.
type written struct {
	version uint64
	// value is the value at version when nothing came between the value
	// the write changed and its publication, which the write then made
	// what it is; else nil.
	value json.RawMessage
}

// write computes the new value from the current one, publishes the delta
// and waits until the stream has brought it back.
//
// On a Conditional broker every write is published on condition that the
// channel is still at the version it read, as the delta is against the
// value at that version: a conditional write, expecting version want,
// whose condition fails is refused, returning the current version with
// its error; an unconditional one is made again on the value that came
// first, once this Hub has it. (Another Hub's write, or this Hub's own
// previous one, may not have reached this Hub's value yet.) On other
// brokers the checks are against this Hub's value only.
func (s *State) write(ctx context.Context, conditional bool, want uint64, next func(json.RawMessage) (json.RawMessage, error)) (written, error) {
	if conditional {
		// A client that read version want from another Hub may be ahead
		// of this one, which has the version on its way, if it exists.
		s.catchUp(ctx, want)
	}
	var fresh *Position // a new numbering the broker started, to publish in
	for {
		pos, base, value, raced, err := s.publishWrite(ctx, conditional, want, next, fresh)
		if raced {
			// A write took the position first and is on its way here.
			reached := s.catchUp(ctx, base.Seq+1)
			if !reached && fresh == nil && ctx.Err() == nil {
				// Or the broker forgot the channel (idle for longer than it
				// keeps channels) or lost it: nothing is on its way, and
				// the broker starts a new numbering, which the write may
				// be the first of, as without a Conditional broker.
				if head, err := s.hub.brokerHead(ctx, s.name); err == nil && head.Seq == 0 && head.Epoch != base.Epoch {
					fresh = &head
					continue
				}
			}
			_, version := s.Get()
			if conditional {
				return written{version: version}, err // answer the version that won
			}
			if err := ctx.Err(); err != nil {
				return written{version: version}, fmt.Errorf("live: state %q: %w", s.name, err)
			}
			if !reached {
				return written{version: version}, fmt.Errorf("live: state %q: the writes after version %d have not reached this hub within %v", s.name, base.Seq, raceCatchUp)
			}
			continue
		}
		if err != nil {
			return written{version: base.Seq}, err
		}
		w := written{version: pos.Seq}
		after := base
		if fresh != nil {
			after = *fresh
		}
		if pos == base || pos == (Position{Epoch: after.Epoch, Seq: after.Seq + 1}) {
			w.value = value
		}
		if pos == base {
			return w, nil
		}
		if err := s.wait(ctx, pos); err != nil {
			return w, err
		}
		s.save(ctx)
		return w, nil
	}
}

// publishWrite publishes the change next makes to the value at base, the
// version it read, and returns the publication's position (base itself
// if nothing changed) and the value it made. raced reports a write the
// broker refused because the channel had moved on past base, or past
// fresh, when it is not nil, the head of a new numbering to publish in.
func (s *State) publishWrite(ctx context.Context, conditional bool, want uint64, next func(json.RawMessage) (json.RawMessage, error), fresh *Position) (pos, base Position, value json.RawMessage, raced bool, err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	// This process's previous write may not have come back from the
	// broker yet: a delta against the value without it would be refused,
	// or wrong on a broker that is not Conditional.
	s.catchUpTo(ctx, s.lastWrite)
	s.mu.Lock()
	cur, base, stale := s.value, s.version, s.stale
	s.mu.Unlock()
	if stale {
		return base, base, nil, false, fmt.Errorf("live: state %q: %w", s.name, errStale)
	}
	if conditional && base.Seq != want {
		return base, base, nil, false, fmt.Errorf("live: state %q at version %d, not %d: %w", s.name, base.Seq, want, ErrConflict)
	}
	nv, err := next(cur)
	if err == nil {
		nv, err = compactValue(nv)
	}
	var changes []Change
	ok := false
	if err == nil {
		changes, ok, err = Diff(cur, nv)
	}
	if err != nil {
		return base, base, nil, false, fmt.Errorf("live: state %q: %w: %w", s.name, errBadUpdate, err)
	}
	if !ok && bytes.Equal(cur, nv) {
		return base, base, cur, false, nil // null over null, [1] over [1]: nothing to publish
	}
	if ok && len(changes) == 0 {
		if !isNull(cur) {
			return base, base, cur, false, nil // nothing changed: nothing to publish
		}
		// Diff reads a null value as {}, which a delta cannot tell
		// from it: {} over null is published whole.
		ok = false
	}
	p := statePayload{Changes: changes}
	if !ok || fresh != nil {
		// Whole, also as the first publication of a new numbering, where
		// every Hub starts again from the initial value, which a delta
		// from the value at base does not apply to.
		p = statePayload{Reset: true, Data: nv}
	}
	payload, err := p.encode()
	if err != nil {
		return base, base, nil, false, err
	}
	// Where the broker can, it checks that the channel is still at base
	// as it takes the publication.
	var head *Position
	switch {
	case fresh != nil:
		head = fresh
	case s.hub.cond != nil:
		head = &base
	}
	pos, err = s.hub.publishIf(ctx, s.name, head, payload)
	if err != nil {
		raced = head != nil && errors.Is(err, ErrConflict)
		if raced {
			err = fmt.Errorf("live: state %q: another write came after version %d: %w", s.name, base.Seq, err)
		}
		return base, base, nil, raced, err
	}
	s.lastWrite = pos
	return pos, base, nv, false, nil
}

// catchUp waits, for raceCatchUp at most, until the value's version is
// at least seq (or in another epoch), and reports whether it is.
func (s *State) catchUp(ctx context.Context, seq uint64) bool {
	s.mu.Lock()
	pos := Position{Epoch: s.version.Epoch, Seq: seq}
	s.mu.Unlock()
	return s.catchUpTo(ctx, pos)
}

// catchUpTo waits, for raceCatchUp at most, until the value includes the
// publication at pos, and reports whether it does.
func (s *State) catchUpTo(ctx context.Context, pos Position) bool {
	ctx, cancel := context.WithTimeout(ctx, raceCatchUp)
	defer cancel()
	return s.wait(ctx, pos) == nil
}

// errStale refuses a write to, or a read of, a State whose value is being
// rebuilt.
var errStale = errors.New("value unknown until it is rebuilt from the broker")

// wait blocks until the value includes the publication at pos.
func (s *State) wait(ctx context.Context, pos Position) error {
	for {
		s.mu.Lock()
		reached := s.version.Epoch != pos.Epoch || s.version.Seq >= pos.Seq
		applied := s.applied
		s.mu.Unlock()
		if reached {
			return nil
		}
		select {
		case <-applied:
		case <-ctx.Done():
			return fmt.Errorf("live: state %q: waiting for version %d: %w", s.name, pos.Seq, ctx.Err())
		case <-s.hub.done:
			return ErrClosed
		}
	}
}

func (s *State) frame(m Message) *frame {
	src := m.Data
	m.Data = encodeStateData(m.Pos, src)
	f := s.kind.frame(m)
	f.src = src
	return f
}

// fanned applies f to the value, or holds it while the value is rebuilt
// from history.
func (s *State) fanned(f *frame) {
	if s.held != nil {
		s.held = append(s.held, f)
		return
	}
	s.apply(f.pos, f.src)
}

func (s *State) lost(cursor Position) {
	s.held = nil
	s.losses++
	s.resetTo(cursor)
	s.wake()
}

// resetFrame is a publication, {"version":0,"reset":true,…}, so that
// useDeltaSync's EventSource.onmessage sees it: version 0 is never the successor
// of the client's version, and it refetches.
func (s *State) resetFrame(cursor Position, reason string, ws bool) *frame {
	data := []byte(`{"version":0,"reset":true,"reason":"` + reason + `"}`)
	f := s.kind.frame(Message{Channel: s.name, Pos: cursor, Data: data})
	f.data, f.reset = false, true
	return f
}

// replays is false: a State's resuming clients replay from the broker's
// history.
func (s *State) replays() bool { return false }

func (s *State) fold([]*frame) ([]*frame, Position, bool) {
	f := s.snapshot()
	return []*frame{f}, f.pos, true
}

// isNull reports whether a value is JSON null or absent.
func isNull(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) == 0 || string(v) == "null"
}
