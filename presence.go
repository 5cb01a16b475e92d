package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Presence: who is subscribed to a channel. Each hub counts its own
// subscribers by user, keeps a departed user for a grace window (so that a
// reload or a reconnection is no leave and join), and tells the other hubs
// sharing its broker what changed, at most every presenceInterval, on the
// reserved channel presenceChannel. Every hub keeps every other hub's
// members of every presence channel and sums them; a hub that says nothing
// for PresenceTimeout (it says it is alive every third of that) is taken
// for dead and its members are dropped. Subscribers get a snapshot when
// they subscribe and diffs after, also at most every presenceInterval.

// PresenceMode says what the subscribers of a channel see of each other;
// see [Options].Presence.
type PresenceMode int

const (
	// PresenceOff: subscribers see nothing of each other.
	PresenceOff PresenceMode = iota

	// PresenceMembers: subscribers get the members (users, their public
	// Info and connection counts) and how many are here.
	PresenceMembers

	// PresenceCount: subscribers get only how many are here, for
	// audiences too large to list.
	PresenceCount
)

// A Member is a user subscribed to a channel, on any hub sharing the
// broker.
type Member struct {
	User string `json:"user"`
	// Info is the user's public record, Identity.Info as JSON.
	Info json.RawMessage `json:"info,omitempty"`
	// Conns counts the user's connections to the channel (two tabs, a
	// phone); one that left within the grace window still counts.
	Conns int `json:"conns"`
}

// ErrNoPresence reports a channel that Options.Presence did not opt in.
var ErrNoPresence = errors.New("live: channel has no presence")

const (
	// presenceChannel carries the hubs' presence messages.
	presenceChannel = reservedPrefix + "presence"
	// presenceInterval spaces the diffs a channel's subscribers get, and
	// those a hub sends the others: a join storm becomes a diff per
	// interval.
	presenceInterval = 100 * time.Millisecond
	// presenceChunk bounds one presence message between hubs; a larger
	// one is sent in parts.
	presenceChunk = 128 << 10
)

// presence is a hub's side of presence.
type presence struct {
	h       *Hub
	grace   time.Duration
	timeout time.Duration
	wake    chan struct{}

	mu    sync.Mutex
	chans map[string]*presenceChan
	hubs  map[string]time.Time // the other hubs heard from, and when last
	dirty bool                 // some channel has changes to flush
	full  bool                 // send this hub's whole share next
	asks  []string             // hubs to ask for their members ("" for all)
	// held is when the first grace window ends, zero when none runs: the
	// flush walks the members only then.
	held time.Time
	last time.Time // the latest flush
}

// A presenceChan is one presence channel as a hub knows it.
type presenceChan struct {
	name string
	mode PresenceMode

	conns map[*conn]struct{}      // this hub's subscribers
	local map[string]*localMember // this hub's members by user; "" is anonymous
	sent  map[string]Member       // this hub's share as the other hubs were told it
	other map[string]map[string]Member
	all   map[string]Member // every hub's members, summed

	shown      map[string]Member // the members as subscribers were told them
	shownCount int
	snap       *frame              // the snapshot of shown, shared by those who join until it changes
	changed    map[string]struct{} // users whose sum changed since the last flush
	out        bool                // this hub's share changed since it was sent
	ownN       int                 // on a count channel, this hub's members
	// text renders the members as Options.PresenceText's SSE event, nil
	// without one.
	text func(members []Member, count int) []byte
}

// A localMember is a user's connections to a channel on this hub.
type localMember struct {
	info  json.RawMessage
	conns int
	held  []time.Time // connections gone, each counted until its grace ends
}

func (m *localMember) count() int { return m.conns + len(m.held) }

// weight is what user's connections add to a count channel's number.
func (pc *presenceChan) weight(user string) int {
	m := pc.local[user]
	switch {
	case m == nil:
		return 0
	case user == "":
		return m.count()
	case m.count() > 0:
		return 1
	}
	return 0
}

func newPresence(h *Hub) *presence {
	p := &presence{
		h:       h,
		grace:   h.opts.PresenceGrace,
		timeout: h.opts.PresenceTimeout,
		wake:    make(chan struct{}, 1),
		chans:   make(map[string]*presenceChan),
		hubs:    make(map[string]time.Time),
	}
	return p
}

func (p *presence) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// chanLocked returns the channel's presence, made if needed, or nil when
// the channel has none.
func (p *presence) chanLocked(name string) *presenceChan {
	if pc := p.chans[name]; pc != nil {
		return pc
	}
	mode := p.h.opts.Presence(name)
	if mode != PresenceMembers && mode != PresenceCount {
		return nil
	}
	pc := &presenceChan{
		name:    name,
		mode:    mode,
		conns:   make(map[*conn]struct{}),
		local:   make(map[string]*localMember),
		sent:    make(map[string]Member),
		other:   make(map[string]map[string]Member),
		all:     make(map[string]Member),
		shown:   make(map[string]Member),
		changed: make(map[string]struct{}),
	}
	if p.h.opts.PresenceText != nil {
		pc.text = func(members []Member, count int) []byte { return p.h.presenceText(name, members, count) }
	}
	p.chans[name] = pc
	return pc
}

// join counts c among the channel's members and sends c the snapshot.
func (p *presence) join(c *conn, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.chanLocked(name)
	if pc == nil {
		return
	}
	if _, ok := pc.conns[c]; ok {
		return
	}
	pc.conns[c] = struct{}{}
	user, info := "", json.RawMessage(nil)
	if c.id != nil {
		user = c.id.User
		info, _ = c.id.Info.(json.RawMessage)
	}
	if user == "" {
		info = nil
	}
	m := pc.local[user]
	if m == nil {
		m = &localMember{}
		pc.local[user] = m
	}
	m.info = info
	before := pc.weight(user)
	if n := len(m.held); n > 0 {
		// Back within the grace window: no leave, no join.
		m.held = m.held[:n-1]
	}
	m.conns++
	pc.ownN += pc.weight(user) - before
	p.ownChangedLocked(pc, user)
	c.push(pc.snapshotFrame())
}

// leave stops counting c among the channel's members; the user stays for
// the grace window.
func (p *presence) leave(c *conn, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.chans[name]
	if pc == nil {
		return
	}
	if _, ok := pc.conns[c]; !ok {
		return
	}
	delete(pc.conns, c)
	user := ""
	if c.id != nil {
		user = c.id.User
	}
	m := pc.local[user]
	if m == nil {
		return
	}
	m.conns--
	until := time.Now().Add(p.grace)
	m.held = append(m.held, until)
	if p.held.IsZero() || until.Before(p.held) {
		p.held = until
	}
	p.signal()
}

// ownChangedLocked records that this hub's count of user on pc changed.
func (p *presence) ownChangedLocked(pc *presenceChan, user string) {
	pc.out = true
	p.sumLocked(pc, user)
	p.dirty = true
	p.signal()
}

// ownShare is this hub's members of pc as the other hubs are told them:
// each user with their connections, or, on a count channel, one anonymous
// entry with the number of members.
func (pc *presenceChan) ownShare() map[string]Member {
	if pc.mode == PresenceCount {
		share := make(map[string]Member, 1)
		if pc.ownN > 0 {
			share[""] = Member{Conns: pc.ownN}
		}
		return share
	}
	share := make(map[string]Member, len(pc.local))
	for user, m := range pc.local {
		if n := m.count(); n > 0 {
			share[user] = Member{User: user, Info: m.info, Conns: n}
		}
	}
	return share
}

// ownMember is this hub's entry for user, as ownShare has it.
func (pc *presenceChan) ownMember(user string) (Member, bool) {
	if pc.mode == PresenceCount {
		return Member{Conns: pc.ownN}, user == "" && pc.ownN > 0
	}
	m := pc.local[user]
	if m == nil || m.count() == 0 {
		return Member{}, false
	}
	return Member{User: user, Info: m.info, Conns: m.count()}, true
}

// sumLocked recomputes the sum of user over every hub.
func (p *presence) sumLocked(pc *presenceChan, user string) {
	if pc.mode == PresenceCount {
		user = ""
	}
	sum, ok := pc.ownMember(user)
	for _, share := range pc.other {
		if m, in := share[user]; in {
			if !ok {
				sum, ok = m, true
				continue
			}
			sum.Conns += m.Conns
		}
	}
	if ok {
		pc.all[user] = sum
	} else {
		delete(pc.all, user)
	}
	pc.changed[user] = struct{}{}
	p.dirty = true
}

// count is the number of members: the users, plus each anonymous
// connection.
func presenceCount(members map[string]Member) int {
	n := len(members)
	if m, ok := members[""]; ok {
		n += m.Conns - 1
	}
	return n
}

func byUser(a, b Member) int { return strings.Compare(a.User, b.User) }

// sortedMembers returns the named members by user.
func sortedMembers(members map[string]Member) []Member {
	list := make([]Member, 0, len(members))
	for user, m := range members {
		if user != "" {
			list = append(list, m)
		}
	}
	slices.SortFunc(list, byUser)
	return list
}

// A presenceBody is a presence frame:
//
//	{"type":"presence","channel":"c","members":[…],"count":3}   snapshot
//	{"type":"presence","channel":"c","join":[…],"leave":["u"],"count":3}   diff
//	{"type":"presence","channel":"c","count":1284}   count channels, both
//
// Snapshots carry a tag, which long-pollers send back so that an
// unchanged snapshot is no news.
type presenceBody struct {
	Type    string    `json:"type"`
	Channel string    `json:"channel"`
	Members *[]Member `json:"members,omitempty"`
	Join    []Member  `json:"join,omitempty"`
	Leave   []string  `json:"leave,omitempty"`
	Count   int       `json:"count"`
	Tag     string    `json:"tag,omitempty"`
}

// frame encodes b for both transports: one-channel SSE streams get it as
// a named "presence" event, which EventSource.onmessage does not see.
func (b presenceBody) frame() *frame {
	ws, _ := json.Marshal(b)
	sse := make([]byte, 0, len(ws)+40)
	sse = append(sse, "event: presence\ndata: "...)
	sse = append(sse, ws...)
	sse = append(sse, "\n\n"...)
	return &frame{channel: b.Channel, ws: ws, sse: sse, tag: b.Tag}
}

// snapshotFrame is the members as subscribers were last told them. Those
// who join between two changes share one.
func (pc *presenceChan) snapshotFrame() *frame {
	if pc.snap != nil {
		return pc.snap
	}
	b := presenceBody{Type: "presence", Channel: pc.name, Count: pc.shownCount}
	var list []Member
	if pc.mode == PresenceMembers {
		list = sortedMembers(pc.shown)
		b.Members = &list
	}
	h := fnv.New64a()
	tagged, _ := json.Marshal(b)
	h.Write(tagged)
	b.Tag = strconv.FormatUint(h.Sum64(), 36)
	pc.snap = b.frame()
	pc.appendText(pc.snap, list)
	return pc.snap
}

// diffFrameLocked moves what subscribers were told to the sums and returns
// the frame that says so, or nil when nothing they see changed.
func (pc *presenceChan) diffFrameLocked() *frame {
	b := presenceBody{Type: "presence", Channel: pc.name}
	for user := range pc.changed {
		now, in := pc.all[user]
		was, had := pc.shown[user]
		switch {
		case in:
			pc.shown[user] = now
		case had:
			delete(pc.shown, user)
		}
		if pc.mode != PresenceMembers || user == "" {
			continue
		}
		switch {
		case in && (!had || was.Conns != now.Conns || string(was.Info) != string(now.Info)):
			b.Join = append(b.Join, now)
		case !in && had:
			b.Leave = append(b.Leave, user)
		}
	}
	clear(pc.changed)
	b.Count = presenceCount(pc.shown)
	if b.Join == nil && b.Leave == nil && b.Count == pc.shownCount {
		return nil
	}
	pc.shownCount = b.Count
	pc.snap = nil
	slices.SortFunc(b.Join, byUser)
	slices.Sort(b.Leave)
	f := b.frame()
	var list []Member
	if pc.text != nil && pc.mode == PresenceMembers {
		list = sortedMembers(pc.shown)
	}
	pc.appendText(f, list)
	return f
}

// appendText appends to f's SSE encoding the members, as they are shown,
// rendered by Options.PresenceText.
func (pc *presenceChan) appendText(f *frame, list []Member) {
	if pc.text == nil {
		return
	}
	if pc.mode == PresenceMembers && list == nil {
		list = []Member{}
	}
	f.sse = append(f.sse, pc.text(list, pc.shownCount)...)
}

// members returns a channel's members and count as this hub knows them.
func (p *presence) members(name string) (PresenceMode, []Member, int) {
	mode := p.h.opts.Presence(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.chans[name]
	if pc == nil {
		return mode, nil, 0
	}
	if pc.mode == PresenceCount {
		return pc.mode, nil, presenceCount(pc.all)
	}
	return pc.mode, sortedMembers(pc.all), presenceCount(pc.all)
}

// Members returns who is subscribed to channel on every Hub sharing the
// broker, by user, and how many are subscribed (users plus anonymous
// connections), as this Hub knows it: changes reach it within
// milliseconds, and a Hub that just started learns the others' members
// within a round trip to the broker. On a PresenceCount channel members
// is nil. It returns ErrNoPresence for a channel that Options.Presence
// did not opt in.
func (h *Hub) Members(ctx context.Context, channel string) (members []Member, n int, err error) {
	if h.presence == nil {
		return nil, 0, fmt.Errorf("live: members of %q: %w", channel, ErrNoPresence)
	}
	mode, members, n := h.presence.members(channel)
	if mode != PresenceMembers && mode != PresenceCount {
		return nil, 0, fmt.Errorf("live: members of %q: %w", channel, ErrNoPresence)
	}
	if mode == PresenceMembers && members == nil {
		members = []Member{} // nobody yet, which is not "not listed"
	}
	return members, n, ctx.Err()
}

// servePresence answers GET <channel URL>?presence with the channel's
// members, for a client the caller has authorized to subscribe:
//
//	{"channel":"c","members":[{"user":"ann","info":{…},"conns":2}],"count":3}
func (h *Hub) servePresence(w http.ResponseWriter, r *http.Request, channel string) {
	members, n, err := h.Members(r.Context(), channel)
	if err != nil {
		writeError(w, http.StatusNotFound, "no_presence", "channel "+clip(channel)+" has no presence")
		return
	}
	body := struct {
		Channel string    `json:"channel"`
		Members *[]Member `json:"members,omitempty"`
		Count   int       `json:"count"`
	}{Channel: channel, Count: n}
	if members != nil {
		body.Members = &members
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(body)
}

// goodbye tells the other hubs that this one is going, so that its members
// leave after the grace window rather than after PresenceTimeout.
func (p *presence) goodbye(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	data, _ := json.Marshal(presenceMsg{Op: "gone", From: p.h.id})
	p.h.broker.Publish(ctx, presenceChannel, data)
}
