package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The order-keeping JSON codec the merges, deltas and frames share: values
// decode to nil, bool, json.Number, string, []any and *object, and encode
// back compact, keys in their first order, numbers as they were spelt.

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
