// Package inspectlink joins package live and package inspect: live fills
// in Cluster, and describes each hub in these types, which its beats
// carry to the other hubs sharing the broker (as additive JSON fields,
// which older hubs ignore).
package inspectlink

import "time"

// Bounds of what a hub describes of itself.
const (
	MaxChannels = 20 // busiest channels, by subscribers and by publications
	MaxUsers    = 8  // users asked about at once
	MaxConns    = 50 // connections listed per user
	MaxEvents   = 50 // refusals and errors kept
)

// A Node describes one hub.
type Node struct {
	ID            string           `json:"id"`
	Self          bool             `json:"self,omitempty"`
	Started       time.Time        `json:"started,omitzero"`
	Seen          time.Time        `json:"seen,omitzero"` // when its last beat arrived (others only)
	Connections   int64            `json:"conns"`
	ConnectionsBy map[string]int64 `json:"connsBy"`
	Subscriptions int64            `json:"subs"`
	Channels      int64            `json:"channels"`
	Published     int64            `json:"published"`
	// Detail: set when the fields below were filled, for an inspector
	// that asked.
	Detail   bool              `json:"detail,omitempty"`
	PubRate  float64           `json:"pubRate,omitempty"` // publications per second through this hub since its previous detail
	Busiest  []Channel         `json:"busiest,omitempty"`
	Users    map[string][]Conn `json:"users,omitempty"`
	Events   []Event           `json:"events,omitempty"`
	Draining bool              `json:"draining,omitempty"`
}

// A Channel is one channel as a hub sees it.
type Channel struct {
	Name        string  `json:"name"`
	Subscribers int     `json:"subscribers"`
	Rate        float64 `json:"rate"` // publications per second fanned out here
}

// A Conn is one client connection.
type Conn struct {
	Key       string   `json:"key"`
	User      string   `json:"user"`
	Transport string   `json:"transport"`
	Remote    string   `json:"remote"`
	Channels  []string `json:"channels"`
}

// An Event is a refusal or an error the hub met.
type Event struct {
	At      time.Time `json:"at,omitzero"`
	Kind    string    `json:"kind"` // "authorize", "identify", "origin", "slow", "broker"
	Detail  string    `json:"detail"`
	Channel string    `json:"channel,omitempty"`
	Remote  string    `json:"remote,omitempty"`
}

// An Ask travels in an inspecting hub's beats: the hubs that read it
// describe themselves in detail in their beats for a while, with the
// connections of Users.
type Ask struct {
	Users []string `json:"users,omitempty"`
}

// Cluster describes the hub h (a *live.Hub) and every hub sharing its
// broker, as their last beats told, and asks them for details with the
// connections of users. Package live sets it.
var Cluster func(h any, users []string) []Node
