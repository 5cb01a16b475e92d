package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrVersionGap reports a Delta whose version does not follow the current
// one. Some deltas were missed, so the caller must refetch the whole value
// instead of applying it, as React's useDeltaSync does.
var ErrVersionGap = errors.New("live: delta version gap")

// Delta is React useDeltaSync's message, for large values of which each
// publication changes a small part: the changes that turn the value at
// Version-1 into the value at Version.
type Delta struct {
	Version uint64   `json:"version"`
	Changes []Change `json:"changes"`
}

// Change is one step of a Delta. Op is "add" or "update", which both set
// the member or element at Path to Value, or "remove", which deletes it.
// Path names members and array indices separated by dots ("items.3.title"),
// so keys that are empty or contain a dot cannot be reached.
type Change struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// ApplyDelta applies d to current, the value at version, and returns the
// value at d.Version, applying the changes in order the way useDeltaSync
// does, with its failures reported as errors. If d.Version is
// not version+1 it returns an error wrapping [ErrVersionGap].
//
// current must be an object; null or absent counts as {}. Every part of a
// path but the last must name an existing member or element. An index is
// a decimal number without sign or leading zeros; setting the index equal
// to the array's length appends, a larger one is an error. As JavaScript's
// delete leaves a hole that JSON.stringify writes as null, "remove" of an
// array element sets it to null (and does nothing beyond the end). If any
// change fails, ApplyDelta returns an error and no value.
func ApplyDelta(current json.RawMessage, version uint64, d Delta) (json.RawMessage, error) {
	if version == math.MaxUint64 || d.Version != version+1 {
		return nil, fmt.Errorf("%w: version %d cannot follow %d", ErrVersionGap, d.Version, version)
	}
	root, err := decodeRoot(current, "delta")
	if err != nil {
		return nil, err
	}
	for i, c := range d.Changes {
		if err := applyChange(root, c); err != nil {
			return nil, fmt.Errorf("live: delta: change %d: %w", i, err)
		}
	}
	return encodeResult(root, "delta")
}

// Diff returns the changes that turn old into new, for publishing a Delta
// instead of the whole value: ApplyDelta(old, v, Delta{v+1, changes})
// returns a value equal to new. The changes are few and small: a member
// that differs is set or recursed into, whichever is shorter; an array
// whose length changed is set whole, one of the same length is set whole
// or element by element. Diff never removes an array element (clients
// would see a null). The changes follow old's members in order, then
// new's added members; with no difference, changes is empty, not nil, so
// that it encodes as [].
//
// ok is false when a Delta cannot express the change: either value is not
// an object (a null or absent old counts as {}), or a top-level key that
// must be named is empty, contains a dot or is "__proto__" (which
// JavaScript would not assign as a member). Deeper such keys make Diff set
// their object whole. When ok is false, publish the whole value instead.
func Diff(old, new json.RawMessage) (changes []Change, ok bool, err error) {
	a, err := decodeOptional(old)
	if err != nil {
		return nil, false, fmt.Errorf("live: diff: old value %w", err)
	}
	b, err := decode(new)
	if err != nil {
		return nil, false, fmt.Errorf("live: diff: new value %w", err)
	}
	if a == nil {
		a = newObject(0)
	}
	ao, aok := a.(*object)
	bo, bok := b.(*object)
	if !aok || !bok {
		return nil, false, nil
	}
	changes, ok = diffObject("", ao, bo)
	if !ok {
		return nil, false, nil
	}
	if changes == nil {
		changes = []Change{}
	}
	return changes, true, nil
}

// applyChange applies one change of a Delta to root.
func applyChange(root *object, c Change) error {
	if c.Path == "" {
		return errors.New(`path "" is empty`)
	}
	var value any
	switch c.Op {
	case "add", "update":
		if len(c.Value) == 0 {
			return fmt.Errorf("%q must have a value", c.Op)
		}
		v, err := decode(c.Value)
		if err != nil {
			return fmt.Errorf("value %w", err)
		}
		value = v
	case "remove":
	default:
		return fmt.Errorf("unknown op %.40q", c.Op)
	}

	parts := strings.Split(c.Path, ".")
	var target any = root
	var parent any // the container holding target, once target is not root
	var parentKey string
	for i, p := range parts[:len(parts)-1] {
		next, err := child(target, p)
		if err != nil {
			return fmt.Errorf("path %.200q: %.200q %w", c.Path, strings.Join(parts[:i+1], "."), err)
		}
		parent, parentKey, target = target, p, next
	}

	last := parts[len(parts)-1]
	switch t := target.(type) {
	case *object:
		if c.Op == "remove" {
			t.del(last)
		} else {
			t.set(last, value)
		}
		return nil
	case []any:
		i, ok := arrayIndex(last)
		switch {
		case !ok:
			return fmt.Errorf("path %.200q: %.40q is not an array index", c.Path, last)
		case c.Op == "remove":
			if i < len(t) {
				t[i] = nil
			}
		case i < len(t):
			t[i] = value
		case i == len(t):
			setChild(parent, parentKey, append(t, value))
		default:
			return fmt.Errorf("path %.200q: index %d is beyond the end of an array of %d", c.Path, i, len(t))
		}
		return nil
	}
	return fmt.Errorf("path %.200q: %.200q is %s, not an object or array",
		c.Path, strings.Join(parts[:len(parts)-1], "."), typeName(target))
}

// child returns the member or element of container named by part.
func child(container any, part string) (any, error) {
	switch c := container.(type) {
	case *object:
		v, ok := c.vals[part]
		if !ok {
			return nil, errors.New("does not exist")
		}
		return v, nil
	case []any:
		i, ok := arrayIndex(part)
		if !ok || i >= len(c) {
			return nil, fmt.Errorf("does not exist in an array of %d", len(c))
		}
		return c[i], nil
	}
	return nil, fmt.Errorf("does not exist in %s", typeName(container))
}

// setChild replaces the member or element of container named by part,
// which exists.
func setChild(container any, part string, v any) {
	switch c := container.(type) {
	case *object:
		c.set(part, v)
	case []any:
		i, _ := arrayIndex(part)
		c[i] = v
	}
}

// arrayIndex parses a canonical array index: decimal digits without sign
// or leading zeros.
func arrayIndex(s string) (int, bool) {
	if s == "" || len(s) > 9 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// addressable reports whether a key can be a part of a Change's path in
// every client: useDeltaSync's applier splits paths on dots and assigns with
// target[key] = value, which for "__proto__" sets the prototype instead.
func addressable(key string) bool {
	return key != "" && !strings.Contains(key, ".") && key != "__proto__"
}

func joinPath(prefix, part string) string {
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}

// diffObject returns the changes that turn a into b, objects at path
// prefix; ok is false if a key that must be named is not addressable.
func diffObject(prefix string, a, b *object) (changes []Change, ok bool) {
	for _, k := range a.keys {
		av := a.vals[k]
		bv, inB := b.vals[k]
		if inB && equal(av, bv) {
			continue
		}
		if !addressable(k) {
			return nil, false
		}
		if !inB {
			changes = append(changes, Change{Op: "remove", Path: joinPath(prefix, k)})
			continue
		}
		changes = append(changes, diffValue(joinPath(prefix, k), av, bv)...)
	}
	for _, k := range b.keys {
		if _, inA := a.vals[k]; inA {
			continue
		}
		if !addressable(k) {
			return nil, false
		}
		changes = append(changes, Change{Op: "add", Path: joinPath(prefix, k), Value: encode(b.vals[k])})
	}
	return changes, true
}

// diffValue returns the changes that turn a into b, unequal values at a
// path that is not the root: those inside them if a and b are objects or
// arrays of one length and that is shorter, else one update of the whole.
func diffValue(path string, a, b any) []Change {
	var inner []Change
	ok := false
	switch a := a.(type) {
	case *object:
		if b, isObject := b.(*object); isObject {
			inner, ok = diffObject(path, a, b)
		}
	case []any:
		if b, isArray := b.([]any); isArray && len(a) == len(b) {
			for i := range a {
				if !equal(a[i], b[i]) {
					inner = append(inner, diffValue(joinPath(path, strconv.Itoa(i)), a[i], b[i])...)
				}
			}
			ok = true
		}
	}
	whole := Change{Op: "update", Path: path}
	if ok {
		n := 0
		for _, c := range inner {
			n += changeSize(c, len(c.Value))
		}
		// Compare sizes without encoding b when the inner changes are
		// already smaller.
		if n < changeSize(whole, encodedSize(b, n)) {
			return inner
		}
	}
	whole.Value = encode(b)
	return []Change{whole}
}

// changeSize approximates the length of c encoded as JSON, with a value of
// n bytes, and a separating comma.
func changeSize(c Change, n int) int {
	size := len(`{"op":"","path":""},`) + len(c.Op) + len(c.Path)
	if n > 0 {
		size += len(`,"value":`) + n
	}
	return size
}

// encodedSize approximates the length of v encoded as JSON, or returns a
// number above limit as soon as it exceeds limit.
func encodedSize(v any, limit int) int {
	n := 0
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case nil:
			n += 4
		case bool:
			n += 5
		case json.Number:
			n += len(v)
		case string:
			n += len(v) + 2
		case []any:
			n += 1 + len(v)
			for _, e := range v {
				if n > limit || !walk(e) {
					return false
				}
			}
		case *object:
			n += 1 + len(v.keys)
			for _, k := range v.keys {
				n += len(k) + 3
				if n > limit || !walk(v.vals[k]) {
					return false
				}
			}
		}
		return n <= limit
	}
	walk(v)
	return n
}
