package natsbroker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The headers of a stored message.
const (
	hdrEpoch = "Live-Epoch"
	hdrSeq   = "Live-Seq"   // of the message's last publication
	hdrPrev  = "Live-Prev"  // the stream sequence of the channel's message before
	hdrCount = "Live-Count" // publications in the message, if more than one
	hdrMeta  = "Live-Meta"  // the meta of the message's one publication, if any
)

// A tail is a stored message of a channel, usually its latest.
type tail struct {
	pos   live.Position // of its last publication
	count int           // its publications: 1, more, or 0 for a channel without messages
	sseq  uint64        // its stream sequence; 0 if the channel has no message
	prev  uint64        // the stream sequence of the message before it; 0 for none
	data  []byte        // as stored: packed if count > 1
	meta  []byte        // of its one publication; nil for none
	at    time.Time
}

// first returns the Seq of t's first publication.
func (t tail) first() uint64 { return t.pos.Seq + 1 - uint64(max(t.count, 1)) }

// messages returns t's publications after Seq after.
func (t tail) messages(channel string, after uint64) ([]live.Message, error) {
	datas := [][]byte{t.data}
	if t.count > 1 {
		var err error
		if datas, err = unpack(t.data, t.count); err != nil {
			return nil, fmt.Errorf("message at %v: %w", t.pos, err)
		}
	}
	first := t.first()
	var msgs []live.Message
	for i, d := range datas {
		if seq := first + uint64(i); seq > after {
			msgs = append(msgs, live.Message{Channel: channel, Pos: live.Position{Epoch: t.pos.Epoch, Seq: seq}, Data: d, Meta: t.meta})
		}
	}
	return msgs, nil
}

// pack frames several publications' data as one message's: each as its
// length (a uvarint) and its bytes.
func pack(datas [][]byte) []byte {
	n := 0
	for _, d := range datas {
		n += binary.MaxVarintLen32 + len(d)
	}
	buf := make([]byte, 0, n)
	for _, d := range datas {
		buf = binary.AppendUvarint(buf, uint64(len(d)))
		buf = append(buf, d...)
	}
	return buf
}

// unpack returns the count publications' data pack framed in buf.
func unpack(buf []byte, count int) ([][]byte, error) {
	datas := make([][]byte, 0, count)
	for len(buf) > 0 && len(datas) < count {
		n, w := binary.Uvarint(buf)
		if w <= 0 || n > uint64(len(buf)-w) {
			break
		}
		datas = append(datas, buf[w:w+int(n):w+int(n)])
		buf = buf[w+int(n):]
	}
	if len(datas) != count || len(buf) != 0 {
		return nil, fmt.Errorf("malformed %s of %d", hdrCount, count)
	}
	return datas, nil
}

// newEpoch returns a random epoch: 12 characters of [a-z2-7], 60 bits.
func newEpoch() string {
	return strings.ToLower(rand.Text()[:12])
}

// parseStored reads the headers the broker writes on every message into
// t's pos, count and prev.
func parseStored(subject string, h nats.Header, data []byte) (t tail, err error) {
	epoch := h.Get(hdrEpoch)
	seq, err1 := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	prev, err2 := strconv.ParseUint(h.Get(hdrPrev), 10, 64)
	count := 1
	var err3 error
	if c := h.Get(hdrCount); c != "" {
		count, err3 = strconv.Atoi(c)
		if err3 == nil && (count < 1 || uint64(count) > seq) {
			err3 = errors.New("out of range")
		}
	}
	var meta []byte
	if m := h.Get(hdrMeta); m != "" {
		meta = []byte(m)
		if count != 1 {
			err3 = errors.New("meta on several publications")
		}
	}
	if epoch == "" || err1 != nil || err2 != nil || err3 != nil {
		return tail{}, fmt.Errorf("message on %s without valid %s, %s, %s, %s and %s headers", subject, hdrEpoch, hdrSeq, hdrPrev, hdrCount, hdrMeta)
	}
	return tail{pos: live.Position{Epoch: epoch, Seq: seq}, count: count, prev: prev, data: data, meta: meta}, nil
}

func fromRaw(raw *jetstream.RawStreamMsg) (tail, error) {
	t, err := parseStored(raw.Subject, raw.Header, raw.Data)
	t.sseq, t.at = raw.Sequence, raw.Time
	return t, err
}

// last returns the channel's latest stored message, with ok false if it
// has none. It creates the stream if the server has none.
func (b *Broker) last(ctx context.Context, channel string) (t tail, ok bool, err error) {
	for attempt := 0; ; attempt++ {
		s, err := b.getStream(ctx)
		if err != nil {
			return tail{}, false, err
		}
		raw, err := s.GetLastMsgForSubject(ctx, b.subject(channel))
		switch {
		case err == nil:
			t, err := fromRaw(raw)
			return t, err == nil, err
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return tail{}, false, nil
		case streamGone(err) && attempt == 0:
			b.forgetStream(ctx, s)
			continue
		}
		return tail{}, false, err
	}
}
