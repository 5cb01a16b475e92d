// Package sse reads Server-Sent Events: the one parser behind the tests'
// stream readers and liveclient. It follows the event stream format of
// the HTML standard as far as the hub uses it: fields id, event and data
// (data lines joined with "\n"), comments, and a blank line that
// dispatches an event.
package sse

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// An Event is one dispatched event, or one comment line.
type Event struct {
	ID, Event, Data string
	Retry           string // a retry line's value: when to reconnect, in ms
	HasID           bool   // the event had an id line, perhaps empty
	Comment         string // a comment line's text; the other fields are empty
}

// Notice reports whether e is one of the hub's status notices, which are
// not publications: an "event: status" event, or a multiplexed stream's
// frame of type status.
func (e Event) Notice() bool {
	return e.Event == "status" || strings.HasPrefix(e.Data, `{"type":"status"`)
}

// A Reader reads the events of one stream.
type Reader struct {
	br *bufio.Reader
	p  parser
}

// NewReader returns a Reader of the stream r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReader(r)}
}

// Next returns the next event or comment. Its error is the stream's, or
// io.EOF; an event the stream ends inside of is lost.
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line != "" {
				err = io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if ev, ok := r.p.line(line); ok {
			return ev, nil
		}
	}
}

// Split calls fn with each event and comment p holds whole, and returns
// the start of an event p holds in part, for the next bytes to follow: it
// reads a stream that arrives as the writes of a connection.
func Split(p []byte, fn func(Event)) (rest []byte) {
	end := bytes.LastIndex(p, []byte("\n\n"))
	if end < 0 {
		return p
	}
	var ps parser
	whole := p[:end+2]
	for len(whole) > 0 {
		i := bytes.IndexByte(whole, '\n')
		if ev, ok := ps.line(string(whole[:i+1])); ok {
			fn(ev)
		}
		whole = whole[i+1:]
	}
	return p[end+2:]
}

// parser builds events from lines.
type parser struct {
	ev      Event
	started bool // a field of ev has been read
	data    bool // a data line of ev has been read
}

// line takes one line, with its line ending, and returns an event when
// the line dispatches one or is a comment.
func (p *parser) line(line string) (Event, bool) {
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	switch {
	case line == "":
		ev, started := p.ev, p.started
		*p = parser{}
		return ev, started
	case line[0] == ':':
		return Event{Comment: strings.TrimSpace(line[1:])}, true
	}
	field, value, _ := strings.Cut(line, ":")
	value = strings.TrimPrefix(value, " ")
	p.started = true
	switch field {
	case "id":
		p.ev.ID, p.ev.HasID = value, true
	case "event":
		p.ev.Event = value
	case "retry":
		p.ev.Retry = value
	case "data":
		if p.data {
			p.ev.Data += "\n"
		}
		p.ev.Data += value
		p.data = true
	}
	return Event{}, false
}
