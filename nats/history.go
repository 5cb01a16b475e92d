package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go/jetstream"
)

// walkMax is the most publications Since reads one by one, following
// Live-Prev back from the head; beyond it, a consumer reads the
// channel's retained messages in batches.
const walkMax = 64

// Since implements [live.History]. It reads the channel's latest message
// and, for up to 64 publications, follows each message's Live-Prev back
// to the one before; for more, a short-lived consumer reads the channel's
// retained messages in batches. Either way it looks publications up by
// subject or sequence, never by scanning other channels.
func (b *Broker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	if err := b.checkHistory(ctx, channel); err != nil {
		return nil, err
	}
	msgs, err := b.since(ctx, channel, after)
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return msgs, nil
}

// tailAfter returns the channel's latest message and how many
// publications follow after; ErrGone when after is not a position of the
// channel's current numbering, or more than the channel keeps follow it.
func (b *Broker) tailAfter(ctx context.Context, channel string, after live.Position) (tail, uint64, error) {
	t, ok, err := b.last(ctx, channel)
	if err != nil {
		return tail{}, 0, err
	}
	if !ok || t.pos.Epoch != after.Epoch || after.Seq > t.pos.Seq {
		return tail{}, 0, live.ErrGone
	}
	n := t.pos.Seq - after.Seq
	if n > uint64(b.size) {
		return tail{}, 0, live.ErrGone // more than a channel keeps
	}
	return t, n, nil
}

func (b *Broker) since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	t, n, err := b.tailAfter(ctx, channel, after)
	if err != nil || n == 0 {
		return nil, err
	}
	var msgs []live.Message
	var first time.Time
	if n <= walkMax {
		msgs, first, err = b.walk(ctx, channel, t, int(n))
	} else {
		msgs, first, err = b.scan(ctx, channel, t, after.Seq+1)
	}
	if err != nil {
		return nil, err
	}
	if b.age > 0 && first.Before(time.Now().Add(-b.age)) {
		return nil, live.ErrGone // older than HistoryAge
	}
	return msgs, nil
}

// SincePage implements [live.PagedHistory]. Up to 64 publications from
// the head it reads as Since does. Further back it finds the stored
// message holding the page's first publication by a binary search over
// the stream's sequence numbers, each step one lookup of the channel's
// next message from a sequence number, then reads the channel's messages
// one at a time from there until the page is full: a page costs a few
// dozen lookups and its own publications, whatever lies before it.
func (b *Broker) SincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	if err := b.checkHistory(ctx, channel); err != nil {
		return nil, err
	}
	msgs, err := b.sincePage(ctx, channel, after, max(maxMessages, 1), maxBytes)
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return msgs, nil
}

func (b *Broker) sincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	t, n, err := b.tailAfter(ctx, channel, after)
	if err != nil || n == 0 {
		return nil, err
	}
	var page []live.Message
	size := 0
	// add appends msgs to the page while it has room, and reports
	// whether it is full.
	add := func(msgs []live.Message) bool {
		for _, m := range msgs {
			if len(page) > 0 && size+len(m.Data) > maxBytes {
				return true
			}
			page = append(page, m)
			size += len(m.Data)
			if len(page) >= maxMessages {
				return true
			}
		}
		return false
	}
	if n <= walkMax {
		msgs, first, err := b.walk(ctx, channel, t, int(n))
		if err != nil {
			return nil, err
		}
		if b.age > 0 && first.Before(time.Now().Add(-b.age)) {
			return nil, live.ErrGone
		}
		add(msgs)
		return page, nil
	}

	s, err := b.getStream(ctx)
	if err != nil {
		return nil, err
	}
	subject := b.subject(channel)
	// next returns the channel's first message at or after stream
	// sequence seq.
	next := func(seq uint64) (tail, error) {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return tail{}, live.ErrGone
		}
		if err != nil {
			return tail{}, err
		}
		return fromRaw(raw)
	}
	// Search for the first message holding publications after after:
	// next(hi) is always m, which does.
	lo, hi, m := uint64(1), t.sseq, t
	for lo < hi {
		mid := lo + (hi-lo)/2
		x, err := next(mid)
		if err != nil {
			return nil, err
		}
		if x.pos.Seq > after.Seq {
			hi, m = mid, x
		} else {
			lo = x.sseq + 1
		}
	}
	if m.pos.Epoch != t.pos.Epoch || m.first() > after.Seq+1 {
		return nil, live.ErrGone // dropped from the stream
	}
	if b.age > 0 && m.at.Before(time.Now().Add(-b.age)) {
		return nil, live.ErrGone // older than HistoryAge
	}
	for {
		msgs, err := m.messages(channel, after.Seq)
		if err != nil {
			return nil, err
		}
		if add(msgs) || m.pos.Seq >= t.pos.Seq {
			return page, nil
		}
		after = m.pos
		if m, err = next(m.sseq + 1); err != nil {
			if errors.Is(err, live.ErrGone) && len(page) > 0 {
				return page, nil // dropped meanwhile: the next page says so
			}
			return nil, err
		}
		if m.pos.Epoch != t.pos.Epoch || m.first() != after.Seq+1 {
			if len(page) > 0 {
				return page, nil
			}
			return nil, live.ErrGone
		}
	}
}

// walk returns the n publications up to t, reading messages back from t
// along Live-Prev, and the time of the message holding the first.
func (b *Broker) walk(ctx context.Context, channel string, t tail, n int) ([]live.Message, time.Time, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	after := t.pos.Seq - uint64(n)
	subject := b.subject(channel)
	var parts [][]live.Message // newest first
	for {
		msgs, err := t.messages(channel, after)
		if err != nil {
			return nil, time.Time{}, err
		}
		parts = append(parts, msgs)
		if t.first() <= after+1 {
			break
		}
		if t.prev == 0 {
			return nil, time.Time{}, live.ErrGone
		}
		raw, err := s.GetMsg(ctx, t.prev)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, time.Time{}, live.ErrGone // dropped from the stream
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		p, err := fromRaw(raw)
		if err != nil {
			return nil, time.Time{}, err
		}
		if raw.Subject != subject || p.pos.Epoch != t.pos.Epoch || p.pos.Seq+1 != t.first() {
			return nil, time.Time{}, live.ErrGone
		}
		t = p
	}
	all := make([]live.Message, 0, n)
	for i := len(parts) - 1; i >= 0; i-- {
		all = append(all, parts[i]...)
	}
	return all, t.at, nil
}

// scan returns the publications from Seq from up to t with a consumer
// that reads the channel's retained messages, and the time of the first.
func (b *Broker) scan(ctx context.Context, channel string, t tail, from uint64) ([]live.Message, time.Time, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     b.subject(channel),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute, // in case the deletion below fails
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.stall)
		s.DeleteConsumer(dctx, c.CachedInfo().Name)
		cancel()
	}()

	msgs := make([]live.Message, 0, t.pos.Seq-from+1)
	var first time.Time
	next := from
	for next <= t.pos.Seq {
		batch, err := c.FetchNoWait(256)
		if err != nil {
			return nil, time.Time{}, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, time.Time{}, err
			}
			if md.Sequence.Stream > t.sseq {
				continue // published after the head was read
			}
			p, err := parseStored(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				return nil, time.Time{}, err
			}
			if p.pos.Seq < next {
				continue // before from, or the marker
			}
			if p.first() > next || p.pos.Epoch != t.pos.Epoch {
				return nil, time.Time{}, live.ErrGone
			}
			if next == from {
				first = md.Timestamp
			}
			ms, err := p.messages(channel, next-1)
			if err != nil {
				return nil, time.Time{}, err
			}
			msgs = append(msgs, ms...)
			next = p.pos.Seq + 1
		}
		if err := batch.Error(); err != nil {
			return nil, time.Time{}, err
		}
		if got == 0 && next <= t.pos.Seq {
			return nil, time.Time{}, live.ErrGone // dropped while being read
		}
	}
	return msgs, first, nil
}

// checkHistory returns the error with which Since and SincePage refuse
// a call at once, or nil.
func (b *Broker) checkHistory(ctx context.Context, channel string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("live: history %q: %w", channel, err)
	}
	if b.isClosed() {
		return fmt.Errorf("live: history %q: %w", channel, live.ErrClosed)
	}
	if err := live.ValidChannel(channel); err != nil {
		return fmt.Errorf("live: history: %w", err)
	}
	return nil
}
