// Package live adds live updates to an existing Go web application:
// dashboards whose numbers move, feeds that grow, lists several people edit
// at once. A [Hub] streams channels to browsers over Server-Sent Events and
// WebSocket, publishes from server code, and lets clients that lost their
// connection resume without losing anything.
//
// # Mount
//
// Use [NewHub] and mount the result on your mux, either under one prefix
//
//	hub := live.NewHub(nil)
//	mux.Handle("GET /live/", hub)
//	mux.Handle("POST /live/", hub)
//
// or at separate paths, as a React app written for WebSocket at /ws and
// EventSource at /api/live/{channel} expects:
//
//	mux.Handle("GET /ws", hub.WebSocketHandler())
//	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
//	mux.Handle("GET /api/live", hub.SSEHandler()) // ?channels=a,b
//	mux.Handle("POST /api/live/{channel}", hub.PublishHandler())
//
// A URL that names a channel serves that channel only, so middleware that
// guards a route by r.PathValue("channel") guards what the hub serves
// there. WebSockets and multiplexed streams, at URLs that name no
// channel, ask [Options].Authorize for each channel.
//
// Call [Hub.Close] when the server shuts down; see its example.
//
// # Publish
//
// Publish from handlers, jobs or anywhere else with [Hub.Publish]:
//
//	hub.Publish(ctx, "metrics:dashboard", map[string]int{"users": 42})
//
// Every subscriber of the channel receives the value as JSON: the data of
// an SSE event, or the data field of a WebSocket frame
// {"type":"data","channel":…,"data":…,"cursor":…}. Clients may publish too
// (WebSocket "publish" frames, HTTP POST) once [Options].Authorize allows
// it; by default they may only subscribe.
//
// # Publish after your handlers succeed
//
// Wrap mutating CRUD handlers with [Hub.Hook]: after a 2xx response a POST
// publishes {"type":"add","item":<response body>}, PUT and PATCH "update",
// DELETE {"type":"remove","id":…} — what React's useLiveList applies.
// Nothing is published on errors, and the response reaches the client
// before the broadcast. Clients send [MutationIDHeader] to match the
// broadcast to their optimistic item, and a retry with it runs nothing
// again and gets the first response, if [Options].Identify names its user
// (see [HookOptions].RetryWindow); bulk handlers call [SetEvent] once;
// [HookOptions].Version and [WriteConflict] refuse stale writes.
//
// # Keep state
//
// Use [Hub.State] for a value the server keeps, such as a board or a
// document: [State.Apply] and [State.Set] publish only what changed, as
// versioned deltas {"version":N,"changes":[…]}, and the State serves
// {"data":…,"version":N} for the first fetch. The merge strategies
// ([MergeShallow], [MergePatch], [MergeList], [ApplyDelta], [Diff]) are the
// ones the browser client applies, checked against shared test vectors.
// [State.ApplyIf], [State.SetIf] and If-Match are decided by a
// [Conditional] broker, so a stale write is refused on every node.
//
// # Resume
//
// The [Broker] numbers each channel's publications and keeps recent ones.
// Every event carries its cursor ([Position.String]). An EventSource sends
// the last one back by itself when it reconnects; a WebSocket client puts
// it in its subscribe frame. The Hub then replays what was missed, exactly
// once and in order, before going live. When that is impossible (the
// client was away too long, the broker lost its data, the cursor is
// garbage) the client gets a "reset" frame or event instead and must
// refetch: a publication is never skipped silently.
//
// # Who is here
//
// Opt channels into presence with [Options].Presence: their subscribers
// get the members (users as Identify names them, with their public Info
// and connection counts) when they subscribe, then joins and leaves at
// most every 100 ms, or only how many are here ([PresenceCount]). A reload
// within [Options].PresenceGrace is neither a leave nor a join.
// [Hub.Members] returns them in Go and GET <channel URL>?presence over
// HTTP, to those who may subscribe. [Except] and [HookOptions].ToOthers
// publish to everyone but the connection, or user, that made a change.
//
// # Scale out
//
// The default [MemoryBroker] serves one process. To run several, give each
// Hub the same network broker; the brokertest package checks a Broker
// against the contract documented on the interface. Every broker's Publish
// (and PublishIf) runs [CheckPublish]: what an application publishes
// through a broker itself is data, never a message of the hubs', whose
// channels ("@live:…") it may not write.
//
// # Protect
//
// Say who a request is with [Options].Identify, and decide what they may
// subscribe to and publish with [Options].Authorize; when rights change,
// [Hub.Reauthorize] and [Hub.Disconnect] act on live sessions on every
// node. Browsers
// from other origins are refused unless [Options].OriginPatterns admits
// them, on every endpoint, a State's included, which also takes writes
// only as JSON. Frames, bodies, subscriptions per connection and the queue of
// each client are bounded; a client that cannot keep up is disconnected
// (or reset, see [SlowPolicy]) without slowing anyone else. On state
// channels it receives the latest value instead, and on list channels
// ([Options].ListIDField) its queued operations are coalesced per id.
package live
