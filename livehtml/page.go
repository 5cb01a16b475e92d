package livehtml

import (
	"context"
	"html/template"
	"net/url"

	"github.com/go-live/live"
)

// A Page is what one view of a server-rendered page needs to stream a
// channel: the channel's position when the page was rendered, so that
// its stream sends everything after it and nothing before, and an id for
// the page's connection, so that its own writes can skip it (see
// [Hook]). Make one per page view, before reading what the page shows.
type Page struct {
	// Cursor is the channel's head when the page was rendered: the
	// stream URL's ?cursor=.
	Cursor string
	// Connection names the page's stream (?connection=) and its writes
	// (the live.ConnectionHeader, Live-Connection).
	Connection string
}

// NewPage reads channel's head ([live.Hub.Head]) and mints a connection
// id ([live.NewConnectionID]) for a page about to be rendered.
func NewPage(ctx context.Context, hub *live.Hub, channel string) (Page, error) {
	pos, err := hub.Head(ctx, channel)
	if err != nil {
		return Page{}, err
	}
	return Page{Cursor: pos.String(), Connection: live.NewConnectionID()}, nil
}

// Query returns the stream URL's query, "cursor=…&connection=…", as a
// template.URL, so that html/template leaves its = and & alone:
//
//	<div hx-ext="sse" sse-connect="/live/feed?{{.Live.Query}}">
func (p Page) Query() template.URL {
	q := url.Values{}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	if p.Connection != "" {
		q.Set("connection", p.Connection)
	}
	return template.URL(q.Encode())
}

// Headers returns the JSON object of headers a page's writes send, for
// htmx's hx-headers:
//
//	<body hx-headers='{{.Live.Headers}}'>
func (p Page) Headers() string {
	return `{"` + live.ConnectionHeader + `":"` + p.Connection + `"}`
}
