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
// calls their ready. It asks for all the heads at once (the channel's
// latest message, one STREAM.MSG.GET each), then stores at once the
// markers of those without messages (each expected first on its subject,
// so a publication that came first refuses it). When most channels of the
// broker's last batch had no message (new channels, say one per user),
// it stores the markers first instead, and reads the heads of the
// channels that refused them: one request per new channel rather than
// two. A follower whose head this does not settle (an error, say) is left
// to its own job, start.
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
	all := make([]int, len(fs))
	for i := range all {
		all[i] = i
	}
	if s, err := b.getStream(ctx); err == nil {
		api := "$JS.API.STREAM.MSG.GET." + s.CachedInfo().Config.Name
		var fresh int
		if b.freshHeads.Load() {
			refused := b.storeMarkers(ctx, fs, all, heads)
			fresh = len(fs) - len(refused)
			b.readHeads(ctx, api, fs, refused, heads)
		} else {
			empty := b.readHeads(ctx, api, fs, all, heads)
			fresh = len(empty)
			b.storeMarkers(ctx, fs, empty, heads)
		}
		b.freshHeads.Store(2*fresh > len(fs))
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

// readHeads asks at once for the latest message of the channels of fs at
// idx, sets their heads, and returns the indexes of those without
// messages.
func (b *Broker) readHeads(ctx context.Context, api string, fs []*follower, idx []int, heads []*tail) (empty []int) {
	if len(idx) == 0 {
		return nil
	}
	reqs := make([]*nats.Msg, len(idx))
	for k, i := range idx {
		data, _ := json.Marshal(struct {
			LastFor string `json:"last_by_subj"`
		}{b.subject(fs[i].channel)})
		reqs[k] = &nats.Msg{Subject: api, Data: data}
	}
	replies, _ := b.requestMany(ctx, reqs)
	for k, r := range replies {
		t, ok, err := parseMsgGet(r)
		switch {
		case err != nil:
		case ok:
			heads[idx[k]] = &t
		default:
			empty = append(empty, idx[k])
		}
	}
	return empty
}

// storeMarkers stores at once the markers of the channels of fs at idx,
// each in a new epoch and expected first on its subject, sets the heads
// of those stored, and returns the indexes of the others.
func (b *Broker) storeMarkers(ctx context.Context, fs []*follower, idx []int, heads []*tail) (refused []int) {
	if len(idx) == 0 {
		return nil
	}
	reqs := make([]*nats.Msg, len(idx))
	for k, i := range idx {
		reqs[k] = &nats.Msg{
			Subject: b.subject(fs[i].channel),
			Header: nats.Header{
				hdrEpoch:                            {newEpoch()},
				hdrSeq:                              {"0"},
				hdrPrev:                             {"0"},
				jetstream.ExpectedLastSubjSeqHeader: {"0"},
			},
		}
	}
	replies, _ := b.requestMany(ctx, reqs)
	for k, r := range replies {
		if r != nil && parsePubAck(r) == nil {
			heads[idx[k]] = &tail{pos: live.Position{Epoch: reqs[k].Header.Get(hdrEpoch)}}
		} else {
			refused = append(refused, idx[k])
		}
	}
	return refused
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
