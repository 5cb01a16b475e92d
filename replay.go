package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// A client that resumes from a cursor gets what it missed from history
// within the same bounds as live traffic: its connection's queue
// (Options.QueueBytes and QueueMessages), the batch a writer is writing,
// and one page of history, read as the queue makes room. Publications
// made meanwhile wait in the subscription, within the same bounds; a
// client that reads its replay slower than the channel publishes gets the
// slow-client treatment. Subscribers replaying the same range at the same
// time share each page, read once.

// A channel keeps the pages it read while replays run, for the replays
// that follow the one that read them: one page per replay running, or
// maxPages if that is more.
const maxPages = 4

// A page is a part of a channel's history, encoded once for every
// subscriber that replays it.
type page struct {
	done   chan struct{} // closed once frames and err are set
	frames []*frame
	err    error
}

// pageCache is what a channel keeps of the history its replays read, by
// the position each page follows, oldest first in order.
type pageCache struct {
	replays int
	pages   map[Position]*page
	order   []Position
}

// pagesLocked returns the channel's page cache, making it if needed.
// hc.pmu is held.
func (hc *hubChannel) pagesLocked() *pageCache {
	if hc.pc == nil {
		hc.pc = new(pageCache)
	}
	return hc.pc
}

// replaying counts a replay in (d = 1) or out (d = -1) of hc; the last
// one out drops the pages kept.
func (hc *hubChannel) replaying(d int) {
	hc.pmu.Lock()
	defer hc.pmu.Unlock()
	pc := hc.pagesLocked()
	pc.replays += d
	if pc.replays == 0 {
		hc.pc = nil
	}
}

// page returns the frames of the publications after p: a page of them,
// within the queue's bounds. They come from the channel's recent frames
// when those hold them, else from history, read once for all the replays
// that ask for the same page while the channel has some running. The
// read runs until the channel ends, whoever asked; ctx bounds the wait.
func (hc *hubChannel) page(ctx context.Context, p Position) ([]*frame, error) {
	h := hc.h
	hc.mu.Lock()
	recent, ok := hc.recentAfterLocked(p)
	hc.mu.Unlock()
	if ok {
		n, size := 0, 0
		for n < len(recent) && n < h.opts.QueueMessages && (n == 0 || size+recent[n].cost() <= h.opts.QueueBytes) {
			size += recent[n].cost()
			n++
		}
		return recent[:n:n], nil
	}
	hc.pmu.Lock()
	pc := hc.pagesLocked()
	pg := pc.pages[p]
	if pg == nil {
		pg = &page{done: make(chan struct{})}
		if pc.pages == nil {
			pc.pages = make(map[Position]*page)
		}
		pc.pages[p] = pg
		pc.order = append(pc.order, p)
		if len(pc.order) > max(maxPages, pc.replays) {
			delete(pc.pages, pc.order[0])
			pc.order = pc.order[1:]
		}
		hc.pmu.Unlock()
		pg.frames, pg.err = hc.readPage(p)
		close(pg.done)
		if pg.err != nil {
			hc.pmu.Lock()
			if pc.pages[p] == pg {
				delete(pc.pages, p) // the next replay tries again
			}
			hc.pmu.Unlock()
		}
	} else {
		hc.pmu.Unlock()
	}
	select {
	case <-pg.done:
		return pg.frames, pg.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readPage reads the page after p from history.
func (hc *hubChannel) readPage(p Position) ([]*frame, error) {
	h := hc.h
	msgs, err := h.history.SincePage(h.ctx, hc.name, p, h.opts.QueueMessages, h.opts.QueueBytes)
	if err != nil {
		return nil, err
	}
	fs := make([]*frame, len(msgs))
	for i, m := range msgs {
		fs[i] = hc.frame(m)
	}
	return fs, nil
}

// replay sends s's client what it missed, the publications after from up
// to cur, then those held in s.pending meanwhile, and makes s live. s has
// been added to its channel, resuming. The first page is read before
// replay returns, so that a broker that fails refuses the subscription.
func (h *Hub) replay(ctx context.Context, s *subscription, from, cur Position, ref json.RawMessage) error {
	hc := s.hc
	hc.replaying(1)
	defer hc.replaying(-1)
	first, err := hc.page(ctx, from)
	hc.mu.Lock()
	if s.idx < 0 {
		// Ended meanwhile (unsubscribed, refused by a Reauthorize, or the
		// connection left), by whoever released hc.
		hc.mu.Unlock()
		return nil
	}
	if err != nil && !errors.Is(err, ErrGone) {
		hc.removeLocked(s)
		hc.mu.Unlock()
		c := s.c
		c.mu.Lock()
		if c.subs[hc.name] == s {
			delete(c.subs, hc.name)
		}
		c.mu.Unlock()
		h.stats.subscriptions.Add(-1)
		h.release(hc)
		return fmt.Errorf("%w: %w", errUnavailable, err)
	}
	if err != nil {
		s.breakLocked(resetGone)
	}
	h.replayLocked(s, first, from, cur, ref)
	return nil
}

// replayLocked acknowledges s and queues first, the page after from, as
// far as the queue admits it. What does not fit in the queue at once, the
// rest of the replay and what is held in s.pending, a goroutine of the
// hub's sends as the client reads. The caller holds hc.mu, which
// replayLocked releases.
func (h *Hub) replayLocked(s *subscription, first []*frame, from, cur Position, ref json.RawMessage) {
	hc, c := s.hc, s.c
	c.push(subscribedFrame(c, hc.name, from, ref))
	last, rest, done := from, []*frame(nil), true
	if !s.broken {
		var n int
		n, last = s.take(first, from, cur)
		sent, _ := c.pushSome(first[:n])
		h.stats.replayed.Add(int64(sent))
		rest = first[sent:n]
		done = len(rest) == 0 && (last == cur || s.broken)
	}
	if done && !s.broken {
		n, _ := c.pushSome(s.pending)
		for _, f := range s.pending[:n] {
			s.pendingBytes -= f.cost()
		}
		s.pending = s.pending[n:]
		done = len(s.pending) == 0
	}
	if done {
		s.finishLocked()
		hc.mu.Unlock()
		h.adopt(c, s)
		return
	}
	s.ctx, s.stop = context.WithCancel(h.ctx)
	hc.replaying(1)
	hc.mu.Unlock()
	h.adopt(c, s)
	h.group.Go(func() error {
		defer hc.replaying(-1)
		defer s.stop()
		h.replayRest(s, rest, last, cur)
		return nil
	})
}

// take returns how many of fs, a page after last, continue the replay up
// to cur, and the position of the last of them. A page that does not
// (history with a hole, or in another epoch) breaks s.
func (s *subscription) take(fs []*frame, last, cur Position) (int, Position) {
	n := 0
	for n < len(fs) && fs[n].pos.Seq <= cur.Seq && fs[n].pos == (Position{last.Epoch, last.Seq + 1}) {
		last = fs[n].pos
		n++
	}
	if n < len(fs) && fs[n].pos.Seq <= cur.Seq || n == 0 && last.Seq < cur.Seq {
		s.breakLocked(resetGone)
	}
	return n, last
}

// finishLocked ends s's replay: s is live from now on, after a reset if
// the replay broke.
func (s *subscription) finishLocked() {
	hc, c := s.hc, s.c
	if s.broken {
		c.push(hc.kindOf().resetFrame(hc.last, s.why, c.ws))
		hc.h.stats.reset(s.why)
	}
	s.resuming, s.broken, s.pending, s.pendingBytes = false, false, nil, 0
}

// replayRest is replay's goroutine: it queues rest, the end of a page
// that follows last, and the pages after it up to cur as the client's
// queue makes room, then the publications held meanwhile.
func (h *Hub) replayRest(s *subscription, rest []*frame, last, cur Position) {
	hc, c := s.hc, s.c
	for {
		if !c.pushPaced(s.ctx, rest) {
			return
		}
		h.stats.replayed.Add(int64(len(rest)))
		if last.Seq >= cur.Seq {
			break
		}
		fs, err := hc.page(s.ctx, last)
		if err != nil && s.ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, ErrGone) {
			// The client resumes where it got to once the broker answers.
			c.kill(fmt.Errorf("%w: %w", errUnavailable, err))
			return
		}
		hc.mu.Lock()
		var n int
		if err != nil {
			s.breakLocked(resetGone)
		} else {
			n, last = s.take(fs, last, cur)
		}
		broken := s.broken
		hc.mu.Unlock()
		if broken {
			break
		}
		rest = fs[:n]
	}
	// Hand over to live delivery: queue what was held meanwhile, a batch
	// at a time, until none is left.
	for {
		if !c.waitRoom(s.ctx) {
			return
		}
		hc.mu.Lock()
		held := s.pending
		if s.broken || len(held) == 0 {
			s.finishLocked()
			hc.mu.Unlock()
			return
		}
		s.pending, s.pendingBytes = nil, 0
		hc.mu.Unlock()
		if !c.pushPaced(s.ctx, held) {
			return
		}
	}
}

// holdLocked keeps f, fanned out while s replays history, for after the
// replay. When s holds as much as its connection's queue may, the client
// is too slow for the channel: under SlowReset the replay ends with a
// reset to the newest publication, under SlowDisconnect the connection
// ends and the client resumes from where it got to.
func (s *subscription) holdLocked(f *frame) {
	if s.broken {
		return // the replay ends in a reset to the newest publication
	}
	h := s.hc.h
	if len(s.pending) < h.opts.QueueMessages && s.pendingBytes < h.opts.QueueBytes {
		s.pending = append(s.pending, f)
		s.pendingBytes += f.cost()
		return
	}
	if h.opts.SlowPolicy == SlowReset {
		h.stats.slow.Add(1)
		s.breakLocked(resetSlow)
		return
	}
	s.breakLocked(resetSlow) // nothing more is held for a connection that ends
	s.c.tooSlow()
}

// breakLocked records that s's replay must end in a reset for why: some
// of what it was to send is lost.
func (s *subscription) breakLocked(why string) {
	if !s.broken {
		s.broken, s.why = true, why
	}
	s.pending, s.pendingBytes = nil, 0
}

// knows reports whether the broker's history has p on channel, reading
// one publication at most where it can.
func (h *Hub) knows(ctx context.Context, channel string, p Position) bool {
	_, err := h.history.SincePage(ctx, channel, p, 1, 0)
	return err == nil
}

// historyOf returns the history the hub reads from b: b's own when it
// reads a page at a time; read whole, a page being the whole range, when
// b keeps history but cannot page it; and when b keeps none, noHistory,
// which has every position gone. Resume, catch-up, the control channel's
// holes and States' rebuilds read it without asking whether there is one.
func historyOf(b Broker) PagedHistory {
	switch b := b.(type) {
	case PagedHistory:
		return b
	case History:
		return wholeHistory{b}
	}
	return noHistory{}
}

// wholeHistory reads a History that cannot page, one page being all the
// history after the position asked for.
type wholeHistory struct{ History }

func (w wholeHistory) SincePage(ctx context.Context, channel string, after Position, _, _ int) ([]Message, error) {
	return w.Since(ctx, channel, after)
}

// noHistory is the history of a broker that keeps none: every position
// is gone, so a resuming client gets a reset and a hole is not filled.
type noHistory struct{}

// errNoHistory is noHistory's answer, ErrGone.
var errNoHistory = fmt.Errorf("the broker keeps no history: %w", ErrGone)

func (noHistory) Since(context.Context, string, Position) ([]Message, error) {
	return nil, errNoHistory
}

func (noHistory) SincePage(context.Context, string, Position, int, int) ([]Message, error) {
	return nil, errNoHistory
}
