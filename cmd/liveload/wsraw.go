package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// runRawWS is the WebSocket subscriber with a client of the generator's
// own: frames are parsed in place from the connection's buffer, as the
// SSE subscriber parses lines, where the library's client allocates and
// copies each message. Both sides share the machine, so a costlier client
// slows the server it measures; -wsclient library uses the library's.
func (s *subscriber) runRawWS(ctx context.Context, ready chan<- struct{}, first bool) error {
	c, stop, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer stop()

	var key [16]byte
	rand.Read(key[:])
	path := "/ws" + s.query()
	if s.l.peer != "" {
		path = peerRoutes[s.l.peer].path
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + s.addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("WebSocket: %s", resp.Status)
	}
	subs := s.subscribeFrames()
	switch s.l.peer {
	case "melody":
		subs = nil // every message goes to every connection
	case "centrifuge":
		sub := `{"id":1,"connect":{}}`
		for k, ch := range s.channels() {
			sub += "\n" + `{"id":` + strconv.Itoa(k+2) + `,"subscribe":{"channel":"` + ch + `"}}`
		}
		subs = []string{sub}
	}
	for _, sub := range subs {
		if err := writeClientFrame(c, 0x1, []byte(sub)); err != nil {
			return err
		}
	}

	up := false
	defer func() {
		if up {
			s.l.live.Add(-1)
		}
	}()
	if s.l.peer != "" {
		up = true
		s.subscribed(ready, first)
	}
	var long []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return err
		}
		op, n := h[0]&0x0f, int64(h[1]&0x7f)
		if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
			return errors.New("WebSocket: a fragmented or masked frame from the server")
		}
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				return err
			}
			n = int64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				return err
			}
			n = int64(binary.BigEndian.Uint64(ext[:]))
		}
		var payload []byte
		if n <= int64(br.Size()) {
			if payload, err = br.Peek(int(n)); err != nil {
				return err
			}
		} else {
			if int64(cap(long)) < n {
				long = make([]byte, n)
			}
			long = long[:n]
			if _, err := io.ReadFull(br, long); err != nil {
				return err
			}
			payload = long
		}
		switch op {
		case 0x1:
			if s.l.peer == "" {
				s.wsMessage(payload, ready, first, &up)
				break
			}
			if s.l.peer == "centrifuge" && string(payload) == "{}" {
				// Centrifuge's ping: answer, or it disconnects.
				if err := writeClientFrame(c, 0x1, []byte("{}")); err != nil {
					return err
				}
				break
			}
			// A peer's messages are the publications, several to a
			// message for Centrifuge, one per line.
			for line := range bytes.SplitSeq(payload, []byte("\n")) {
				if bytes.Contains(line, []byte(`"i":`)) {
					s.deliver(line)
				}
			}
		case 0x9: // ping: pong with its payload
			if err := writeClientFrame(c, 0xA, append([]byte(nil), payload...)); err != nil {
				return err
			}
		case 0x8:
			if n <= int64(br.Size()) && len(payload) > 2 {
				s.tell(payload[2:])
			}
			return io.EOF
		}
		if n <= int64(br.Size()) {
			br.Discard(int(n))
		}
	}
}

// writeClientFrame writes one final, masked client frame.
func writeClientFrame(w io.Writer, op byte, payload []byte) error {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	_, err := w.Write(b)
	return err
}
