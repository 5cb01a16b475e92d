package live

import (
	"encoding/json"
	"fmt"
)

// MergeShallow returns current with update's top-level members laid over
// it: the seed's default merge, {...current, ...update}. Both must be JSON
// objects; a null or absent current counts as {}.
func MergeShallow(current, update json.RawMessage) (json.RawMessage, error) {
	var cur, upd map[string]json.RawMessage
	if len(current) > 0 {
		if err := json.Unmarshal(current, &cur); err != nil {
			return nil, fmt.Errorf("live: merge: current value: %w", err)
		}
	}
	if err := json.Unmarshal(update, &upd); err != nil || upd == nil {
		return nil, fmt.Errorf("live: merge: update must be a JSON object")
	}
	if cur == nil {
		cur = make(map[string]json.RawMessage, len(upd))
	}
	for k, v := range upd {
		cur[k] = v
	}
	return json.Marshal(cur)
}
