// Package paging reads a page of a channel's history in chunks, for the
// brokers whose history is read by count (Redis's XRANGE … COUNT,
// PostgreSQL's LIMIT): each chunk is sized from the publications read so
// far, so that a page reads about its byte bound, not the whole range,
// however large the publications.
package paging

import (
	"context"
	"errors"

	"github.com/go-live/live"
)

// Read returns the first publications after after, at most maxMessages of
// them and at most maxBytes of Data in all, but at least one when there is
// one, as [live.PagedHistory]'s SincePage does. read returns up to count
// publications after from, fewer only at the head; its errors are
// returned as they are, but for live.ErrGone once the page has begun (the
// history was trimmed meanwhile: the next page says so).
func Read(ctx context.Context, after live.Position, maxMessages, maxBytes int, read func(ctx context.Context, from live.Position, count int) ([]live.Message, error)) ([]live.Message, error) {
	var page []live.Message
	size, count := 0, min(max(maxMessages, 1), 4)
	from := after
	for {
		msgs, err := read(ctx, from, count)
		if err != nil {
			if len(page) > 0 && errors.Is(err, live.ErrGone) {
				return page, nil
			}
			return nil, err
		}
		for _, m := range msgs {
			if len(page) > 0 && size+len(m.Data) > maxBytes {
				return page, nil
			}
			page = append(page, m)
			size += len(m.Data)
			if len(page) >= maxMessages {
				return page, nil
			}
		}
		if len(msgs) < count || size >= maxBytes {
			return page, nil // the head, or full
		}
		from = msgs[len(msgs)-1].Pos
		count = min(maxMessages-len(page), (maxBytes-size)/max(size/len(page), 1)+1)
	}
}
