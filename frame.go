package live

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"sync"
	"sync/atomic"
)

// A frame is one unit of output, encoded for both transports. Data frames
// are built once per publication and shared by every subscriber's queue;
// control frames are built for one connection.
type frame struct {
	channel string
	pos     Position
	data    bool // a publication
	reset   bool // a reset; pos is its cursor
	ack     bool // a "subscribed" acknowledgement
	sse     []byte
	ws      []byte
	src     []byte  // the publication as published, for kinds that fold it (lists, States)
	tag     string  // a presence snapshot's tag, which long-pollers send back
	except  *except // whom live delivery skips; nil for none
	at      int64   // when the publication reached the hub (nanotime), for Options.Observe.Wrote; 0 untimed
	// wsz is the WebSocket message of ws compressed, header included,
	// made by the first writer of a connection that negotiated
	// compression.
	wsz atomic.Pointer[[]byte]
}

// deflateMin is the smallest message the hub compresses: below it the
// deflate block costs about what it saves.
const deflateMin = 512

// appendWSDeflated appends f's WebSocket message, of at least deflateMin
// bytes, compressed as a connection that negotiated permessage-deflate
// gets it. Without context takeover each message is compressed on its
// own, so one compression serves every connection.
func (f *frame) appendWSDeflated(b []byte) []byte {
	if z := f.wsz.Load(); z != nil {
		return append(b, *z...)
	}
	z := deflateMessage(f.ws)
	f.wsz.CompareAndSwap(nil, &z)
	return append(b, z...)
}

// flateWriters recycles compressors, which are large (their hash tables
// and window) and needed only while a message is compressed.
var flateWriters sync.Pool

// deflateMessage returns p as one compressed final text frame (RFC 7692:
// the compressed data without the empty block's trailing 00 00 ff ff, RSV1
// set).
func deflateMessage(p []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(p)/2 + 16)
	w, _ := flateWriters.Get().(*flate.Writer)
	if w == nil {
		w, _ = flate.NewWriter(&buf, flate.BestSpeed)
	} else {
		w.Reset(&buf)
	}
	w.Write(p)
	w.Flush()
	flateWriters.Put(w)
	z := bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
	b := appendWSHeader(make([]byte, 0, 10+len(z)), opText, len(z))
	b[0] |= 0x40 // RSV1: compressed
	return append(b, z...)
}

// size is what the frame counts against a queue's byte bound.
func (f *frame) size() int { return len(f.sse) + len(f.ws) }

// cost is what f adds to a connection's queue: the bytes of the larger
// encoding, since a connection is written one of them.
func (f *frame) cost() int { return max(len(f.sse), len(f.ws)) }

// quote returns s as a JSON string. Channel names and cursors need no
// escaping, but messages may hold anything.
func quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// compactJSON guarantees data holds no line breaks, which would end an SSE
// data line early. Data from Hub.Publish is already compact; this guards
// against other publishers sharing a broker.
func compactJSON(data []byte) []byte {
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		return data
	}
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		return []byte("null")
	}
	return b.Bytes()
}

// newDataFrame encodes one publication: for SSE "id: <cursor>\ndata: <json>",
// for WebSocket the data frame of React LiveProvider clients plus a
// cursor, and the channel's
// query key when it has one.
//
// A frame whose Pos has an empty epoch carries no cursor: clients neither
// advance nor dedupe on it (coalesced list operations, see coalesceList).
func newDataFrame(quotedChannel, queryKey []byte, m Message) *frame {
	data := compactJSON(m.Data)
	cur := cursorOf(m)
	sse := make([]byte, 0, len(cur)+len(data)+13)
	if cur != "" {
		sse = append(sse, "id: "...)
		sse = append(sse, cur...)
		sse = append(sse, '\n')
	}
	sse = append(sse, "data: "...)
	sse = append(sse, data...)
	sse = append(sse, "\n\n"...)
	ws := wsData(quotedChannel, queryKey, data, cur, nil)
	return &frame{channel: m.Channel, pos: m.Pos, data: true, sse: sse, ws: ws}
}

// newTextFrame encodes a [Text] publication, whose data is a JSON string:
// for SSE the text itself, "id: <cursor>\nevent: <event>\ndata: <line>\n…"
// with one data line per line of the text, and for WebSocket the data
// frame of newDataFrame with an "event" member. It returns nil if the data
// is not a JSON string or event is no name a text may have, which no hub
// sends: the publication is then JSON.
func newTextFrame(quotedChannel, queryKey []byte, m Message, event string) *frame {
	if checkTextEvent(event) != nil {
		return nil
	}
	data := compactJSON(m.Data)
	cur := cursorOf(m)
	sse := make([]byte, 0, len(cur)+len(event)+len(data)+24)
	if cur != "" {
		sse = append(sse, "id: "...)
		sse = append(sse, cur...)
		sse = append(sse, '\n')
	}
	if event != "" {
		sse = append(sse, "event: "...)
		sse = append(sse, event...)
		sse = append(sse, '\n')
	}
	sse, ok := appendTextLines(sse, data)
	if !ok {
		return nil
	}
	sse = append(sse, '\n')
	var quotedEvent []byte
	if event != "" {
		quotedEvent = quote(event)
	}
	ws := wsData(quotedChannel, queryKey, data, cur, quotedEvent)
	return &frame{channel: m.Channel, pos: m.Pos, data: true, sse: sse, ws: ws}
}

// cursorOf returns m's cursor, "" for a publication that carries none.
func cursorOf(m Message) string {
	if m.Pos.Epoch == "" {
		return ""
	}
	return m.Pos.String()
}

// wsData returns the WebSocket data frame of a publication: its channel
// and query key (as JSON, nil for none), its compact JSON data, its
// cursor ("" for none) and the event of a text (as JSON, nil for none).
func wsData(quotedChannel, queryKey, data []byte, cur string, quotedEvent []byte) []byte {
	ws := make([]byte, 0, len(quotedChannel)+len(queryKey)+len(data)+len(cur)+len(quotedEvent)+67)
	ws = append(ws, `{"type":"data","channel":`...)
	ws = append(ws, quotedChannel...)
	if queryKey != nil {
		ws = append(ws, `,"queryKey":`...)
		ws = append(ws, queryKey...)
	}
	ws = append(ws, `,"data":`...)
	ws = append(ws, data...)
	if cur != "" {
		ws = append(ws, `,"cursor":"`...)
		ws = append(ws, cur...)
		ws = append(ws, '"')
	}
	if quotedEvent != nil {
		ws = append(ws, `,"event":`...)
		ws = append(ws, quotedEvent...)
	}
	return append(ws, '}')
}

// Reasons carried by reset frames.
const (
	resetGone      = "gone"      // the cursor is older than the history kept
	resetEpoch     = "epoch"     // the cursor is from an earlier numbering
	resetAhead     = "ahead"     // the cursor is beyond the channel's head
	resetMalformed = "malformed" // the cursor could not be parsed
	resetSlow      = "slow"      // the client did not keep up and messages were dropped
	resetBroker    = "broker"    // the broker lost publications it could not replay
)

// control describes a frame for one connection. Fields left empty are
// omitted from the encoding.
type control struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel,omitempty"`
	Cursor  string          `json:"cursor,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Ref     json.RawMessage `json:"ref,omitempty"`
	Conn    string          `json:"connection,omitempty"` // "subscribed": the connection's ConnectionHeader
	Status  string          `json:"status,omitempty"`     // "status": "delayed" or "live"
}

// encode returns the frame for transport ws (WebSocket) or SSE. SSE has no
// acknowledgements: a "subscribed" frame becomes a bare id line, which moves
// EventSource's Last-Event-ID without firing an event; resets become named
// "reset" events, which EventSource.onmessage never sees.
func (c control) encode(ws bool) *frame {
	f := &frame{channel: c.Channel, ack: c.Type == "subscribed"}
	if ws {
		f.ws, _ = json.Marshal(c)
		return f
	}
	var b []byte
	switch c.Type {
	case "subscribed":
		b = append(b, "id: "...)
		b = append(b, c.Cursor...)
		b = append(b, "\n\n"...)
	case "reset":
		body, _ := json.Marshal(resetBody{Channel: c.Channel, Reason: c.Reason, Cursor: c.Cursor})
		b = append(b, "event: reset\nid: "...)
		b = append(b, c.Cursor...)
		b = append(b, "\ndata: "...)
		b = append(b, body...)
		b = append(b, "\n\n"...)
	default:
		return nil
	}
	f.sse = b
	return f
}

// resetFrame tells a client that channel continues after cursor and that
// it must refetch what came before.
func resetFrame(channel string, cursor Position, reason string, ws bool) *frame {
	f := control{Type: "reset", Channel: channel, Cursor: cursor.String(), Reason: reason}.encode(ws)
	f.pos, f.reset = cursor, true
	return f
}

// maxRef bounds the "ref" of a client's frame that replies echo: a longer
// one is not echoed.
const maxRef = 256

// clipRef returns ref if replies may echo it, nil otherwise.
func clipRef(ref json.RawMessage) json.RawMessage {
	if len(ref) > maxRef {
		return nil
	}
	return ref
}

// resetBody is the data of an SSE reset event.
type resetBody struct {
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
	Cursor  string `json:"cursor"`
}

// WebSocket opcodes and close codes the writers use.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xa

	statusGoingAway     = 1001
	statusTryAgainLater = 1013
)

// appendWSHeader appends the header of a final, unmasked server frame.
func appendWSHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// A wire is how a connection's frames are encoded for its client.
type wire uint8

const (
	wireNone   wire = iota // not taken over (yet): a long-poll, or a stream or WebSocket before takeOver
	wireSSE                // one channel: each frame's SSE encoding
	wireSSEMux             // many channels: "data: <WebSocket frame>"
	wireWS                 // WebSocket text messages
)

// appendFrame appends f as c's wire encodes it.
func (c *conn) appendFrame(b []byte, f *frame) []byte {
	switch c.wire {
	case wireSSE:
		return append(b, f.sse...)
	case wireSSEMux:
		if f.ws == nil {
			return b
		}
		b = append(b, "data: "...)
		b = append(b, f.ws...)
		return append(b, "\n\n"...)
	default:
		if f.ws == nil {
			return b
		}
		if c.flate && len(f.ws) >= deflateMin {
			return f.appendWSDeflated(b)
		}
		b = appendWSHeader(b, opText, len(f.ws))
		return append(b, f.ws...)
	}
}

func (c *conn) appendHeartbeat(b []byte) []byte {
	if c.wire == wireWS {
		// An unsolicited ping with no payload, or the time for
		// Options.Observe.Pong; the reader sees the pong.
		if c.hub.obs.Pong != nil {
			return appendPing(b)
		}
		return appendWSHeader(b, opPing, 0)
	}
	return append(b, heartbeatComment...)
}

// heartbeatComment is an SSE stream's heartbeat, which clients ignore.
var heartbeatComment = []byte(": heartbeat\n\n")

func errorFrame(code, msg, channel string, ref json.RawMessage) *frame {
	return control{Type: "error", Code: code, Message: msg, Channel: channel, Ref: ref}.encode(true)
}
