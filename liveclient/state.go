package liveclient

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/go-live/live"
)

// State keeps a typed value in sync with a channel: it folds each message
// into the value with a merge strategy, and refetches it when the stream
// cannot be applied (a reset, or a gap in a delta channel's versions).
// Pass its Handle to Client.Follow. It is safe for concurrent use.
type State[T any] struct {
	merge   live.Merge // nil for a delta channel
	refetch func(ctx context.Context) (json.RawMessage, uint64, error)

	mu      sync.Mutex // guards raw and version
	raw     json.RawMessage
	version uint64
}

// NewState keeps a value that messages change through merge, such as
// live.MergeShallow (useLiveData's partial updates) or live.MergeList("id")
// (list operations). refetch loads the whole value; its version is
// ignored.
func NewState[T any](merge live.Merge, refetch func(ctx context.Context) (json.RawMessage, uint64, error)) *State[T] {
	return &State[T]{merge: merge, refetch: refetch}
}

// NewDeltaState keeps the value of a live.State channel, whose messages are
// versioned deltas; refetch loads {data, version}, as GET on the State does.
func NewDeltaState[T any](refetch func(ctx context.Context) (json.RawMessage, uint64, error)) *State[T] {
	return &State[T]{refetch: refetch}
}

// Refetch loads the value afresh.
func (s *State[T]) Refetch(ctx context.Context) error {
	data, version, err := s.refetch(ctx)
	if err != nil {
		return fmt.Errorf("liveclient: refetch: %w", err)
	}
	s.mu.Lock()
	s.raw, s.version = data, version
	s.mu.Unlock()
	return nil
}

// Get returns the current value.
func (s *State[T]) Get() (T, error) {
	s.mu.Lock()
	raw := s.raw
	s.mu.Unlock()
	var v T
	if raw == nil {
		return v, nil
	}
	err := json.Unmarshal(raw, &v)
	return v, err
}

// Handle folds m into the value, refetching when it cannot.
func (s *State[T]) Handle(ctx context.Context, m Message) error {
	if m.Reset {
		return s.Refetch(ctx)
	}
	s.mu.Lock()
	var err error
	refetch := false
	if s.merge != nil {
		var next json.RawMessage
		if next, err = s.merge(s.raw, m.Data); err == nil {
			s.raw = next
		}
	} else {
		var d struct {
			live.Delta
			Reset bool            `json:"reset"`
			Data  json.RawMessage `json:"data"`
		}
		err = json.Unmarshal(m.Data, &d)
		switch {
		case err != nil:
		case d.Reset && d.Data != nil:
			// The whole value, at the message's position.
			pos, perr := live.ParsePosition(m.Cursor)
			if perr != nil {
				refetch = true
				break
			}
			s.raw, s.version = d.Data, pos.Seq
		case d.Reset || d.Version != s.version+1:
			refetch = true // useDeltaSync's rule: not the next version, refetch
		default:
			var next json.RawMessage
			if next, err = live.ApplyDelta(s.raw, s.version, d.Delta); err == nil {
				s.raw, s.version = next, d.Version
			}
		}
	}
	s.mu.Unlock()
	if err != nil || refetch {
		return s.Refetch(ctx)
	}
	return nil
}
