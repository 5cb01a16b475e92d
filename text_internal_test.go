package live

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// lineBreak is a line break as the event stream format reads one.
var lineBreak = regexp.MustCompile("\r\n|\r|\n")

// FuzzTextLines checks appendTextLines against encoding/json: the data
// lines of a JSON string are its text, split at line breaks, and what is
// not a JSON string is refused.
func FuzzTextLines(f *testing.F) {
	for _, s := range []string{
		`""`, `"a"`, `"<li>a</li>\r\n<li>b</li>\r<li>c</li>\n"`, `"\r\r\n\n"`,
		`"\ud83d\ude00 \ud83d x \u00e9 \u000d\u000a \/ \\ \" \t"`, `"\uDE00\uD83D"`, `"é😀"`,
		`"\x"`, `"a`, `"a"b"`, "\"\n\"", `"\u12"`, `"\`, `123`, `"\ud83d\u0041"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := appendTextLines(nil, data)
		var text string
		trimmed := strings.Trim(string(data), " \t\r\n")
		want := json.Valid(data) && strings.HasPrefix(trimmed, `"`) && json.Unmarshal(data, &text) == nil
		if ok != want {
			t.Fatalf("appendTextLines(%q) ok %v; encoding/json reads it: %v", data, ok, want)
		}
		if !ok || !utf8.Valid(data) {
			return // invalid UTF-8 is passed on, where encoding/json replaces it
		}
		var b strings.Builder
		for _, line := range lineBreak.Split(text, -1) {
			b.WriteString("data: " + line + "\n")
		}
		if string(got) != b.String() {
			t.Fatalf("appendTextLines(%q) = %q; want %q", data, got, b.String())
		}
	})
}
