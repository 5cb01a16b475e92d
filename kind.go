package live

// A kind is what a channel is: plain, a list (Options.ListIDField), or a State.
// It owns everything that sets such channels apart, so that the channel
// and the connections fan out and queue frames without knowing which kind
// they carry: how a publication is encoded, what fan-out does besides
// delivering it, how a reset looks, whether recent frames may serve
// resuming clients, and how a slow connection's queued publications fold
// into fewer.
type kind interface {
	// frame encodes a publication of the channel.
	frame(m Message) *frame

	// fanned is told of each publication fanned out, in order, under the
	// channel's lock.
	fanned(f *frame)

	// lost is told, under the channel's lock, that the channel lost
	// publications it cannot replay and continues after cursor.
	lost(cursor Position)

	// resetFrame tells a client that the channel continues after cursor
	// and that it must refetch what came before.
	resetFrame(cursor Position, reason string, ws bool) *frame

	// replays reports whether the channel's recent frames may be sent
	// again to resuming clients.
	replays() bool

	// fold replaces fs, a slow connection's queued publications of the
	// channel, oldest first, with fewer frames that bring the client to
	// the same place. It reports false when the kind cannot fold them.
	// Publications up to skip, when it has an epoch, are contained in the
	// folded frames, and the connection skips them if they come later.
	// It runs under the connection's lock.
	fold(fs []*frame) (out []*frame, skip Position, ok bool)
}

// plainKind is the kind of channels that are neither lists nor States. It
// reads what it needs from the channel, so that it is one pointer, which a
// kind holds without an allocation of its own.
type plainKind struct {
	hc *hubChannel
}

// name is the channel's name.
func (k plainKind) name() string { return k.hc.name }

// quoted is the channel's name as a JSON string.
func (k plainKind) quoted() []byte { return k.hc.quoted }

// key is Options.QueryKey for the channel, as JSON, or nil.
func (k plainKind) key() []byte {
	if c := k.hc.conf; c != nil {
		return c.key
	}
	return nil
}

// reset is Options.ResetText for the channel, as an SSE event, or nil.
func (k plainKind) reset() []byte {
	if c := k.hc.conf; c != nil {
		return c.reset
	}
	return nil
}

func (k plainKind) frame(m Message) *frame { return newDataFrame(k.quoted(), k.key(), m) }

func (plainKind) fanned(*frame) {}

func (plainKind) lost(Position) {}

func (k plainKind) resetFrame(cursor Position, reason string, ws bool) *frame {
	f := resetFrame(k.name(), cursor, reason, ws)
	if r := k.reset(); !ws && r != nil {
		// The application's words follow the hub's (Options.ResetText).
		f.sse = append(f.sse, r...)
	}
	return f
}

func (plainKind) replays() bool { return true }

func (plainKind) fold([]*frame) ([]*frame, Position, bool) { return nil, Position{}, false }

// A State's kind: publications carry their version, fan-out folds them
// into the value, resets are publications useDeltaSync understands,
// and a slow connection's queued publications give way to the current
// value.

// plain returns the channel's encoding as a plain channel.
func (hc *hubChannel) plain() plainKind {
	return plainKind{hc}
}

// base returns the channel's kind but for a State: a list or plain.
func (hc *hubChannel) base() kind {
	if c := hc.conf; c != nil && c.listID != "" {
		return listKind{plainKind: hc.plain(), id: c.listID}
	}
	return hc.plain()
}

func (hc *hubChannel) setKind(k kind) { hc.kind.Store(&k) }

// kindOf returns what the channel is now.
func (hc *hubChannel) kindOf() kind { return *hc.kind.Load() }
