package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots live in a stream of their own, named Prefix + "_snap", one
// subject per channel ("live.s.<channel>") keeping one message: the
// latest value a State wrote, its position in the headers Live-Epoch and
// Live-Seq. It is created on the first snapshot and ages out with the
// publications' stream.

// errSnapshotRace ends a save that lost to other writers too often.
var errSnapshotRace = errors.New("another snapshot was stored meanwhile")

func (b *Broker) snapSubject(channel string) string { return b.prefix + ".s." + subjectToken(channel) }

func (b *Broker) snapConfig() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              b.prefix + "_snap",
		Description:       "live: the latest value of each State channel",
		Subjects:          []string{b.prefix + ".s.>"},
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
	}
	if b.age > 0 {
		cfg.MaxAge = max(b.age, minChannelAge)
	}
	return cfg
}

// snapStream returns the snapshot stream, creating it if it does not
// exist.
func (b *Broker) snapStream(ctx context.Context) (jetstream.Stream, error) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.streamTurn }()
	if b.snaps != nil {
		return b.snaps, nil
	}
	cfg := b.snapConfig()
	s, err := b.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	b.snaps = s
	return s, nil
}

// lastSnapshot returns the stored snapshot of channel and its stream
// sequence; ok is false when there is none.
func (b *Broker) lastSnapshot(ctx context.Context, channel string) (pos live.Position, data []byte, streamSeq uint64, ok bool, err error) {
	s, err := b.snapStream(ctx)
	if err != nil {
		return pos, nil, 0, false, err
	}
	raw, err := s.GetLastMsgForSubject(ctx, b.snapSubject(channel))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return pos, nil, 0, false, nil
	}
	if err != nil {
		if streamGone(err) {
			b.forgetSnapStream(ctx, s)
		}
		return pos, nil, 0, false, err
	}
	seq, err := strconv.ParseUint(raw.Header.Get(hdrSeq), 10, 64)
	if err != nil {
		return pos, nil, 0, false, fmt.Errorf("snapshot with a bad %s header: %w", hdrSeq, err)
	}
	return live.Position{Epoch: raw.Header.Get(hdrEpoch), Seq: seq}, raw.Data, raw.Sequence, true, nil
}

// forgetSnapStream drops s if it is the cached snapshot stream.
func (b *Broker) forgetSnapStream(ctx context.Context, s jetstream.Stream) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return
	}
	if b.snaps == s {
		b.snaps = nil
	}
	<-b.streamTurn
}

// SaveSnapshot implements [live.Snapshots]. It stores data unless the
// snapshot stored is later in pos's epoch, with the subject's expected
// last sequence, so that of two writers the later position wins.
func (b *Broker) SaveSnapshot(ctx context.Context, channel string, pos live.Position, data []byte) error {
	if b.isClosed() {
		return fmt.Errorf("live: snapshot %q: %w", channel, live.ErrClosed)
	}
	for range maxAttempts {
		cur, _, streamSeq, ok, err := b.lastSnapshot(ctx, channel)
		if err != nil {
			return fmt.Errorf("live: snapshot %q at %v: %w", channel, pos, err)
		}
		if ok && cur.Epoch == pos.Epoch && cur.Seq >= pos.Seq {
			return nil
		}
		m := nats.NewMsg(b.snapSubject(channel))
		m.Header.Set(hdrEpoch, pos.Epoch)
		m.Header.Set(hdrSeq, strconv.FormatUint(pos.Seq, 10))
		m.Data = data
		_, err = b.publish(ctx, m, streamSeq)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // another writer's snapshot came first: compare again
		}
		if err != nil {
			return fmt.Errorf("live: snapshot %q at %v: %w", channel, pos, err)
		}
		return nil
	}
	return fmt.Errorf("live: snapshot %q at %v: %w", channel, pos, errSnapshotRace)
}

// Snapshot implements [live.Snapshots].
func (b *Broker) Snapshot(ctx context.Context, channel string) (live.Position, []byte, error) {
	if b.isClosed() {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, live.ErrClosed)
	}
	pos, data, _, ok, err := b.lastSnapshot(ctx, channel)
	if err != nil {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, err)
	}
	if !ok {
		return live.Position{}, nil, fmt.Errorf("live: snapshot %q: %w", channel, live.ErrGone)
	}
	return pos, data, nil
}
