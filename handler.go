package live

import "net/http"

// ServeHTTP serves the whole protocol under one prefix, for example
//
//	mux.Handle("/live/", hub)
//
// GET /live/{channel} streams the channel as SSE and GET
// /live/?channels=a,b several on one stream; a WebSocket upgrade at
// /live/ opens a multiplexed connection; POST /live/{channel} publishes
// the request body; OPTIONS answers CORS preflights. The channel is the
// {channel} path value when the pattern has one, otherwise the last path
// segment.
//
// A URL that names a channel serves that channel only: ?channels= and
// WebSocket upgrades there are refused with 400, and no query parameter
// picks another channel. A guard that protects a route by its path
// therefore protects what the hub serves on it; multiplexed streams and
// WebSockets, at URLs that name no channel, rely on Options.Authorize.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isWebSocket(r) {
		if ch := pathChannel(r); ch != "" {
			refuseChannelSocket(w, ch)
			return
		}
		h.serveWS(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.serveSSE(w, r)
	case http.MethodPost:
		h.servePublish(w, r)
	case http.MethodOptions:
		h.servePreflight(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not supported here")
	}
}

// SSEHandler returns a handler that streams Server-Sent Events: one
// channel at a route with a {channel} wildcard, for example
// "GET /api/live/{channel}", and several (?channels=a,b, the multiplexed
// stream live.js falls back to) at a route without one, for example
// "GET /api/live". A route with {channel} streams only that channel:
// ?channels= there is refused with 400. (On routers that set no
// Request.Pattern, the last path segment names the channel, and the
// multiplexed stream is served at a path ending in "/".)
func (h *Hub) SSEHandler() http.Handler { return http.HandlerFunc(h.serveSSE) }

// WebSocketHandler returns a handler that accepts multiplexed WebSocket
// connections, for example at "GET /ws". It refuses upgrades on a route
// with a {channel} wildcard: a WebSocket may ask for any channel, which
// would walk around a guard on the route's path.
func (h *Hub) WebSocketHandler() http.Handler { return http.HandlerFunc(h.serveWS) }

// PublishHandler returns a handler that publishes a POSTed JSON body on
// a channel, for example at "POST /api/live/{channel}". It also answers
// OPTIONS preflights for cross-origin publishers.
func (h *Hub) PublishHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			h.servePreflight(w, r)
			return
		}
		h.servePublish(w, r)
	})
}
