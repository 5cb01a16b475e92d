package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Text is a publication of text, such as an HTML fragment, for pages that
// consume a channel's one-channel SSE stream (GET …/{channel}) as it is:
// htmx's SSE extension, Hotwire Turbo's <turbo-stream-source>, Datastar,
// or a plain EventSource. Publish one with [Hub.Publish], or as the Data
// of a [Hub.Hook]'s [Event]:
//
//	hub.Publish(ctx, "feed", live.Text{Event: "row", Data: `<li>…</li>`})
//
// On the one-channel SSE stream it is written as the text itself, never
// JSON-quoted: an event with the publication's cursor as its id, named
// Event when that is set, and one data line per line of Data, so that
// EventSource gives Data back (with its line breaks as "\n"). On
// WebSocket, the multiplexed SSE stream and long-poll it is a data frame
// like any other, whose data is Data as a JSON string, with an "event"
// member when Event is set; [History] and every broker carry it as that
// JSON string too.
//
// That a publication is text is the hub's word, which travels beside the
// data (see [Message].Meta): only server code publishing through a Hub
// makes text. A client that publishes a JSON string, or data that looks
// like HTML, is still sent JSON-quoted, so clients can never publish HTML
// to other pages.
//
// Text is for plain channels: a State's channel and a list channel
// ([Options].ListIDField) refuse it.
type Text struct {
	// Event names the SSE event, for a page that listens for it (htmx's
	// sse-swap="row", say); "" sends an unnamed event, which
	// EventSource calls "message". A name is 1 to 64 characters, without
	// control characters or line breaks, not starting with a space, and
	// none of the names the hub gives its own events: reset, refused,
	// status and presence, nor EventSource's own error and open.
	Event string

	// Data is the text, in UTF-8 (invalid bytes become U+FFFD).
	Data string
}

// maxTextEvent bounds the name of a text publication's event.
const maxTextEvent = 64

// hubEvents are the names of the events the hub sends on its streams, and
// those EventSource fires itself: a publication may use none of them.
var hubEvents = map[string]bool{
	"reset":    true,
	"refused":  true,
	"status":   true,
	"presence": true,
	"error":    true,
	"open":     true,
}

// errTextEvent refuses the event name of a text publication.
var errTextEvent = errors.New("invalid text event name")

// errTextKind refuses text on a channel whose clients expect JSON of a
// shape of their own.
var errTextKind = errors.New("text can be published on plain channels only")

// checkTextEvent refuses an event name that the one-channel SSE stream
// cannot carry as it is, or that names an event of the hub's.
func checkTextEvent(name string) error {
	if name == "" {
		return nil
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: not UTF-8", errTextEvent)
	}
	if n := utf8.RuneCountInString(name); n > maxTextEvent {
		return fmt.Errorf("%w: %d characters, more than %d", errTextEvent, n, maxTextEvent)
	}
	if name[0] == ' ' {
		return fmt.Errorf("%w: %q starts with a space", errTextEvent, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%w: %q holds a control character or line break", errTextEvent, name)
		}
	}
	if hubEvents[name] {
		return fmt.Errorf("%w: %q names an event of the hub's own", errTextEvent, name)
	}
	return nil
}

// textMark is what the hub says of a text publication in its meta.
type textMark struct {
	Event string `json:"event,omitempty"`
}

// textKey keys the mark of a text publication the hub is making in its
// context, for withMeta.
type textKey struct{}

// withText returns ctx marking the publication made under it as text.
func withText(ctx context.Context, t *textMark) context.Context {
	return context.WithValue(ctx, textKey{}, t)
}

// textOf returns the text mark ctx carries, nil for none.
func textOf(ctx context.Context) *textMark {
	t, _ := ctx.Value(textKey{}).(*textMark)
	return t
}

// asText returns v as a text publication, if it is one.
func asText(v any) (Text, bool) {
	switch t := v.(type) {
	case Text:
		return t, true
	case *Text:
		if t != nil {
			return *t, true
		}
	}
	return Text{}, false
}

// encodeText checks t and returns its data, a JSON string, and its mark.
func encodeText(t Text) ([]byte, *textMark, error) {
	if err := checkTextEvent(t.Event); err != nil {
		return nil, nil, err
	}
	// HTML is full of < and >, which encoding/json would make six bytes
	// each: the text is never embedded in a page as JSON.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(t.Data); err != nil {
		return nil, nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), &textMark{Event: t.Event}, nil
}

// appendTextLines appends the text of data, a JSON string, as SSE data
// lines, decoding it as it goes: one line per line of the text, which end
// at "\r\n", "\r" or "\n" as the event stream format reads them (and
// EventSource joins them with "\n"); an empty text is one empty line. ok
// is false if data is not a JSON string.
func appendTextLines(b, data []byte) (_ []byte, ok bool) {
	data = bytes.Trim(data, " \t\r\n")
	n := len(data)
	if n < 2 || data[0] != '"' || data[n-1] != '"' {
		return b, false
	}
	s := data[1 : n-1]
	b = append(b, "data: "...)
	cr := false // the last character was a CR, which a LF after it belongs to
	for i := 0; i < len(s); {
		c := s[i]
		r := rune(-1) // a character from an escape
		switch {
		case c == '\\':
			if i+1 == len(s) {
				return b, false
			}
			switch s[i+1] {
			case '"', '\\', '/':
				c = s[i+1]
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'u':
				v, ok := hex4(s[i+2:])
				if !ok {
					return b, false
				}
				i += 6
				r = v
				if utf16.IsSurrogate(r) {
					r = utf8.RuneError
					if len(s) >= i+6 && s[i] == '\\' && s[i+1] == 'u' {
						if lo, ok := hex4(s[i+2:]); ok {
							if d := utf16.DecodeRune(v, lo); d != utf8.RuneError {
								r = d
								i += 6
							}
						}
					}
				}
			default:
				return b, false
			}
			if r < 0 {
				i += 2
			}
		case c == '"' || c < ' ':
			return b, false
		default:
			i++
		}
		if r >= 0 && r < utf8.RuneSelf {
			c, r = byte(r), -1
		}
		switch {
		case r >= 0:
			b = utf8.AppendRune(b, r)
		case c == '\n' && cr:
		case c == '\n' || c == '\r':
			b = append(b, "\ndata: "...)
		default:
			b = append(b, c)
		}
		cr = r < 0 && c == '\r'
	}
	return append(b, '\n'), true
}

// hex4 reads the four hexadecimal digits of a \u escape.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var v rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | rune(c)
	}
	return v, true
}

// checkTextKind refuses text on a State's channel or a list channel.
func (h *Hub) checkTextKind(channel string) error {
	if h.isState(channel) {
		return fmt.Errorf("live: publish %q: %w: the channel is a State's", channel, errTextKind)
	}
	if h.opts.ListIDField != nil && h.opts.ListIDField(channel) != "" {
		return fmt.Errorf("live: publish %q: %w: the channel is a list (Options.ListIDField)", channel, errTextKind)
	}
	return nil
}
