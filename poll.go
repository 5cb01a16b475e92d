package live

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Long-polling, for networks where neither WebSocket nor a stream gets
// through (a proxy that buffers whole responses). A poll is the
// multiplexed SSE request with ?poll added:
//
//	GET …?channels=a,b&cursor.a=<cursor>&poll[=<seconds>][&ack=a]
//
// It answers a JSON array of the frames the stream would carry
// ("subscribed", "data", "reset", "error", and "close" when the server
// ends the poller's session: see closeFrame), as soon as one is news, or an
// empty array once the hold (25 seconds, or the given number up to that)
// has passed. The client sends the next poll with the cursors it reached,
// so nothing is lost or repeated between polls; the hub keeps nothing of a
// poller between polls, so one that never comes back costs nothing.
// Authorization, origins, identities and limits are the stream's.
//
// A channel polled with a cursor is not acknowledged again: the poller has
// its acknowledgement from an earlier poll, and repeating it would answer
// every poll at once. A client that resumes a channel it holds no
// acknowledgement for (a cursor saved elsewhere, or reached over another
// transport) names it in ack, and that poll answers with its "subscribed"
// frame, then what follows the cursor.

// maxHold bounds how long a poll waits for news.
const maxHold = 25 * time.Second

// pollHold reads the hold of a poll, maxHold unless given.
func pollHold(q url.Values) (time.Duration, error) {
	v := q.Get("poll")
	if v == "" {
		return maxHold, nil
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || s < 0 || s != s {
		return 0, errors.New("live: poll takes a number of seconds to wait, up to 25")
	}
	return min(time.Duration(s*float64(time.Second)), maxHold), nil
}

// pollAcks reads the channels a poll acknowledges although it resumes
// them (?ack=a,b). Other names are ignored, so the map is never larger
// than the poll's channels.
func pollAcks(q url.Values, resumed map[string]bool) map[string]bool {
	acks := make(map[string]bool)
	for _, v := range q["ack"] {
		for ch := range strings.SplitSeq(v, ",") {
			if resumed[ch] {
				acks[ch] = true
			}
		}
	}
	return acks
}

// poll answers a long-poll whose subscriptions are in place on c, then
// lets them go. Acknowledgements of channels the client gave a cursor for
// are left out unless it asks for them in ack: it knows the others already.
func (h *Hub) poll(w http.ResponseWriter, r *http.Request, c *conn, hold time.Duration, resumed map[string]bool) {
	defer h.leave(c)
	defer h.observePoll(time.Now())
	timer := time.NewTimer(hold)
	defer timer.Stop()
	var out []*frame
	q := r.URL.Query() // once, not per frame
	acks := pollAcks(q, resumed)
	news := false
	for !news {
		c.mu.Lock()
		batch, slow, ended, endErr := c.q, c.slow || c.ended, c.ended, c.endErr
		lw, _ := endErr.(*lastWords)
		c.q, c.bytes, c.beat = nil, 0, false
		c.mu.Unlock()
		if lw != nil {
			out = []*frame{lw.f} // Disconnect, a Reauthorize or Drain ended it
			if lw.code != 0 && lw.retry == 0 {
				out = append(out, closeFrame(lw.code, lw.reason))
			}
			break
		}
		if ended && errors.Is(endErr, errFenced) {
			out = []*frame{closeFrame(statusTryAgain, "reconnect")}
			break
		}
		if slow {
			// Frames were dropped: the client polls again from its cursors.
			writeError(w, http.StatusServiceUnavailable, "too_slow", "too much at once: poll again from your cursors")
			return
		}
		for _, f := range batch {
			if f.ws == nil || f.ack && resumed[f.channel] && !acks[f.channel] {
				continue
			}
			if f.tag != "" && q.Get("presence."+f.channel) == f.tag {
				continue // the presence the poller has
			}
			out = append(out, f)
			news = true
		}
		if news {
			break
		}
		select {
		case <-c.wake:
			continue
		case <-timer.C:
			if !c.until.IsZero() && !time.Now().Before(c.until) {
				// Admitted while the hub drains, until its turn: now.
				out = append(out, restartWords().f)
				h.stats.drained.Add(1)
			}
		case <-h.done:
			out = append(out, closeFrame(statusGoingAway, "server shutting down"))
		case <-r.Context().Done():
			return
		}
		break
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, f := range out {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(f.ws)
	}
	b.WriteByte(']')
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
	h.stats.delivered.Add(int64(len(out)))
	c.observePoll(len(out))
}
