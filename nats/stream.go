package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// subjectToken writes channel as one subject token: "." separates tokens,
// so it becomes "=2E", and "=" becomes "=3D" to keep the mapping one to
// one. The other characters of a valid channel are plain in subjects.
func subjectToken(channel string) string {
	if !strings.ContainsAny(channel, ".=") {
		return channel
	}
	var sb strings.Builder
	for i := 0; i < len(channel); i++ {
		switch c := channel[i]; c {
		case '.':
			sb.WriteString("=2E")
		case '=':
			sb.WriteString("=3D")
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// subject returns the subject that stores channel's publications.
func (b *Broker) subject(channel string) string { return b.prefix + ".c." + subjectToken(channel) }

// announcements returns the subject that the stream republishes channel's
// publications to.
func (b *Broker) announcements(channel string) string {
	return b.prefix + ".r." + subjectToken(channel)
}

// streamConfig is the stream New's options ask for.
func (b *Broker) streamConfig() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              b.prefix,
		Description:       "live: recent publications, one subject per channel",
		Subjects:          []string{b.prefix + ".c.>"},
		MaxMsgsPerSubject: int64(b.size),
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		RePublish:         &jetstream.RePublish{Source: b.prefix + ".c.>", Destination: b.prefix + ".r.>"},
		Duplicates:        b.keyWin,
	}
	if b.age > 0 {
		cfg.MaxAge = max(b.age, minChannelAge)
	}
	return cfg
}

// getStream returns the broker's stream, creating it if it does not exist.
// A stream that exists is used as it is, if it has the subjects and the
// republishing the broker needs, so operators may create it themselves
// (with replicas, say); only a duplicate window shorter than KeyWindow is
// lengthened (see widenKeyWindow).
func (b *Broker) getStream(ctx context.Context) (jetstream.Stream, error) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.streamTurn }()
	if b.stream != nil {
		return b.stream, nil
	}
	cfg := b.streamConfig()
	s, err := b.js.CreateStream(ctx, cfg)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		// It exists with another configuration, or another broker is
		// creating it (the server may then report overlapping subjects).
		if existing, err2 := b.js.Stream(ctx, cfg.Name); err2 == nil {
			s, err = existing, checkStream(existing.CachedInfo().Config, cfg)
			if err == nil {
				s = b.widenKeyWindow(ctx, s)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	b.stream = s
	return s, nil
}

// checkStream reports an existing stream that lacks what the broker needs.
func checkStream(have, want jetstream.StreamConfig) error {
	rp := have.RePublish
	if len(have.Subjects) != 1 || have.Subjects[0] != want.Subjects[0] || rp == nil ||
		rp.Source != want.RePublish.Source || rp.Destination != want.RePublish.Destination || rp.HeadersOnly {
		return fmt.Errorf("the existing stream has subjects %q and republish %+v; want %q and %+v",
			have.Subjects, rp, want.Subjects, *want.RePublish)
	}
	return nil
}

// widenKeyWindow lengthens the duplicate window of s, an existing stream,
// to KeyWindow if it is shorter (a stream made before keys were honoured
// has JetStream's default of 2 minutes), within its MaxAge, and returns
// the stream to use. A longer window is left alone, so brokers with
// different KeyWindows do not undo each other. If the update fails, the
// broker logs it and uses s: keys are then remembered for its window.
func (b *Broker) widenKeyWindow(ctx context.Context, s jetstream.Stream) jetstream.Stream {
	cfg := s.CachedInfo().Config
	want := b.keyWin
	if cfg.MaxAge > 0 {
		want = min(want, cfg.MaxAge)
	}
	if cfg.Duplicates >= want {
		return s
	}
	was := cfg.Duplicates
	cfg.Duplicates = want
	updated, err := b.js.UpdateStream(ctx, cfg)
	if err != nil {
		b.log.Warn("natsbroker: cannot lengthen the stream's duplicate window to KeyWindow; publication keys are remembered for the shorter window",
			"stream", cfg.Name, "duplicates", was, "keyWindow", want, "err", err)
		return s
	}
	b.log.Info("natsbroker: lengthened the stream's duplicate window to KeyWindow", "stream", cfg.Name, "from", was, "to", want)
	return updated
}

// forgetStream drops s (nil: any) if it is the cached stream, so that the next use
// looks it up or creates it again: the server lost it.
func (b *Broker) forgetStream(ctx context.Context, s jetstream.Stream) {
	select {
	case b.streamTurn <- struct{}{}:
	case <-ctx.Done():
		return // the caller fails on its context anyway
	}
	if s == nil || b.stream == s {
		b.stream = nil
	}
	<-b.streamTurn
}

// streamGone reports an error that means the stream does not exist.
func streamGone(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders)
}
