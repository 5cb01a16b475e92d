package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxAttempts bounds how often a message is tried after losing the
// race for a position to other processes; Close bounds it too. A process
// publishing without pause on a channel can win many races in a row,
// because it starts each publication from the tail its last one left,
// while the loser must read the tail first.
const maxAttempts = 1000

// Publish implements [live.Broker]. It returns an error, never a false
// success, when JetStream does not acknowledge the publication. If ctx
// ends first, it returns ctx's error, and the publication may still be
// stored: publish it again under the same key ([live.WithPublishKey]) to
// be sure it is stored once.
//
// Under a key taken on the channel within [Options].KeyWindow it stores
// nothing and returns the position of the publication that took it. If
// the stream dropped that publication and the one after it meanwhile
// (HistorySize), the position is no longer known, and Publish returns an
// error matching [live.ErrGone], still storing nothing.
func (b *Broker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	return b.publishItem(ctx, channel, &pubItem{data: data})
}

// PublishIf implements [live.Conditional]. The publication goes in a
// message of its own, stored with Nats-Expected-Last-Subject-Sequence set
// to the stream sequence of the message that holds head, as every
// publication is: JetStream takes it only if no message of any process
// came after that one on the channel's subject.
func (b *Broker) PublishIf(ctx context.Context, channel string, head live.Position, data []byte) (live.Position, error) {
	return b.publishItem(ctx, channel, &pubItem{data: data, head: &head})
}

// publishItem queues it, a publication, on channel and waits for it.
func (b *Broker) publishItem(ctx context.Context, channel string, it *pubItem) (live.Position, error) {
	if err := ctx.Err(); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	if b.isClosed() {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, live.ErrClosed)
	}
	data, meta, err := live.CheckPublish(ctx, channel, it.data)
	if err != nil {
		return live.Position{}, err
	}
	it.data, it.meta, it.key = data, meta, live.PublishKey(ctx)
	pos, err := b.queue(ctx, channel, it)
	if err != nil && b.isClosed() && !errors.Is(err, live.ErrClosed) {
		err = fmt.Errorf("%w: %w", live.ErrClosed, err) // closed while waiting
	}
	if err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return pos, nil
}

// append stores datas, with meta if there is one only, as the channel's
// next message and returns the position of its last publication. No datas
// stores the marker that fixes a new channel's epoch (at Seq 0), unless
// the channel has a position already, which it then returns. With a head,
// it stores them only if the channel is at head, and otherwise returns an
// error matching live.ErrConflict. The caller is pc's sender.
//
// Several publications in one message carry the header Live-Count and
// their data framed as in pack.
//
// With a key, datas is one publication, stored with the header
// Nats-Msg-Id (see msgID): if the stream holds a message under that ID
// from within its duplicate window, JetStream stores nothing and answers
// with that message's stream sequence, and append returns the position of
// the publication there (see keyTaken). JetStream looks at the ID before
// the expected last sequence, so the key is honoured whatever the tail;
// with a head the channel is no longer at, append asks JetStream with an
// expected last sequence no message has, which stores nothing, so that a
// key taken answers with its position and a key not taken with a conflict.
func (b *Broker) append(ctx context.Context, pc *pubChan, datas [][]byte, meta []byte, head *live.Position, key string) (live.Position, error) {
	channel := pc.channel
	recreated := false
	for attempt := 1; ; attempt++ {
		probe := false // asking whether key is taken, storing nothing
		read := !pc.known
		if read {
			t, ok, err := b.last(ctx, channel)
			if err != nil {
				return live.Position{}, err
			}
			if !ok {
				// A new channel, or one whose messages are gone: a new
				// numbering.
				t = tail{pos: live.Position{Epoch: newEpoch()}}
			}
			if len(datas) == 0 && ok {
				return t.pos, nil // the channel has a position already
			}
			pc.tail, pc.known = t, true
		}
		if head != nil && pc.tail.pos != *head {
			if !read {
				// Another process may have published since this one
				// last did: read the tail.
				pc.known = false
				continue
			}
			if key == "" {
				return live.Position{}, fmt.Errorf("the channel is at %v, not %v: %w", pc.tail.pos, *head, live.ErrConflict)
			}
			probe = true
		}
		pos := live.Position{Epoch: pc.tail.pos.Epoch, Seq: pc.tail.pos.Seq + uint64(len(datas))}
		m := &nats.Msg{
			Subject: b.subject(channel),
			Header: nats.Header{
				hdrEpoch: {pos.Epoch},
				hdrSeq:   {strconv.FormatUint(pos.Seq, 10)},
				hdrPrev:  {strconv.FormatUint(pc.tail.sseq, 10)},
			},
		}
		switch len(datas) {
		case 0:
		case 1:
			m.Data = datas[0]
			if meta != nil {
				m.Header[hdrMeta] = []string{string(meta)}
			}
		default:
			m.Header[hdrCount] = []string{strconv.Itoa(len(datas))}
			m.Data = pack(datas)
		}
		expect := pc.tail.sseq
		if key != "" {
			m.Header[jetstream.MsgIDHeader] = []string{msgID(channel, key)}
			if probe {
				expect = noSequence
			}
		}
		ack, err := b.publish(ctx, m, expect)
		switch {
		case err == nil && ack.Duplicate && key != "":
			// Taken before, by this process or another: the tail is
			// unchanged.
			return b.keyTaken(ctx, channel, key, ack.Sequence)
		case err == nil && !probe:
			pc.tail = tail{pos: pos, sseq: ack.Sequence, prev: pc.tail.sseq, count: max(len(datas), 1)}
			return pos, nil
		case err == nil:
			pc.known = false // cannot be: nothing is at noSequence
			return live.Position{}, fmt.Errorf("stream sequence %d took a message expected after %d", ack.Sequence, expect)
		}
		pc.known = false
		var apiErr *jetstream.APIError
		switch {
		case probe && errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
			// The key is not taken, and the channel is not at head.
			return live.Position{}, fmt.Errorf("the channel is at %v, not %v: %w", pc.tail.pos, *head, live.ErrConflict)
		case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
			// Another publisher took the position: read the tail again.
			b.conflicts.Add(1)
			if attempt < maxAttempts {
				continue
			}
			return live.Position{}, fmt.Errorf("lost the race for a position %d times: %w", attempt, err)
		case streamGone(err) && !recreated:
			// The server lost the stream (a restart without its store,
			// or a deletion): make it again, in a new epoch.
			recreated = true
			b.forgetStream(ctx, nil)
			continue
		}
		return live.Position{}, err
	}
}

// noSequence is a stream sequence no message has: a publication expected
// after it is never stored.
const noSequence = math.MaxInt64

// msgID returns the Nats-Msg-Id of the publication under key on channel.
// JetStream deduplicates per stream, so it names the channel too; neither
// a channel nor a key holds a space.
func msgID(channel, key string) string { return channel + " " + key }

// keyTaken returns the position of the publication that took key on
// channel, held by the message at stream sequence seq, whose ID JetStream
// remembered. A keyed publication is stored alone, so it is the message's
// Live-Seq. If the stream no longer holds that message (dropped from
// history while its key was remembered), its position is read from the
// channel's next message, whose Live-Prev is seq; if that is gone too, the
// position is unknown, and keyTaken returns an error matching
// live.ErrGone, saying that the publication was taken.
func (b *Broker) keyTaken(ctx context.Context, channel, key string, seq uint64) (live.Position, error) {
	s, err := b.getStream(ctx)
	if err != nil {
		return live.Position{}, err
	}
	subject := b.subject(channel)
	raw, err := s.GetMsg(ctx, seq)
	if err == nil {
		if raw.Subject != subject || raw.Header.Get(jetstream.MsgIDHeader) != msgID(channel, key) {
			return live.Position{}, fmt.Errorf("key %q is taken by stream sequence %d, which holds another message", key, seq)
		}
		t, err := fromRaw(raw)
		if err != nil {
			return live.Position{}, err
		}
		return t.pos, nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return live.Position{}, err
	}
	raw, err = s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return live.Position{}, err
	}
	if err == nil {
		next, err := fromRaw(raw)
		if err != nil {
			return live.Position{}, err
		}
		if next.prev == seq {
			return live.Position{Epoch: next.pos.Epoch, Seq: next.first() - 1}, nil
		}
	}
	return live.Position{}, fmt.Errorf("taken under key %q at stream sequence %d, which the stream no longer holds, nor the message after it: position unknown: %w", key, seq, live.ErrGone)
}

// publish stores m if the subject's last message is at stream sequence
// expect. It fails as soon as the connection is found down, because the
// acknowledgement cannot arrive then.
func (b *Broker) publish(ctx context.Context, m *nats.Msg, expect uint64) (*jetstream.PubAck, error) {
	conn := b.connContext()
	if conn.Err() != nil {
		return nil, context.Cause(conn) // not sent
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(conn, func() { cancel(context.Cause(conn)) })
	defer stop()
	ack, err := b.js.PublishMsg(pctx, m,
		jetstream.WithExpectLastSequencePerSubject(expect),
		jetstream.WithRetryAttempts(0))
	if err != nil && ctx.Err() == nil && pctx.Err() != nil {
		return nil, fmt.Errorf("%w; the publication may have been stored", context.Cause(pctx))
	}
	return ack, err
}

// head returns the channel's latest position. A channel without messages
// gets a marker message at Seq 0 in a new epoch, so that its first
// publication is in the epoch returned.
func (b *Broker) head(ctx context.Context, channel string) (live.Position, error) {
	t, ok, err := b.last(ctx, channel)
	if err != nil || ok {
		return t.pos, err
	}
	return b.queue(ctx, channel, &pubItem{marker: true, fresh: true})
}
