package live

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live/internal/inspectlink"
)

// What package inspect shows of a hub, and of the hubs sharing its broker:
// each hub keeps a bounded ring of the refusals and errors it met, and
// counts the publications each channel fans out (one atomic add). Every
// beat carries a small summary of the hub (inspectlink.Node); while an
// inspector watches, the beats of the hub running it carry an Ask, and
// for a few beats after reading one every hub describes itself in detail:
// its busiest channels, the connections of the users asked about and its
// recent refusals.

func init() {
	inspectlink.Cluster = func(h any, users []string) []inspectlink.Node {
		return h.(*Hub).inspectCluster(users)
	}
}

// askFresh is how long a hub answers an ask, or keeps asking after its
// inspector was last read.
func askFresh() time.Duration { return 3 * hubBeat }

// inspection is a hub's state for inspectors.
type inspection struct {
	started time.Time // set by NewHub

	mu     sync.Mutex
	events [inspectlink.MaxEvents]inspectlink.Event // a ring: the newest at (next-1)%len
	next   int
	count  int
	own    map[string]time.Time // users this hub's inspector asks about, by when
	ownAt  time.Time            // when this hub's inspector was last read; zero when never
	asks   map[string]time.Time // users other hubs ask about, "" for detail alone, by when asked
	lastAt time.Time            // when the last detail was taken
	lastP  int64                // Published then
	lastC  map[string]int64     // each channel's publications then
}

// note records a refusal or an error for inspectors.
func (h *Hub) note(kind, detail, channel, remote string) {
	in := &h.insp
	in.mu.Lock()
	in.events[in.next] = inspectlink.Event{At: time.Now(), Kind: kind, Detail: cut(detail, 300), Channel: cut(channel, 200), Remote: cut(remote, 100)}
	in.next = (in.next + 1) % len(in.events)
	in.count = min(in.count+1, len(in.events))
	in.mu.Unlock()
}

// noteRefusal records an Authorize refusal.
func (h *Hub) noteRefusal(r *http.Request, channel string, op Op, msg string) {
	remote := ""
	if r != nil {
		remote = r.RemoteAddr
	}
	h.note("authorize", string(op)+": "+msg, channel, remote)
}

// asked takes in another hub's ask: this hub describes itself in detail
// in its beats for a while, at once when the ask is new.
func (h *Hub) asked(users []string) {
	in := &h.insp
	now := time.Now()
	in.mu.Lock()
	if in.asks == nil {
		in.asks = make(map[string]time.Time)
	}
	fresh := false
	users = users[:min(len(users), inspectlink.MaxUsers)]
	for _, u := range append(users[:len(users):len(users)], "") {
		if at, ok := in.asks[u]; !ok || now.Sub(at) >= askFresh() {
			fresh = true
		}
		if len(in.asks) < 4*inspectlink.MaxUsers || in.asks[u] != (time.Time{}) {
			in.asks[u] = now
		}
	}
	in.mu.Unlock()
	if fresh {
		h.roster.beatNow()
	}
}

// beatNow asks the beat loop for a beat at once.
func (ro *roster) beatNow() {
	select {
	case ro.wake <- struct{}{}:
	default:
	}
}

// beatInfo is what a beat says of the hub: a summary, in detail while
// some hub asks; and the hub's own ask while its inspector is read.
func (h *Hub) beatInfo(now time.Time) (*inspectlink.Node, *inspectlink.Ask) {
	in := &h.insp
	in.mu.Lock()
	var users []string
	detail := false
	for u, at := range in.asks {
		if now.Sub(at) >= askFresh() {
			delete(in.asks, u)
			continue
		}
		detail = true
		if u != "" && len(users) < inspectlink.MaxUsers {
			users = append(users, u)
		}
	}
	var ask *inspectlink.Ask
	if !in.ownAt.IsZero() && now.Sub(in.ownAt) < askFresh() {
		ask = &inspectlink.Ask{}
		for u, at := range in.own {
			if now.Sub(at) >= askFresh() {
				delete(in.own, u)
			} else if len(ask.Users) < inspectlink.MaxUsers {
				ask.Users = append(ask.Users, u)
			}
		}
	}
	in.mu.Unlock()
	n := h.describe(detail, users)
	fitBeat(&n)
	return &n, ask
}

// maxBeatInfo bounds the bytes a beat's Info takes, so that details never
// make a beat too large for the broker.
const maxBeatInfo = 32 << 10

// fitBeat trims n's details until it fits in maxBeatInfo: channels listed
// per connection first, then connections, events and channels.
func fitBeat(n *inspectlink.Node) {
	for _, conns := range n.Users {
		for i := range conns {
			if len(conns[i].Channels) > 20 {
				conns[i].Channels = conns[i].Channels[:20]
			}
		}
	}
	for range 24 {
		b, _ := json.Marshal(n)
		if len(b) <= maxBeatInfo {
			return
		}
		trimmed := false
		for u, conns := range n.Users {
			if len(conns) > 1 {
				n.Users[u] = conns[:len(conns)/2]
				trimmed = true
			}
		}
		switch {
		case trimmed:
		case len(n.Events) > 1:
			n.Events = n.Events[:len(n.Events)/2]
		case len(n.Busiest) > 1:
			n.Busiest = n.Busiest[:len(n.Busiest)/2]
		default:
			n.Users, n.Events, n.Busiest = nil, nil, nil
			return
		}
	}
	n.Users, n.Events, n.Busiest = nil, nil, nil
}

// cut shortens s to at most n bytes, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// inspectCluster describes this hub in detail, with the connections of
// users, and the others as their beats last did, and asks them for
// details.
func (h *Hub) inspectCluster(users []string) []inspectlink.Node {
	users = slices.Clone(users[:min(len(users), inspectlink.MaxUsers)])
	slices.Sort(users)
	users = slices.Compact(users)
	in := &h.insp
	in.mu.Lock()
	now := time.Now()
	changed := in.ownAt.IsZero() || now.Sub(in.ownAt) >= askFresh()
	if in.own == nil {
		in.own = make(map[string]time.Time)
	}
	for _, u := range users {
		if at, ok := in.own[u]; !ok || now.Sub(at) >= askFresh() {
			changed = true
		}
		if len(in.own) < 4*inspectlink.MaxUsers || in.own[u] != (time.Time{}) {
			in.own[u] = now
		}
	}
	in.ownAt = now
	in.mu.Unlock()
	if changed && !h.ownBroker {
		h.roster.beatNow()
	}
	nodes := []inspectlink.Node{h.describe(true, users)}
	nodes[0].Self = true
	ro := h.roster
	ro.mu.Lock()
	for id, p := range ro.peers {
		n := inspectlink.Node{ID: id}
		if p.info != nil {
			n = *p.info
			n.ID = id
		}
		n.Seen = p.seen
		nodes = append(nodes, n)
	}
	ro.mu.Unlock()
	sort.Slice(nodes[1:], func(i, j int) bool { return nodes[1+i].ID < nodes[1+j].ID })
	return nodes
}

// describe describes the hub: a summary, and with detail its busiest
// channels, the connections of users and its recent refusals and errors.
func (h *Hub) describe(detail bool, users []string) inspectlink.Node {
	s := &h.stats
	n := inspectlink.Node{
		ID:            h.id,
		Started:       h.insp.started,
		Connections:   s.connections.Load(),
		ConnectionsBy: make(map[string]int64, numTransports),
		Subscriptions: s.subscriptions.Load(),
		Published:     s.published.Load(),
		Draining:      h.isDraining(),
	}
	for i, name := range transports {
		n.ConnectionsBy[name] = s.connsBy[i].Load()
	}
	type chanCount struct {
		name string
		refs int
		pubs int64
	}
	var chans []chanCount
	h.mu.Lock()
	n.Channels = int64(len(h.channels))
	if detail {
		chans = make([]chanCount, 0, len(h.channels))
		for name, hc := range h.channels {
			if !reserved(name) {
				chans = append(chans, chanCount{name, hc.refs, hc.pubs.Load()})
			}
		}
	}
	h.mu.Unlock()
	if !detail {
		return n
	}
	n.Detail = true

	// Rates since the last detail taken.
	in := &h.insp
	now := time.Now()
	in.mu.Lock()
	dt := now.Sub(in.lastAt).Seconds()
	rates := make(map[string]float64, len(chans))
	if !in.lastAt.IsZero() && dt > 0.05 {
		n.PubRate = float64(n.Published-in.lastP) / dt
		for _, c := range chans {
			if prev, ok := in.lastC[c.name]; ok && c.pubs >= prev {
				rates[c.name] = float64(c.pubs-prev) / dt
			}
		}
	}
	if in.lastAt.IsZero() || dt >= 0.5 {
		in.lastAt, in.lastP = now, n.Published
		in.lastC = make(map[string]int64, len(chans))
		for _, c := range chans {
			in.lastC[c.name] = c.pubs
		}
	}
	for i := range in.count {
		e := in.events[(in.next-1-i+2*len(in.events))%len(in.events)]
		n.Events = append(n.Events, e)
	}
	in.mu.Unlock()

	// The busiest: the first by subscribers, then the first by rate.
	pick := make(map[string]bool)
	sort.Slice(chans, func(i, j int) bool {
		if chans[i].refs != chans[j].refs {
			return chans[i].refs > chans[j].refs
		}
		return chans[i].name < chans[j].name
	})
	for _, c := range chans[:min(len(chans), inspectlink.MaxChannels)] {
		pick[c.name] = true
	}
	sort.SliceStable(chans, func(i, j int) bool { return rates[chans[i].name] > rates[chans[j].name] })
	for _, c := range chans[:min(len(chans), inspectlink.MaxChannels)] {
		if rates[c.name] > 0 {
			pick[c.name] = true
		}
	}
	for _, c := range chans {
		if pick[c.name] {
			n.Busiest = append(n.Busiest, inspectlink.Channel{Name: c.name, Subscribers: c.refs, Rate: rates[c.name]})
		}
	}
	sort.Slice(n.Busiest, func(i, j int) bool {
		a, b := n.Busiest[i], n.Busiest[j]
		if a.Subscribers != b.Subscribers {
			return a.Subscribers > b.Subscribers
		}
		return a.Rate > b.Rate
	})

	if len(users) > 0 {
		want := make(map[string]bool, len(users))
		for _, u := range users {
			want[u] = true
		}
		n.Users = make(map[string][]inspectlink.Conn, len(users))
		for _, c := range h.connections() {
			if c.id == nil || !want[c.id.User] || len(n.Users[c.id.User]) >= inspectlink.MaxConns {
				continue
			}
			c.mu.Lock()
			subs := make([]string, 0, len(c.subs))
			for name := range c.subs {
				subs = append(subs, name)
			}
			c.mu.Unlock()
			slices.Sort(subs)
			n.Users[c.id.User] = append(n.Users[c.id.User], inspectlink.Conn{
				Key: c.key, User: c.id.User, Transport: transports[c.tr], Remote: c.ip, Channels: subs,
			})
		}
	}
	return n
}
