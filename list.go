package live

import (
	"encoding/json"
)

// listOp is one of the list operations React's useLiveList applies, as
// Hub.Hook publishes them.
type listOp struct {
	Type       string          `json:"type"`
	Item       json.RawMessage `json:"item,omitempty"`
	ID         json.RawMessage `json:"id,omitempty"`
	MutationID string          `json:"mutationId,omitempty"`
}

// listEntry is what the queued operations on one id amount to.
type listEntry struct {
	removed    bool            // a remove comes first
	op         string          // then "add" or "update", or "" for none
	item       json.RawMessage // the item of op, merged
	mutationID string
}

// coalesceList folds the queued operations of a list channel (all of fs,
// in order) into at most two per id: updates merge into the add or update
// before them, and a remove cancels everything before it. It reports false
// when some frame is not a list operation; the caller then resets instead.
//
// Only the last frame keeps a cursor: a client that disconnects in the
// middle resumes from before the coalesced run and replays it from history,
// which list operations tolerate (adds of a present id are ignored).
func coalesceList(k listKind, fs []*frame) ([]*frame, bool) {
	entries := make(map[string]*listEntry)
	var ids []string // in order of first appearance, which keeps adds' order
	for _, f := range fs {
		if !f.data || f.src == nil {
			return nil, false
		}
		var op listOp
		if err := json.Unmarshal(f.src, &op); err != nil {
			return nil, false
		}
		id := op.ID
		if op.Type != "remove" {
			var item map[string]json.RawMessage
			if json.Unmarshal(op.Item, &item) != nil || item[k.id] == nil {
				return nil, false
			}
			id = item[k.id]
		}
		if id == nil {
			return nil, false
		}
		key := string(id)
		e := entries[key]
		if e == nil {
			e = &listEntry{}
			entries[key] = e
			ids = append(ids, key)
		}
		if op.MutationID != "" {
			e.mutationID = op.MutationID
		}
		switch op.Type {
		case "remove":
			*e = listEntry{removed: true, mutationID: e.mutationID}
		case "add":
			if e.op == "" { // an add after an add or an update is ignored by clients
				e.op, e.item = "add", op.Item
			}
		case "update":
			switch {
			case e.op != "":
				merged, err := MergeShallow(e.item, op.Item)
				if err != nil {
					return nil, false
				}
				e.item = merged
			case !e.removed: // an update of a removed item does nothing
				e.op, e.item = "update", op.Item
			}
		default:
			return nil, false
		}
	}

	var datas [][]byte
	emit := func(op listOp) {
		data, _ := json.Marshal(op)
		datas = append(datas, data)
	}
	for _, key := range ids {
		e := entries[key]
		if e.removed {
			emit(listOp{Type: "remove", ID: json.RawMessage(key), MutationID: e.mutationID})
		}
		if e.op != "" {
			emit(listOp{Type: e.op, Item: e.item, MutationID: e.mutationID})
		}
	}
	// Only the last frame carries a cursor: that of the last operation
	// folded in. When everything cancelled out nothing is sent, and the
	// client's cursor stays where it was, which is safe.
	out := make([]*frame, len(datas))
	for i, data := range datas {
		m := Message{Channel: k.name(), Data: data}
		if i == len(datas)-1 {
			m.Pos = fs[len(fs)-1].pos
		}
		out[i] = k.frame(m) // which keeps data, so that a later overflow can coalesce it again
	}
	return out, true
}

// listKind is the kind of a list channel: publications are useLiveList's
// list operations, and a slow connection's queued ones coalesce (coalesceList).
type listKind struct {
	plainKind
	id string // the items' id field
}

func (k listKind) frame(m Message) *frame {
	f := k.plainKind.frame(m)
	f.src = m.Data
	return f
}

func (k listKind) fold(fs []*frame) ([]*frame, Position, bool) {
	out, ok := coalesceList(k, fs)
	return out, Position{}, ok
}
