package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// A Merge combines a channel's current JSON value with one update and
// returns the new value, so that a server can hold the state its clients
// build from the stream of updates (and hand it to a client that joins
// late). current is nil when the channel has no value yet. A Merge does not
// modify its arguments and returns compact JSON.
//
// The Merges of this package never panic. They return an error for a
// current value or an update that is not valid JSON in UTF-8, that nests
// arrays and objects more than 512 levels deep, or that does not have the
// shape the strategy needs; a client applying the same update would fail
// too, so the caller should refuse the publication.
type Merge func(current, update json.RawMessage) (json.RawMessage, error)

var (
	// MergeReplace makes each update the new value, for channels whose
	// publications are whole snapshots.
	MergeReplace Merge = mergeReplace

	// MergeShallow lays the update's members over the current value's,
	// {...current, ...update}: React useLiveData's default, for dashboards whose
	// publications carry only the fields that changed. Both must be JSON
	// objects; a null or absent current value counts as {}. Nested objects
	// are replaced, not merged, and a null member is kept as null.
	MergeShallow Merge = mergeShallow

	// MergePatch applies the update as an RFC 7386 JSON Merge Patch, for
	// publications that change nested fields or delete fields: objects
	// merge recursively, a null member deletes, and an update that is not
	// an object replaces the value.
	MergePatch Merge = mergePatch
)

// MergeList returns React useLiveList's merge, for channels whose value
// is an array of items, each an object identified by its idField member
// ("id" if idField is empty). Updates are objects of three types:
//
//	{"type":"add","item":{…}}     prepends item, unless an item with its id is present
//	{"type":"update","item":{…}}  lays item's members over every item with its id
//	{"type":"remove","id":…}      drops every item with that id
//
// The remove update names the id in "id" whatever idField is. Ids are
// strings, numbers, booleans or null and compare as JavaScript's ===
// does: the string "1" differs from the number 1, and 1 equals 1.0. Items
// that are not objects or lack the id member never match. A null or absent
// current value counts as [].
//
// An update of another type is an error rather than, as in useLiveList,
// ignored: a misspelt type should fail where it is published, not vanish
// silently in every client.
func MergeList(idField string) Merge {
	if idField == "" {
		idField = "id"
	}
	return func(current, update json.RawMessage) (json.RawMessage, error) {
		return mergeList(idField, current, update)
	}
}

func mergeReplace(current, update json.RawMessage) (json.RawMessage, error) {
	if _, err := decodeOptional(current); err != nil {
		return nil, fmt.Errorf("live: replace merge: current value %w", err)
	}
	v, err := decode(update)
	if err != nil {
		return nil, fmt.Errorf("live: replace merge: update %w", err)
	}
	return encode(v), nil
}

// decodeRoot decodes a current value that must be an object, null or
// absent, for strategy op.
func decodeRoot(current json.RawMessage, op string) (*object, error) {
	v, err := decodeOptional(current)
	if err != nil {
		return nil, fmt.Errorf("live: %s: current value %w", op, err)
	}
	switch v := v.(type) {
	case nil:
		return newObject(0), nil
	case *object:
		return v, nil
	}
	return nil, fmt.Errorf("live: %s: current value must be an object, not %s", op, typeName(v))
}

func mergeShallow(current, update json.RawMessage) (json.RawMessage, error) {
	cur, err := decodeRoot(current, "shallow merge")
	if err != nil {
		return nil, err
	}
	u, err := decode(update)
	if err != nil {
		return nil, fmt.Errorf("live: shallow merge: update %w", err)
	}
	upd, ok := u.(*object)
	if !ok {
		return nil, fmt.Errorf("live: shallow merge: update must be an object, not %s", typeName(u))
	}
	for _, k := range upd.keys {
		cur.set(k, upd.vals[k])
	}
	return encodeResult(cur, "shallow merge")
}

func mergePatch(current, update json.RawMessage) (json.RawMessage, error) {
	cur, err := decodeOptional(current)
	if err != nil {
		return nil, fmt.Errorf("live: merge patch: current value %w", err)
	}
	patch, err := decode(update)
	if err != nil {
		return nil, fmt.Errorf("live: merge patch: update %w", err)
	}
	return encodeResult(applyPatch(cur, patch), "merge patch")
}

// applyPatch is MergePatch(Target, Patch) of RFC 7386, section 2. It
// recurses as deep as patch nests.
func applyPatch(target, patch any) any {
	p, ok := patch.(*object)
	if !ok {
		return patch
	}
	t, ok := target.(*object)
	if !ok {
		t = newObject(len(p.keys))
	}
	for _, k := range p.keys {
		v := p.vals[k]
		if v == nil {
			t.del(k)
			continue
		}
		t.set(k, applyPatch(t.vals[k], v))
	}
	return t
}

func mergeList(idField string, current, update json.RawMessage) (json.RawMessage, error) {
	c, err := decodeOptional(current)
	if err != nil {
		return nil, fmt.Errorf("live: list merge: current value %w", err)
	}
	var items []any
	switch c := c.(type) {
	case nil:
		items = []any{}
	case []any:
		items = c
	default:
		return nil, fmt.Errorf("live: list merge: current value must be an array, not %s", typeName(c))
	}
	u, err := decode(update)
	if err != nil {
		return nil, fmt.Errorf("live: list merge: update %w", err)
	}
	upd, ok := u.(*object)
	if !ok {
		return nil, fmt.Errorf("live: list merge: update must be an object, not %s", typeName(u))
	}
	typ, ok := upd.vals["type"].(string)
	if !ok {
		return nil, errors.New(`live: list merge: update must have a string "type"`)
	}

	var item *object
	var id any
	switch typ {
	case "add", "update":
		if item, ok = upd.vals["item"].(*object); !ok {
			return nil, fmt.Errorf("live: list merge: an update of type %q must have an object \"item\"", typ)
		}
		if id, ok = item.vals[idField]; !ok {
			return nil, fmt.Errorf("live: list merge: item must have the id member %q", idField)
		}
	case "remove":
		if id, ok = upd.vals["id"]; !ok {
			return nil, errors.New(`live: list merge: an update of type "remove" must have an "id"`)
		}
	default:
		return nil, fmt.Errorf("live: list merge: unknown update type %.40q", typ)
	}
	switch id.(type) {
	case []any, *object:
		return nil, fmt.Errorf("live: list merge: id must be a string, number, boolean or null, not %s", typeName(id))
	}
	matches := func(it any) bool {
		o, ok := it.(*object)
		if !ok {
			return false
		}
		v, ok := o.vals[idField]
		return ok && sameID(v, id)
	}

	switch typ {
	case "add":
		if !slices.ContainsFunc(items, matches) {
			items = slices.Insert(items, 0, any(item))
		}
	case "update":
		for i, it := range items {
			if matches(it) {
				merged := it.(*object).clone()
				for _, k := range item.keys {
					merged.set(k, item.vals[k])
				}
				items[i] = merged
			}
		}
	case "remove":
		items = slices.DeleteFunc(items, matches)
	}
	return encodeResult(items, "list merge")
}

// sameID reports whether a === b in JavaScript, for scalar b.
func sameID(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case json.Number:
		bn, ok := b.(json.Number)
		return ok && number(a) == number(bn)
	}
	return false // objects and arrays are never === to a fresh value
}

// number returns n as JavaScript reads it. Out of range numbers become
// ±Inf or 0, as there.
func number(n json.Number) float64 {
	f, _ := strconv.ParseFloat(string(n), 64)
	return f
}
