package live_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// vector is one case of the shared files in testdata/merge; see the
// README there.
type vector struct {
	Name        string          `json:"name"`
	IDField     string          `json:"idField"`
	Version     uint64          `json:"version"`
	Current     json.RawMessage `json:"current"`
	CurrentText *string         `json:"currentText"`
	Update      json.RawMessage `json:"update"`
	UpdateText  *string         `json:"updateText"`
	Want        json.RawMessage `json:"want"`
	Error       string          `json:"error"`

	Old         json.RawMessage `json:"old"`
	OldText     *string         `json:"oldText"`
	New         json.RawMessage `json:"new"`
	NewText     *string         `json:"newText"`
	Changes     json.RawMessage `json:"changes"`
	Expressible bool            `json:"expressible"`
}

// input returns the raw input a case gives either as JSON or as text.
func input(raw json.RawMessage, text *string) json.RawMessage {
	if text != nil {
		return json.RawMessage(*text)
	}
	return raw
}

func readVectors(t *testing.T, file string) []vector {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "merge", file))
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(vs) == 0 {
		t.Fatalf("%s: no cases", file)
	}
	seen := map[string]bool{}
	for _, v := range vs {
		if v.Name == "" || seen[v.Name] {
			t.Errorf("%s: case name %q is empty or repeated", file, v.Name)
		}
		seen[v.Name] = true
	}
	return vs
}

// errorPhrases tells the kinds of error in the vectors apart by what their
// messages say; "gap" is checked with errors.Is.
var errorPhrases = map[string]string{
	"invalid": "is not valid JSON",
	"type":    "must",
	"op":      "unknown",
	"path":    `path "`,
	"depth":   "deeper than",
}

// checkError fails unless err is an error of the kind named.
func checkError(t *testing.T, kind string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a %q error", kind)
	}
	if kind == "gap" {
		if !errors.Is(err, live.ErrVersionGap) {
			t.Errorf("error %q does not wrap ErrVersionGap", err)
		}
		return
	}
	if errors.Is(err, live.ErrVersionGap) {
		t.Errorf("error %q wraps ErrVersionGap, want a %q error", err, kind)
	}
	phrase, ok := errorPhrases[kind]
	if !ok {
		t.Fatalf("unknown error kind %q in vector", kind)
	}
	if !strings.Contains(err.Error(), phrase) {
		t.Errorf("error %q is not a %q error (has no %q)", err, kind, phrase)
	}
	for other, p := range errorPhrases {
		if other != kind && strings.Contains(err.Error(), p) {
			t.Errorf("error %q, want a %q error, reads like a %q error", err, kind, other)
		}
	}
	if !strings.HasPrefix(err.Error(), "live: ") {
		t.Errorf("error %q lacks the live: prefix", err)
	}
}

// decodeJSON decodes b for comparison, with numbers as JavaScript reads
// them.
func decodeJSON(t testing.TB, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// checkJSON fails unless got is compact JSON equal to want.
func checkJSON(t *testing.T, want, got json.RawMessage) {
	t.Helper()
	checkCompact(t, got)
	if diff := cmp.Diff(decodeJSON(t, want), decodeJSON(t, got)); diff != "" {
		t.Errorf("result mismatch (-want +got):\n%s\ngot %s", diff, got)
	}
}

func checkCompact(t testing.TB, b []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("result %q is not valid JSON: %v", b, err)
	}
	if !bytes.Equal(buf.Bytes(), b) {
		t.Errorf("result %s is not compact", b)
	}
}

// runMergeVectors checks a Merge against a vector file.
func runMergeVectors(t *testing.T, file string, merge func(v vector) live.Merge) {
	for _, v := range readVectors(t, file) {
		t.Run(v.Name, func(t *testing.T) {
			current, update := input(v.Current, v.CurrentText), input(v.Update, v.UpdateText)
			keep := bytes.Clone(current)
			got, err := merge(v)(current, update)
			if !bytes.Equal(current, keep) {
				t.Errorf("merge modified current: %s, was %s", current, keep)
			}
			if v.Error != "" {
				checkError(t, v.Error, err)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			checkJSON(t, v.Want, got)
		})
	}
}

func TestMergeReplace(t *testing.T) {
	runMergeVectors(t, "replace.json", func(vector) live.Merge { return live.MergeReplace })
}

func TestMergeShallow(t *testing.T) {
	runMergeVectors(t, "shallow.json", func(vector) live.Merge { return live.MergeShallow })
}

func TestMergePatch(t *testing.T) {
	runMergeVectors(t, "patch.json", func(vector) live.Merge { return live.MergePatch })
}

func TestMergeList(t *testing.T) {
	runMergeVectors(t, "list.json", func(v vector) live.Merge { return live.MergeList(v.IDField) })
}

func TestApplyDelta(t *testing.T) {
	for _, v := range readVectors(t, "delta.json") {
		t.Run(v.Name, func(t *testing.T) {
			var d live.Delta
			if err := json.Unmarshal(v.Update, &d); err != nil {
				t.Fatalf("update is not a Delta: %v", err)
			}
			current := input(v.Current, v.CurrentText)
			keep := bytes.Clone(current)
			got, err := live.ApplyDelta(current, v.Version, d)
			if !bytes.Equal(current, keep) {
				t.Errorf("ApplyDelta modified current: %s, was %s", current, keep)
			}
			if v.Error != "" {
				checkError(t, v.Error, err)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			checkJSON(t, v.Want, got)
		})
	}
}

func TestApplyDeltaMaxVersion(t *testing.T) {
	_, err := live.ApplyDelta(nil, ^uint64(0), live.Delta{Version: 0})
	checkError(t, "gap", err)
}

func TestDiff(t *testing.T) {
	for _, v := range readVectors(t, "diff.json") {
		t.Run(v.Name, func(t *testing.T) {
			old, new := input(v.Old, v.OldText), input(v.New, v.NewText)
			changes, ok, err := live.Diff(old, new)
			if v.Error != "" {
				checkError(t, v.Error, err)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if ok != v.Expressible {
				t.Fatalf("Diff ok = %v, want %v (changes %+v)", ok, v.Expressible, changes)
			}
			if !ok {
				if changes != nil {
					t.Errorf("Diff returned changes %+v with ok = false", changes)
				}
				return
			}
			got, err := json.Marshal(changes)
			if err != nil {
				t.Fatal(err)
			}
			if v.Changes != nil {
				if diff := cmp.Diff(decodeJSON(t, v.Changes), decodeJSON(t, got)); diff != "" {
					t.Errorf("changes mismatch (-want +got):\n%s\ngot %s", diff, got)
				}
			}
			checkRoundTrip(t, old, new, changes)
		})
	}
}

// checkRoundTrip fails unless changes turn old into new, as a Delta sent
// over the wire, without removing an array element.
func checkRoundTrip(t testing.TB, old, new json.RawMessage, changes []live.Change) {
	t.Helper()
	wire, err := json.Marshal(live.Delta{Version: 8, Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	var d live.Delta
	if err := json.Unmarshal(wire, &d); err != nil {
		t.Fatal(err)
	}
	if d.Changes == nil {
		t.Fatalf("Delta encodes as %s: changes must be an array", wire)
	}
	for _, c := range changes {
		if c.Op == "remove" && removesElement(t, old, c.Path) {
			t.Errorf("Diff removes array element %q (clients would see null): %s", c.Path, wire)
		}
	}
	got, err := live.ApplyDelta(old, 7, d)
	if err != nil {
		t.Fatalf("ApplyDelta(%s, %s): %v", old, wire, err)
	}
	checkCompact(t, got)
	if diff := cmp.Diff(decodeExact(t, new), decodeExact(t, got)); diff != "" {
		t.Errorf("ApplyDelta(old, Diff(old, new)) != new (-want +got):\n%s\nold %s\nnew %s\ndelta %s\ngot %s", diff, old, new, wire, got)
	}
}

// decodeExact decodes b keeping numbers as spelt, since Diff must keep
// them so.
func decodeExact(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// removesElement reports whether path names an element of an array in
// old, where Diff's changes start.
func removesElement(t testing.TB, old json.RawMessage, path string) bool {
	var cur any = map[string]any{}
	if len(old) > 0 {
		cur = decodeExact(t, old)
	}
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return false
			}
			cur = c[i]
		default:
			return false
		}
	}
	_, isArray := cur.([]any)
	return isArray
}

// nested returns an array nesting n levels deep.
func nested(n int) json.RawMessage {
	return json.RawMessage(strings.Repeat("[", n) + strings.Repeat("]", n))
}

// nestedObject returns {"a":{"a":…{}}} nesting n levels deep.
func nestedObject(n int) json.RawMessage {
	return json.RawMessage(strings.Repeat(`{"a":`, n-1) + "{}" + strings.Repeat("}", n-1))
}

// TestMergeLimits checks the inputs no vector holds: deep nesting (which
// a naive recursive merge would follow), and text that is not UTF-8.
func TestMergeLimits(t *testing.T) {
	list := live.MergeList("")
	delta := func(current, update json.RawMessage) (json.RawMessage, error) {
		return live.ApplyDelta(current, 0, live.Delta{Version: 1, Changes: []live.Change{{Op: "add", Path: "a", Value: update}}})
	}
	diff := func(current, update json.RawMessage) (json.RawMessage, error) {
		_, _, err := live.Diff(current, update)
		return nil, err
	}
	tests := []struct {
		name            string
		merge           live.Merge
		current, update json.RawMessage
		want            string // an error kind, or "" for success
	}{
		{"replace at the limit", live.MergeReplace, nil, nested(512), ""},
		{"replace beyond the limit", live.MergeReplace, nil, nested(513), "depth"},
		{"replace 100000 deep", live.MergeReplace, nil, nested(100000), "depth"}, // beyond encoding/json's own limit
		{"replace current 10000 deep", live.MergeReplace, nested(10000), nil, "depth"},
		{"shallow update 10000 deep", live.MergeShallow, nil, nestedObject(10000), "depth"},
		{"shallow current 513 deep", live.MergeShallow, nestedObject(513), []byte(`{}`), "depth"},
		{"shallow at the limit", live.MergeShallow, nestedObject(512), nestedObject(512), ""},
		{"patch 10000 deep", live.MergePatch, nestedObject(10000), nestedObject(10000), "depth"},
		{"patch at the limit", live.MergePatch, nestedObject(512), nestedObject(512), ""},
		{"list 10000 deep", list, nil, []byte(`{"type":"add","item":{"id":1,"x":` + string(nested(10000)) + `}}`), "depth"},
		{"list item at the limit", list, nil, []byte(`{"type":"add","item":{"id":1,"x":` + string(nested(510)) + `}}`), ""},
		{"delta value 10000 deep", delta, nil, nested(10000), "depth"},
		{"delta result beyond the limit", delta, nil, nested(512), "depth"},
		{"delta result at the limit", delta, nil, nested(511), ""},
		{"diff 10000 deep", diff, nestedObject(10000), nestedObject(10000), "depth"},
		{"quoted brackets do not count", live.MergeReplace, nil, []byte(`"` + strings.Repeat("[", 10000) + `"`), ""},
		{"escaped quotes in strings", live.MergeReplace, nil, []byte(`["\"[[", "\\", [[]]]`), ""},
		{"update not UTF-8", live.MergeReplace, nil, []byte("\"\xff\""), "invalid"},
		{"current not UTF-8", live.MergeShallow, []byte("{\"\xc3\":1}"), []byte(`{}`), "invalid"},
		{"patch not UTF-8", live.MergePatch, nil, []byte("{\"a\":\"\xed\xa0\x80\"}"), "invalid"}, // an encoded surrogate
		{"list not UTF-8", list, nil, []byte("{\"type\":\"add\",\"item\":{\"id\":\"\xff\"}}"), "invalid"},
		{"delta value not UTF-8", delta, nil, []byte("\"\xff\""), "invalid"},
		{"diff not UTF-8", diff, []byte(`{}`), []byte("{\"\xff\":1}"), "invalid"},
		{"absent update", live.MergePatch, []byte(`{}`), nil, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.merge(tt.current, tt.update)
			if tt.want != "" {
				checkError(t, tt.want, err)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != nil {
				checkCompact(t, got)
			}
		})
	}
}

// TestMergeOutputEscapes checks that strings are re-encoded as valid JSON
// whatever they hold.
func TestMergeOutputEscapes(t *testing.T) {
	in := json.RawMessage(`{"s\n":"\u0000\u001f\"\\\/\b\f\n\r\t<>&\u2028 é \ud83d\ude00 \ud800"}`)
	got, err := live.MergePatch(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	checkCompact(t, got)
	if !utf8.Valid(got) {
		t.Errorf("result %q is not UTF-8", got)
	}
	// A lone surrogate escape decodes as U+FFFD in Go, as in every merge.
	want := decodeJSON(t, bytes.ReplaceAll(in, []byte(`\ud800`), []byte(`\ufffd`)))
	if diff := cmp.Diff(want, decodeJSON(t, got)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if want := `{"s\n":"\u0000\u001f\"\\/\u0008\u000c\n\r\t<>&` + "\u2028 é 😀 \ufffd" + `"}`; string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestMergeKeepsOrder checks that members keep their order, new ones
// last, as in JavaScript.
func TestMergeKeepsOrder(t *testing.T) {
	tests := []struct {
		name  string
		merge live.Merge
		current, update,
		want string
	}{
		{"shallow", live.MergeShallow, `{"z":1,"a":2,"m":3}`, `{"b":0,"a":9}`, `{"z":1,"a":9,"m":3,"b":0}`},
		{"patch", live.MergePatch, `{"z":1,"a":{"y":1,"x":2},"m":3}`, `{"a":{"w":0,"y":null},"z":null}`, `{"a":{"x":2,"w":0},"m":3}`},
		{"list", live.MergeList(""), `[{"id":1,"z":1,"a":2}]`, `{"type":"update","item":{"b":3,"id":1.0}}`, `[{"id":1.0,"z":1,"a":2,"b":3}]`},
		{"replace", live.MergeReplace, `null`, `{"z" : 1, "a" : [ 1 ,2 ] }`, `{"z":1,"a":[1,2]}`},
		{"numbers keep their spelling", live.MergePatch, `{"a":1.50}`, `{"b":1e400,"c":-0,"d":12345678901234567890123}`, `{"a":1.50,"b":1e400,"c":-0,"d":12345678901234567890123}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.merge(json.RawMessage(tt.current), json.RawMessage(tt.update))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestMergeListDoesNotAlias checks that items updated together do not
// share the objects they were given.
func TestMergeListDoesNotAlias(t *testing.T) {
	got, err := live.MergeList("")(json.RawMessage(`[{"id":1},{"id":1,"x":{"k":1}}]`), json.RawMessage(`{"type":"update","item":{"id":1,"y":[1]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"id":1,"y":[1]},{"id":1,"x":{"k":1},"y":[1]}]`; string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// randomJSON returns a random JSON value of at most depth levels, with
// keys drawn from a small set so that values overlap, including keys no
// path can name.
func randomJSON(r *rand.Rand, depth int) any {
	keys := []string{"a", "b", "c", "id", "0", "1", "x.y", "", "__proto__", "é"}
	n := r.IntN(10)
	if depth <= 0 && n >= 6 {
		n = r.IntN(6)
	}
	switch n {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return float64(r.IntN(5))
	case 3:
		return r.Float64() * 100
	case 4, 5:
		return keys[r.IntN(len(keys))]
	case 6, 7:
		a := make([]any, r.IntN(4))
		for i := range a {
			a[i] = randomJSON(r, depth-1)
		}
		return a
	}
	o := map[string]any{}
	for range r.IntN(5) {
		// Mostly addressable keys, so that most pairs are expressible.
		k := keys[r.IntN(len(keys))]
		if r.IntN(8) != 0 && !addressableKey(k) {
			k = "k"
		}
		o[k] = randomJSON(r, depth-1)
	}
	return o
}

func addressableKey(k string) bool { return k != "" && !strings.Contains(k, ".") && k != "__proto__" }

// mutate returns a copy of v with a few random edits, so that Diff sees
// pairs with something in common.
func mutate(r *rand.Rand, v any, depth int) any {
	if r.IntN(6) == 0 {
		return randomJSON(r, depth)
	}
	switch v := v.(type) {
	case map[string]any:
		o := make(map[string]any, len(v))
		for k, e := range v {
			switch r.IntN(6) {
			case 0: // drop
			case 1, 2:
				o[k] = mutate(r, e, depth-1)
			default:
				o[k] = e
			}
		}
		if r.IntN(3) == 0 {
			o[fmt.Sprint("n", r.IntN(3))] = randomJSON(r, depth-1)
		}
		return o
	case []any:
		a := make([]any, 0, len(v)+1)
		for _, e := range v {
			if r.IntN(3) == 0 {
				e = mutate(r, e, depth-1)
			}
			a = append(a, e)
		}
		switch r.IntN(5) {
		case 0:
			a = append(a, randomJSON(r, depth-1))
		case 1:
			if len(a) > 0 {
				a = a[1:]
			}
		}
		return a
	}
	return v
}

func mustMarshal(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDiffRoundTrip checks on random pairs of values that whenever Diff
// can express the change, its changes turn old into new.
func TestDiffRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	expressible := 0
	const n = 3000
	for i := range n {
		old := map[string]any{}
		if o, ok := randomJSON(r, 4).(map[string]any); ok {
			old = o
		}
		var new any = mutate(r, old, 4)
		if i%10 == 0 {
			new = randomJSON(r, 4)
		}
		oldJSON, newJSON := mustMarshal(t, old), mustMarshal(t, new)
		changes, ok, err := live.Diff(oldJSON, newJSON)
		if err != nil {
			t.Fatalf("Diff(%s, %s): %v", oldJSON, newJSON, err)
		}
		if !ok {
			continue
		}
		expressible++
		checkRoundTrip(t, oldJSON, newJSON, changes)
		if t.Failed() {
			t.Fatalf("case %d", i)
		}
	}
	if expressible < n/2 {
		t.Errorf("only %d of %d random pairs were expressible", expressible, n)
	}
}

// TestMergePatchProperties checks on random values that applying a merge
// patch twice changes nothing more than applying it once.
func TestMergePatchProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		target := mustMarshal(t, randomJSON(r, 4))
		patch := mustMarshal(t, randomJSON(r, 4))
		once, err := live.MergePatch(target, patch)
		if err != nil {
			t.Fatalf("MergePatch(%s, %s): %v", target, patch, err)
		}
		twice, err := live.MergePatch(once, patch)
		if err != nil {
			t.Fatalf("MergePatch(%s, %s): %v", once, patch, err)
		}
		if diff := cmp.Diff(decodeJSON(t, once), decodeJSON(t, twice)); diff != "" {
			t.Fatalf("case %d: patch %s not idempotent on %s (-once +twice):\n%s", i, patch, target, diff)
		}
	}
}

// Fuzz targets. The vectors are their corpus; go test runs it as tests.

func addVectorSeeds(f *testing.F, file string, add func(v vector)) {
	b, err := os.ReadFile(filepath.Join("testdata", "merge", file))
	if err != nil {
		f.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		f.Fatal(err)
	}
	for _, v := range vs {
		add(v)
	}
}

// checkMergeResult fails unless a merge's result is compact, valid JSON
// (or absent, with an error).
func checkMergeResult(t *testing.T, got json.RawMessage, err error) {
	t.Helper()
	if err != nil {
		if got != nil {
			t.Errorf("result %q with error %v", got, err)
		}
		if !strings.HasPrefix(err.Error(), "live: ") {
			t.Errorf("error %q lacks the live: prefix", err)
		}
		return
	}
	if !utf8.Valid(got) {
		t.Fatalf("result %q is not UTF-8", got)
	}
	checkCompact(t, got)
}

func FuzzMergePatch(f *testing.F) {
	addVectorSeeds(f, "patch.json", func(v vector) {
		f.Add([]byte(input(v.Current, v.CurrentText)), []byte(input(v.Update, v.UpdateText)))
	})
	f.Fuzz(func(t *testing.T, current, update []byte) {
		got, err := live.MergePatch(current, update)
		checkMergeResult(t, got, err)
		if err != nil {
			return
		}
		again, err := live.MergePatch(got, update)
		if err != nil {
			t.Fatalf("patching the result again: %v", err)
		}
		if !bytes.Equal(got, again) {
			t.Errorf("not idempotent: %s then %s", got, again)
		}
		got, err = live.MergeShallow(current, update)
		checkMergeResult(t, got, err)
		// MergeReplace decodes and re-encodes: it must agree with
		// encoding/json on what the update says.
		got, err = live.MergeReplace(current, update)
		checkMergeResult(t, got, err)
		if err == nil {
			if diff := cmp.Diff(decodeExact(t, update), decodeExact(t, got)); diff != "" {
				t.Errorf("MergeReplace(%q) = %s (-encoding/json +got):\n%s", update, got, diff)
			}
		}
	})
}

func FuzzMergeList(f *testing.F) {
	addVectorSeeds(f, "list.json", func(v vector) {
		f.Add(v.IDField, []byte(input(v.Current, v.CurrentText)), []byte(input(v.Update, v.UpdateText)))
	})
	f.Fuzz(func(t *testing.T, idField string, current, update []byte) {
		got, err := live.MergeList(idField)(current, update)
		checkMergeResult(t, got, err)
	})
}

func FuzzApplyDelta(f *testing.F) {
	addVectorSeeds(f, "delta.json", func(v vector) {
		f.Add([]byte(input(v.Current, v.CurrentText)), []byte(v.Update))
	})
	f.Fuzz(func(t *testing.T, current, delta []byte) {
		var d live.Delta
		if json.Unmarshal(delta, &d) != nil || d.Version == 0 {
			return
		}
		got, err := live.ApplyDelta(current, d.Version-1, d)
		checkMergeResult(t, got, err)
		if errors.Is(err, live.ErrVersionGap) {
			t.Errorf("gap reported for consecutive versions: %v", err)
		}
	})
}

func FuzzDiff(f *testing.F) {
	addVectorSeeds(f, "diff.json", func(v vector) {
		f.Add([]byte(input(v.Old, v.OldText)), []byte(input(v.New, v.NewText)))
	})
	addVectorSeeds(f, "patch.json", func(v vector) {
		f.Add([]byte(v.Current), []byte(v.Want))
	})
	f.Fuzz(func(t *testing.T, old, new []byte) {
		changes, ok, err := live.Diff(old, new)
		if err != nil || !ok {
			if changes != nil {
				t.Errorf("changes %+v with ok %v, error %v", changes, ok, err)
			}
			return
		}
		checkRoundTrip(t, old, new, changes)
	})
}
