package redisbroker

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/paging"
	"github.com/redis/go-redis/v9"
)

// parseHeads returns the n heads a call of headScript returned: each
// channel's latest position, with its epoch made if the channel is new,
// so that the first publication is in the epoch returned.
func parseHeads(cmd *redis.Cmd, n int) ([]live.Position, error) {
	res, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != 2*n {
		return nil, fmt.Errorf("unexpected reply of %d values from Redis for %d heads", len(res), n)
	}
	heads := make([]live.Position, n)
	for i := range heads {
		epoch, _ := res[2*i].(string)
		seq, err := parseSeq(res[2*i+1])
		if err != nil || epoch == "" {
			return nil, fmt.Errorf("unexpected reply %v from Redis", res[2*i:2*i+2])
		}
		heads[i] = live.Position{Epoch: epoch, Seq: seq}
	}
	return heads, nil
}

// Since implements [live.History]. It reads the channel's head and an
// XRANGE from the stream entry id "<after.Seq+1>-0" in one MULTI/EXEC, so
// it finds its starting point without scanning.
func (b *Broker) Since(ctx context.Context, channel string, after live.Position) ([]live.Message, error) {
	if err := b.checkHistory(ctx, channel); err != nil {
		return nil, err
	}
	msgs, err := b.since(ctx, channel, after, 0)
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return msgs, nil
}

// SincePage implements [live.PagedHistory]. It reads in XRANGEs with COUNT sized
// from the publications read so far (4 at first), so that it reads about
// maxBytes, not the whole range, however large the publications.
func (b *Broker) SincePage(ctx context.Context, channel string, after live.Position, maxMessages, maxBytes int) ([]live.Message, error) {
	if err := b.checkHistory(ctx, channel); err != nil {
		return nil, err
	}
	page, err := paging.Read(ctx, after, maxMessages, maxBytes, func(ctx context.Context, from live.Position, count int) ([]live.Message, error) {
		return b.since(ctx, channel, from, count)
	})
	if err != nil {
		return nil, fmt.Errorf("live: history %q from %v: %w", channel, after, err)
	}
	return page, nil
}

// since returns up to count (0: all) publications after after, or an error
// that is live.ErrGone if they are not all in the stream. It reads the head
// and the stream in one MULTI/EXEC, so they agree; a Lua script would copy
// every entry once more.
func (b *Broker) since(ctx context.Context, channel string, after live.Position, count int) ([]live.Message, error) {
	keys := b.keys(channel)
	var (
		head    *redis.SliceCmd
		now     *redis.TimeCmd
		entries *redis.XMessageSliceCmd
	)
	_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		head = p.HMGet(ctx, keys[0], "epoch", "seq")
		now = p.Time(ctx)
		if after.Seq < math.MaxUint64 { // else it is beyond any head
			first := strconv.FormatUint(after.Seq+1, 10) + "-0"
			if count > 0 {
				entries = p.XRangeN(ctx, keys[1], first, "+", int64(count))
			} else {
				entries = p.XRange(ctx, keys[1], first, "+")
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	h := head.Val()
	if len(h) != 2 || h[0] == nil {
		return nil, live.ErrGone // no record of the channel
	}
	epoch, _ := h[0].(string)
	last, err := parseSeq(h[1])
	if err != nil {
		return nil, fmt.Errorf("unexpected head %v in Redis", h)
	}
	if epoch != after.Epoch || after.Seq > last {
		return nil, live.ErrGone
	}
	if after.Seq == last {
		return nil, nil
	}
	xs := entries.Val()
	if len(xs) == 0 {
		return nil, live.ErrGone
	}
	msgs := make([]live.Message, 0, len(xs))
	for i, x := range xs {
		seq, data, meta, at, err := parseEntry(x)
		if err != nil {
			return nil, err
		}
		if seq != after.Seq+1+uint64(i) {
			return nil, live.ErrGone // trimmed, or a hole
		}
		if i == 0 && b.age > 0 && at < now.Val().UnixMilli()-b.age.Milliseconds() {
			return nil, live.ErrGone // older than HistoryAge, not trimmed yet
		}
		msgs = append(msgs, live.Message{Channel: channel, Pos: live.Position{Epoch: epoch, Seq: seq}, Data: data, Meta: meta})
	}
	if count == 0 && msgs[len(msgs)-1].Pos.Seq != last {
		return nil, live.ErrGone
	}
	return msgs, nil
}

// parseSeq reads a Seq that Redis returns as a string or an integer.
func parseSeq(v any) (uint64, error) {
	switch v := v.(type) {
	case string:
		return strconv.ParseUint(v, 10, 64)
	case int64:
		if v >= 0 {
			return uint64(v), nil
		}
	}
	return 0, fmt.Errorf("bad sequence number %v", v)
}

// parseEntry reads a stream entry: id "<seq>-0", fields d (data), t
// (Redis time in ms) and, if it has meta, m. Its idempotency key, k, is
// the publish script's.
func parseEntry(x redis.XMessage) (seq uint64, data, meta []byte, at int64, err error) {
	seqPart, ok := strings.CutSuffix(x.ID, "-0")
	d, okData := x.Values["d"].(string)
	t, _ := x.Values["t"].(string)
	if ok {
		seq, err = strconv.ParseUint(seqPart, 10, 64)
	}
	if !ok || !okData || err != nil {
		return 0, nil, nil, 0, fmt.Errorf("unexpected stream entry %q in Redis", x.ID)
	}
	if m, _ := x.Values["m"].(string); m != "" {
		meta = []byte(m)
	}
	at, _ = strconv.ParseInt(t, 10, 64)
	return seq, []byte(d), meta, at, nil
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
	if err := b.checkName(channel); err != nil {
		return fmt.Errorf("live: history %q: %w", channel, err)
	}
	return nil
}
