package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
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
	// {...current, ...update}: the seed's default, for dashboards whose
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

// MergeList returns the seed's useLiveList merge, for channels whose value
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
// An update of another type is an error rather than, as in the seed,
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

// ErrVersionGap reports a Delta whose version does not follow the current
// one. Some deltas were missed, so the caller must refetch the whole value
// instead of applying it, as the seed's useDeltaSync does.
var ErrVersionGap = errors.New("live: delta version gap")

// Delta is the seed's useDeltaSync message, for large values of which each
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
// value at d.Version, applying the changes in order the way the seed's
// JavaScript does, with its failures reported as errors. If d.Version is
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

// maxDepth bounds how deeply arrays and objects nest in the values the
// merges read and write: they recurse, and a client must not choose how
// deep.
const maxDepth = 512

// Decoded JSON values are nil, bool, json.Number, string, []any and
// *object. Numbers keep their text, so that merging never rounds them.

// object is a JSON object that remembers the order of its members, so that
// merged values keep the order their publishers chose.
type object struct {
	keys []string
	vals map[string]any
}

func newObject(n int) *object {
	return &object{keys: make([]string, 0, n), vals: make(map[string]any, n)}
}

func (o *object) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *object) del(k string) {
	if _, ok := o.vals[k]; !ok {
		return
	}
	delete(o.vals, k)
	i := slices.Index(o.keys, k)
	o.keys = slices.Delete(o.keys, i, i+1)
}

func (o *object) clone() *object {
	c := newObject(len(o.keys))
	for _, k := range o.keys {
		c.set(k, o.vals[k])
	}
	return c
}

// decode checks that raw is valid JSON in UTF-8 nesting at most maxDepth
// levels, and decodes it. Its errors read after the name of what raw is.
func decode(raw []byte) (any, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("is not valid JSON: not UTF-8")
	}
	if depth(raw) > maxDepth {
		return nil, fmt.Errorf("nests deeper than %d levels", maxDepth)
	}
	if !json.Valid(raw) {
		var v json.RawMessage
		err := json.Unmarshal(raw, &v)
		if err == nil {
			err = errors.New("syntax error")
		}
		return nil, fmt.Errorf("is not valid JSON: %w", err)
	}
	p := parser{b: raw}
	v, err := p.value()
	if err != nil {
		return nil, fmt.Errorf("is not valid JSON: %w", err)
	}
	return v, nil
}

// decodeOptional is decode, except that empty raw stands for an absent
// value and decodes as null.
func decodeOptional(raw []byte) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	return decode(raw)
}

// depth returns how deeply arrays and objects nest in raw, without
// recursing. Run before validation, it counts the brackets of invalid JSON
// too, so that a deep input is reported as such.
func depth(raw []byte) int {
	d, maxd := 0, 0
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			d++
			maxd = max(maxd, d)
		case ']', '}':
			d--
		}
	}
	return maxd
}

// parser decodes JSON whose validity and depth were checked. It is several
// times faster than json.Decoder.Token, and keeps the order of members.
type parser struct {
	b []byte
	i int
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value() (any, error) {
	p.space()
	switch p.b[p.i] {
	case '{':
		p.i++
		o := newObject(0)
		p.space()
		if p.b[p.i] == '}' {
			p.i++
			return o, nil
		}
		for {
			p.space()
			k, err := p.string()
			if err != nil {
				return nil, err
			}
			p.space()
			p.i++ // ':'
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			o.set(k, v) // as in JSON.parse, a repeated key keeps its place and takes the last value
			p.space()
			p.i++ // ',' or '}'
			if p.b[p.i-1] == '}' {
				return o, nil
			}
		}
	case '[':
		p.i++
		a := []any{}
		p.space()
		if p.b[p.i] == ']' {
			p.i++
			return a, nil
		}
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			p.space()
			p.i++ // ',' or ']'
			if p.b[p.i-1] == ']' {
				return a, nil
			}
		}
	case '"':
		return p.string()
	case 't':
		p.i += len("true")
		return true, nil
	case 'f':
		p.i += len("false")
		return false, nil
	case 'n':
		p.i += len("null")
		return nil, nil
	}
	start := p.i
	for p.i < len(p.b) && strings.IndexByte("+-.0123456789Ee", p.b[p.i]) >= 0 {
		p.i++
	}
	return json.Number(p.b[start:p.i]), nil
}

func (p *parser) string() (string, error) {
	start := p.i
	escaped := false
	for p.i++; p.b[p.i] != '"'; p.i++ {
		if p.b[p.i] == '\\' {
			escaped = true
			p.i++
		}
	}
	p.i++
	q := p.b[start:p.i]
	if !escaped {
		return string(q[1 : len(q)-1]), nil
	}
	var s string
	err := json.Unmarshal(q, &s) // lone surrogates become U+FFFD, as everywhere in Go
	return s, err
}

// encodeResult encodes v compactly for strategy op, failing if it nests
// deeper than maxDepth.
func encodeResult(v any, op string) (json.RawMessage, error) {
	b, ok := appendValue(nil, v, 0)
	if !ok {
		return nil, fmt.Errorf("live: %s: result nests deeper than %d levels", op, maxDepth)
	}
	return b, nil
}

// encode encodes a value known to nest at most maxDepth levels.
func encode(v any) json.RawMessage {
	b, _ := appendValue(nil, v, 0)
	return b
}

// appendValue appends v to b as compact JSON; ok is false if v nests
// deeper than maxDepth-d levels.
func appendValue(b []byte, v any, d int) (_ []byte, ok bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case bool:
		return strconv.AppendBool(b, v), true
	case json.Number:
		return append(b, v...), true
	case string:
		return appendString(b, v), true
	case []any:
		if d++; d > maxDepth {
			return b, false
		}
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendValue(b, e, d); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case *object:
		if d++; d > maxDepth {
			return b, false
		}
		b = append(b, '{')
		for i, k := range v.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			if b, ok = appendValue(b, v.vals[k], d); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	}
	panic(fmt.Sprintf("live: internal error: JSON value of type %T", v))
}

// appendString appends s, valid UTF-8, as a JSON string. Unlike
// encoding/json it leaves <, > and & alone: the merged values are data,
// not HTML.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// typeName names a decoded value's JSON type for error messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
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
// every client: the seed's applier splits paths on dots and assigns with
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

// equal reports whether a and b are the same JSON value. Numbers must be
// spelt alike: Diff keeps 1.0 and 1 apart rather than guess how a client
// reads them.
func equal(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	case json.Number:
		b, ok := b.(json.Number)
		return ok && a == b
	case string:
		b, ok := b.(string)
		return ok && a == b
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case *object:
		b, ok := b.(*object)
		if !ok || len(a.keys) != len(b.keys) {
			return false
		}
		for _, k := range a.keys {
			bv, ok := b.vals[k]
			if !ok || !equal(a.vals[k], bv) {
				return false
			}
		}
		return true
	}
	return false
}
