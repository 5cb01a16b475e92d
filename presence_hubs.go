package live

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Presence between hubs: each hub tells the others sharing its broker what
// changed of its members, on the reserved channel presenceChannel, and
// keeps, sums and expires theirs (see presence.go). It believes only
// messages that carry a hub's meta (meta.go), which no application can
// attach.

// A presenceMsg is what hubs tell each other about presence.
type presenceMsg struct {
	Op   string                `json:"op"` // "diff", "alive", "sync" or "gone"
	From string                `json:"from"`
	To   string                `json:"to,omitempty"` // sync: the hub asked; "" asks all
	Ch   map[string]*shareDiff `json:"ch,omitempty"` // diff: by channel
}

// A shareDiff changes what one hub has of one channel's members.
type shareDiff struct {
	Full bool     `json:"full,omitempty"` // Set replaces all the hub had
	Set  []Member `json:"set,omitempty"`
	Del  []string `json:"del,omitempty"`
}

// run flushes presence for the hub's lifetime: diffs to subscribers and to
// the other hubs at most every presenceInterval, departures when their
// grace ends, and, every third of PresenceTimeout, word that this hub is
// alive, dropping the members of hubs that stopped saying so.
func (p *presence) run() error {
	beat := time.NewTicker(p.timeout / 3)
	defer beat.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		due := p.dueLocked()
		p.mu.Unlock()
		if !due.IsZero() {
			timer.Reset(max(time.Until(due), 0))
		}
		select {
		case <-p.h.done:
			return nil
		case <-beat.C:
			p.sweep(time.Now())
			p.send(presenceMsg{Op: "alive"})
		case <-p.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		p.flush(time.Now())
	}
}

// dueLocked is when the next flush is due: zero when nothing waits.
func (p *presence) dueLocked() time.Time {
	var due time.Time
	if p.dirty || p.full {
		due = p.last.Add(presenceInterval)
	}
	if !p.held.IsZero() && (due.IsZero() || p.held.Before(due)) {
		due = p.held
	}
	return due
}

// flush ends grace windows that are over, then, if the last flush is
// presenceInterval ago, sends subscribers and the other hubs what changed.
func (p *presence) flush(now time.Time) {
	type push struct {
		f     *frame
		conns []*conn
	}
	var pushes []push
	p.mu.Lock()
	if !p.held.IsZero() && !now.Before(p.held) {
		p.expireLocked(now)
	}
	if !(p.dirty || p.full) || now.Sub(p.last) < presenceInterval {
		p.mu.Unlock()
		return
	}
	p.last = now
	p.dirty = false
	msgs := p.outgoingLocked()
	for _, hub := range p.asks {
		msgs = append(msgs, presenceMsg{Op: "sync", To: hub})
	}
	p.asks = nil
	for name, pc := range p.chans {
		if len(pc.changed) > 0 {
			if f := pc.diffFrameLocked(); f != nil && len(pc.conns) > 0 {
				conns := make([]*conn, 0, len(pc.conns))
				for c := range pc.conns {
					conns = append(conns, c)
				}
				pushes = append(pushes, push{f, conns})
			}
		}
		if len(pc.conns) == 0 && len(pc.local) == 0 && len(pc.other) == 0 && len(pc.sent) == 0 && len(pc.shown) == 0 {
			delete(p.chans, name)
		}
	}
	p.mu.Unlock()
	// Frames are pushed outside p.mu, but by this goroutine alone, so each
	// subscriber gets diffs in order; a subscriber that joined meanwhile
	// got a snapshot as of the last flush, which this diff follows.
	for _, ps := range pushes {
		for _, c := range ps.conns {
			c.push(ps.f)
		}
	}
	for _, m := range msgs {
		p.send(m)
	}
}

// outgoingLocked returns the messages that tell the other hubs how this
// hub's shares changed: diffs, or, after a sync request or a failed send,
// every share in full.
func (p *presence) outgoingLocked() []presenceMsg {
	var msgs []presenceMsg
	cur := presenceMsg{Op: "diff", Ch: make(map[string]*shareDiff)}
	size := 0
	add := func(name string, d *shareDiff, bytes int) {
		if size+bytes > presenceChunk && len(cur.Ch) > 0 {
			msgs = append(msgs, cur)
			cur = presenceMsg{Op: "diff", Ch: make(map[string]*shareDiff)}
			size = 0
		}
		cur.Ch[name] = d
		size += bytes
	}
	full := p.full
	p.full = false
	for name, pc := range p.chans {
		if !pc.out && !full {
			continue
		}
		pc.out = false
		share := pc.ownShare()
		d := &shareDiff{Full: full}
		n := 0
		for user, m := range share {
			if was, ok := pc.sent[user]; full || !ok || was.Conns != m.Conns || string(was.Info) != string(m.Info) {
				d.Set = append(d.Set, m)
				n += len(m.User) + len(m.Info) + 32
				if n > presenceChunk {
					// One channel's share in parts: the first replaces,
					// the rest add.
					add(name, d, n)
					d, n = &shareDiff{}, 0
				}
			}
		}
		if !full {
			for user := range pc.sent {
				if _, ok := share[user]; !ok {
					d.Del = append(d.Del, user)
					n += len(user) + 3
				}
			}
		}
		pc.sent = share
		if d.Full || len(d.Set) > 0 || len(d.Del) > 0 {
			add(name, d, n)
		}
	}
	if len(cur.Ch) > 0 {
		msgs = append(msgs, cur)
	}
	return msgs
}

// send publishes m for the other hubs. A diff that fails makes the next
// flush send everything.
func (p *presence) send(m presenceMsg) {
	m.From = p.h.id
	data, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(p.h.ctx, p.timeout/3)
	defer cancel()
	if _, err := p.h.publish(ctx, presenceChannel, data); err != nil && m.Op == "diff" {
		p.mu.Lock()
		p.full = true
		p.dirty = true
		p.mu.Unlock()
	}
}

// apply applies a message from another hub.
func (p *presence) apply(m presenceMsg, now time.Time) {
	if m.From == p.h.id || m.From == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Op == "gone" {
		// Its members leave after the grace window, unless they come
		// back through another hub meanwhile.
		if _, ok := p.hubs[m.From]; ok {
			p.hubs[m.From] = now.Add(p.grace - p.timeout)
		}
		return
	}
	_, known := p.hubs[m.From]
	p.hubs[m.From] = now
	switch m.Op {
	case "alive":
		if !known {
			// New, or back after being taken for dead: ask for its members.
			p.askLocked(m.From)
		}
	case "sync":
		if m.To == "" || m.To == p.h.id {
			p.full = true
			p.dirty = true
			p.signal()
		}
	case "diff":
		for name, d := range m.Ch {
			if d == nil || ValidChannel(name) != nil {
				continue
			}
			pc := p.chanLocked(name)
			if pc == nil {
				continue
			}
			share := pc.other[m.From]
			if share == nil {
				share = make(map[string]Member)
				pc.other[m.From] = share
			}
			if d.Full {
				for user := range share {
					delete(share, user)
					p.sumLocked(pc, user)
				}
			}
			for _, mb := range d.Set {
				if mb.Conns <= 0 || len(mb.Info) > maxInfoBytes {
					continue
				}
				share[mb.User] = mb
				p.sumLocked(pc, mb.User)
			}
			for _, user := range d.Del {
				if _, ok := share[user]; ok {
					delete(share, user)
					p.sumLocked(pc, user)
				}
			}
			if len(share) == 0 {
				delete(pc.other, m.From)
			}
		}
		p.signal()
	}
}

// askLocked asks hub to send its members (all hubs, for ""), with the
// next flush.
func (p *presence) askLocked(hub string) {
	p.asks = append(p.asks, hub)
	p.dirty = true
	p.signal()
}

// sweep drops the members of hubs not heard from within PresenceTimeout.
func (p *presence) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for hub, seen := range p.hubs {
		if now.Sub(seen) < p.timeout {
			continue
		}
		delete(p.hubs, hub)
		for _, pc := range p.chans {
			share := pc.other[hub]
			delete(pc.other, hub)
			for user := range share {
				p.sumLocked(pc, user)
			}
		}
	}
	p.signal()
}

// follow follows the other hubs' presence messages for the hub's
// lifetime. When it starts, and after any hole in what the broker
// delivered, it asks every hub for its members again.
func (p *presence) follow() error {
	var (
		mu sync.Mutex // guards tr
		tr trail
	)
	askAll := func() {
		p.mu.Lock()
		p.askLocked("")
		p.mu.Unlock()
	}
	ready := func(head Position) {
		mu.Lock()
		first, from, to := tr.ready(head)
		mu.Unlock()
		if first || from != to {
			askAll()
		}
	}
	deliver := func(m Message) {
		mu.Lock()
		seen, from, to := tr.next(m.Pos)
		mu.Unlock()
		if seen {
			return
		}
		if from != to {
			askAll()
		}
		var msg presenceMsg
		if _, fromHub := readMeta(m); !fromHub || json.Unmarshal(m.Data, &msg) != nil {
			return // only what a hub sent tells of members
		}
		p.apply(msg, time.Now())
	}
	return p.h.follow(presenceChannel, ready, deliver, nil)
}

// expireLocked ends the grace windows that are over by now, and notes when
// the next one ends.
func (p *presence) expireLocked(now time.Time) {
	p.held = time.Time{}
	for _, pc := range p.chans {
		for user, m := range pc.local {
			expired := 0
			for expired < len(m.held) && !m.held[expired].After(now) {
				expired++
			}
			if expired > 0 {
				before := pc.weight(user)
				m.held = m.held[expired:]
				if len(m.held) == 0 {
					m.held = nil
				}
				pc.ownN += pc.weight(user) - before
				if m.count() == 0 {
					delete(pc.local, user)
				}
				p.ownChangedLocked(pc, user)
			}
			if len(m.held) > 0 && (p.held.IsZero() || m.held[0].Before(p.held)) {
				p.held = m.held[0]
			}
		}
	}
}
