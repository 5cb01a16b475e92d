package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-live/live"
)

// Position returns the broker position at which the relay delivered the
// publication seq on channel, as [Outbox.Publish] numbered it, waiting
// until it is delivered or ctx ends. Subscribing from it
// (live.Position.String() is the cursor a client resumes from) delivers
// exactly the publications after seq: with [Outbox.Head] read in the
// transaction that reads a page's data, the page follows on from exactly
// that data. For seq 0 (nothing yet published) it returns ok false: follow
// the channel from its start. It returns ok false too for a publication
// delivered without a position (too old for the broker to tell, or
// dropped), or deleted after RelayOptions.Retention.
func (o *Outbox) Position(ctx context.Context, channel string, seq uint64) (pos live.Position, ok bool, err error) {
	if seq == 0 {
		return live.Position{}, false, nil
	}
	wait := 5 * time.Millisecond
	for {
		var p sql.NullString
		var delivered bool
		err := o.db.QueryRowContext(ctx, o.q.posOf, channel, int64(seq)).Scan(&p, &delivered)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return live.Position{}, false, nil
		case err != nil:
			return live.Position{}, false, fmt.Errorf("outbox: position of %q %d: %w", channel, seq, err)
		}
		if delivered {
			pos, err := live.ParsePosition(p.String)
			if err != nil {
				return live.Position{}, false, nil
			}
			return pos, true, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return live.Position{}, false, ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}
