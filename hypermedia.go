package live

// Text of the application's that one-channel SSE streams get beside the
// hub's own events (Options.ResetText and Options.PresenceText), for
// pages that consume the stream as it is: htmx, Turbo, Datastar.

// textEvent returns t as the bytes of one SSE event without an id, or nil
// when t is the zero Text or cannot be sent, which is logged as what.
func (h *Hub) textEvent(what, channel string, t Text) []byte {
	if t == (Text{}) {
		return nil
	}
	data, mark, err := encodeText(t)
	if err != nil {
		h.opts.Logger.Error("live: "+what+" not sent", "channel", channel, "err", err)
		return nil
	}
	var b []byte
	if mark.Event != "" {
		b = append(b, "event: "...)
		b = append(b, mark.Event...)
		b = append(b, '\n')
	}
	b, ok := appendTextLines(b, data)
	if !ok {
		return nil
	}
	return append(b, '\n')
}

// resetText returns the event that follows a reset on channel's
// one-channel SSE streams, nil for none.
func (h *Hub) resetText(channel string) []byte {
	if h.opts.ResetText == nil {
		return nil
	}
	return h.textEvent("Options.ResetText", channel, h.opts.ResetText(channel))
}

// presenceText returns the event that follows a presence event on
// channel's one-channel SSE streams, nil for none.
func (h *Hub) presenceText(channel string, members []Member, count int) []byte {
	if h.opts.PresenceText == nil {
		return nil
	}
	return h.textEvent("Options.PresenceText", channel, h.opts.PresenceText(channel, members, count))
}
