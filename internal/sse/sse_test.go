package sse

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const stream = "id: 1-1\n\n" + // an acknowledgement: a cursor and nothing else
	": heartbeat\n" +
	"id: 1-2\ndata: {\"a\":1}\n\n" +
	"event: status\ndata: {\"state\":\"degraded\"}\n\n" +
	"data: one\r\ndata:\r\ndata: three\r\n\r\n" +
	"event: reset\nid:\ndata: {}\n\n" +
	"retry: 10\nunknown\n\n"

var want = []Event{
	{ID: "1-1", HasID: true},
	{Comment: "heartbeat"},
	{ID: "1-2", HasID: true, Data: `{"a":1}`},
	{Event: "status", Data: `{"state":"degraded"}`},
	{Data: "one\n\nthree"},
	{Event: "reset", HasID: true, Data: "{}"},
	{Retry: "10"},
}

func TestReader(t *testing.T) {
	r := NewReader(strings.NewReader(stream + "data: cut"))
	var got []Event
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("the stream ended inside an event with %v; want %v", err, io.ErrUnexpectedEOF)
			}
			break
		}
		got = append(got, ev)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestSplit(t *testing.T) {
	var got []Event
	var rest []byte
	for _, b := range []byte(stream + "data: cut") { // a byte at a time
		rest = Split(append(rest, b), func(ev Event) { got = append(got, ev) })
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if string(rest) != "data: cut" {
		t.Errorf("rest %q; want the event written in part", rest)
	}
}

func TestNotice(t *testing.T) {
	for _, ev := range []Event{{Event: "status", Data: "{}"}, {Data: `{"type":"status","state":"ok"}`}} {
		if !ev.Notice() {
			t.Errorf("%+v is a notice", ev)
		}
	}
	if (Event{Data: `{"type":"data"}`}).Notice() {
		t.Error("a publication is not a notice")
	}
}
