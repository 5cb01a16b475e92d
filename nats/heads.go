package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-live/live"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// headBatch bounds the heads one worker reads at once. A batch sends
// all its requests before it waits for a reply, so the requests share
// writes to the connection and the server's reads, and the batch takes
// about one round trip; a channel without messages then gets its marker
// the same way.
const headBatch = 256

// startMany reads the heads of fs, which are active on the server, and
// calls their ready: all the heads are asked for at once (the channel's
// latest message, one STREAM.MSG.GET each), then the markers of those
// without messages are stored at once (each expected first on its
// subject). A follower whose head this does not settle (an error, a
// marker refused because a publication came first) is left to its own
// job, start.
func (b *Broker) startMany(fs []*follower) {
	open := fs[:0:0]
	for _, f := range fs {
		f.mu.Lock()
		if !f.done {
			open = append(open, f)
		}
		f.mu.Unlock()
	}
	fs = open
	if len(fs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(b.connContext(), b.stall)
	defer cancel()
	heads := make([]*tail, len(fs)) // nil: not settled here
	empty := make([]bool, len(fs))  // found without messages
	if s, err := b.getStream(ctx); err == nil {
		reqs := make([]*nats.Msg, len(fs))
		api := "$JS.API.STREAM.MSG.GET." + s.CachedInfo().Config.Name
		for i, f := range fs {
			data, _ := json.Marshal(struct {
				LastFor string `json:"last_by_subj"`
			}{b.subject(f.channel)})
			reqs[i] = &nats.Msg{Subject: api, Data: data}
		}
		replies, _ := b.requestMany(ctx, reqs)
		for i, r := range replies {
			t, ok, err := parseMsgGet(r)
			switch {
			case err != nil:
			case ok:
				heads[i] = &t
			default:
				empty[i] = true
			}
		}
	}
	var markers []int
	var reqs []*nats.Msg
	for i, f := range fs {
		if !empty[i] {
			continue
		}
		epoch := newEpoch()
		markers = append(markers, i)
		reqs = append(reqs, &nats.Msg{
			Subject: b.subject(f.channel),
			Header: nats.Header{
				hdrEpoch:                            {epoch},
				hdrSeq:                              {"0"},
				hdrPrev:                             {"0"},
				jetstream.ExpectedLastSubjSeqHeader: {"0"},
			},
		})
	}
	if len(reqs) > 0 {
		replies, _ := b.requestMany(ctx, reqs)
		for k, r := range replies {
			if r != nil && parsePubAck(r) == nil {
				i := markers[k]
				heads[i] = &tail{pos: live.Position{Epoch: reqs[k].Header.Get(hdrEpoch)}}
			}
		}
	}
	for i, f := range fs {
		if heads[i] == nil {
			b.submit(f.start)
			continue
		}
		f.mu.Lock()
		if f.done {
			f.mu.Unlock()
			continue
		}
		f.active, f.last = true, heads[i].pos
		f.ready(f.last)
		waiting := len(f.pending) > 0
		if !waiting {
			f.busy, f.pending = false, nil
		}
		f.mu.Unlock()
		if waiting {
			b.submit(f.drain)
		}
	}
}

// requestMany sends reqs, each as a request, before it waits for any
// reply, and returns the replies in the order of reqs; those that did not
// come before ctx ended are nil, and the error says why.
func (b *Broker) requestMany(ctx context.Context, reqs []*nats.Msg) ([]*nats.Msg, error) {
	replies := make([]*nats.Msg, len(reqs))
	inbox := b.nc.NewRespInbox()
	ch := make(chan *nats.Msg, len(reqs)) // room for every reply: nats.go never drops one
	sub, err := b.nc.ChanSubscribe(inbox+".*", ch)
	if err != nil {
		return replies, err
	}
	defer sub.Unsubscribe()
	sent := 0
	for i, m := range reqs {
		m.Reply = inbox + "." + strconv.Itoa(i)
		if err := b.nc.PublishMsg(m); err != nil {
			return replies, err
		}
		sent++
	}
	for got := 0; got < sent; got++ {
		select {
		case r := <-ch:
			i, err := strconv.Atoi(r.Subject[strings.LastIndexByte(r.Subject, '.')+1:])
			if err != nil || i < 0 || i >= len(replies) || replies[i] != nil {
				got--
				continue
			}
			replies[i] = r
		case <-ctx.Done():
			return replies, context.Cause(ctx)
		}
	}
	return replies, nil
}

// apiError is a JetStream API error in a reply.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     uint16 `json:"err_code"`
	Description string `json:"description"`
}

// parseMsgGet reads the reply to a STREAM.MSG.GET: the message, or ok
// false if there is none.
func parseMsgGet(r *nats.Msg) (t tail, ok bool, err error) {
	if r == nil {
		return tail{}, false, errors.New("no reply")
	}
	if len(r.Data) == 0 && r.Header.Get("Status") != "" {
		return tail{}, false, fmt.Errorf("status %s", r.Header.Get("Status"))
	}
	var resp struct {
		Error   *apiError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(r.Data, &resp); err != nil {
		return tail{}, false, err
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == uint16(jetstream.JSErrCodeMessageNotFound) {
			return tail{}, false, nil
		}
		return tail{}, false, fmt.Errorf("%s (%d)", resp.Error.Description, resp.Error.ErrCode)
	}
	m := resp.Message
	if m == nil {
		return tail{}, false, errors.New("reply without a message")
	}
	h, err := nats.DecodeHeadersMsg(m.Header)
	if err != nil {
		return tail{}, false, err
	}
	t, err = parseStored(m.Subject, h, m.Data)
	if err != nil {
		return tail{}, false, err
	}
	t.sseq, t.at = m.Sequence, m.Time
	return t, true, nil
}

// parsePubAck returns nil if r acknowledges a publication that JetStream
// stored.
func parsePubAck(r *nats.Msg) error {
	if len(r.Data) == 0 && r.Header.Get("Status") != "" {
		return fmt.Errorf("status %s", r.Header.Get("Status"))
	}
	var ack struct {
		Error     *apiError `json:"error"`
		Stream    string    `json:"stream"`
		Duplicate bool      `json:"duplicate"`
	}
	if err := json.Unmarshal(r.Data, &ack); err != nil {
		return err
	}
	if ack.Error != nil {
		return fmt.Errorf("%s (%d)", ack.Error.Description, ack.Error.ErrCode)
	}
	if ack.Stream == "" || ack.Duplicate {
		return errors.New("not stored")
	}
	return nil
}
