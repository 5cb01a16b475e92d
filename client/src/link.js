// The link between Live and its transports. A Live keeps the channels,
// their cursors, the publishes and the connection's status, and moves
// between transports (see createLive); a transport carries frames between
// it and the hub over one kind of connection and tells it what happens.
// Each has open, close, added, removed, publish and refuses, and a name,
// and reaches the Live only through the Link it was made with (and the
// options it was given).

/**
 * A channel as the Live keeps it (see channels.js): its name, the cursor
 * reached, whether its subscription is acknowledged, whether the hub
 * refused it ("hub") or it cannot be asked for ("invalid"), its presence
 * (presence.js) and its subscribers (which transports reach through
 * Link.channelError).
 * @typedef {{name: string, cursor: string|null, acked: boolean, refused: false|"hub"|"invalid", presence?: import("./presence.js").Presence|null, subs: Set<Subscriber>}} Channel
 */

/**
 * A subscriber of a channel: its callback for publications and the
 * listeners it gave (see Channels.subscribe).
 * @typedef {{callback: (data: any, meta: object) => void, onReset?: (cursor: string|null, reason: string) => void, onSubscribed?: (cursor: string|null) => void, onError?: (err: Error) => void, onPresence?: (p: object) => void}} Subscriber
 */

/**
 * A publish waiting for its answer: frame is what goes to the hub; the
 * transport sets sent once it went, and ctl when a request carries it;
 * the Live settles it (resolve, reject) and times it out (timer).
 * @typedef {{frame: {type: "publish", channel: string, data: any, ref: number}, sent: boolean, ctl: AbortController|null, timer: any, resolve: (cursor: string) => void, reject: (err: Error) => void}} Publish
 */

/**
 * Link is what a transport may ask of its Live and tell it.
 * @typedef {object} Link
 * @property {() => Iterable<Channel>} channels the channels subscribed
 * @property {(name: string) => Channel|undefined} channel one channel by name
 * @property {(ch: Channel, err: Error) => void} channelError tells the channel's subscribers of err
 * @property {(status: "connecting"|"error"|"connected") => void} status the connection is in this state
 * @property {() => boolean} connected reports whether the status is "connected"
 * @property {() => boolean} closed reports whether the Live was closed
 * @property {() => boolean} mayOpen reports whether a connection may open now: not closed, ended, offline or waiting to reconnect
 * @property {() => boolean} current reports whether this transport is the one in use
 * @property {() => void} opened a WebSocket opened: publishes not sent go now
 * @property {() => void} framed a stream or poll brought a frame
 * @property {() => boolean} everFramed reports whether one has since the last move
 * @property {() => boolean} willFallBack reports whether a WebSocket failing now moves to SSE
 * @property {(text: string) => void} message a frame arrived as JSON text
 * @property {(m: unknown) => boolean} frame a frame arrived parsed; reports whether it was news
 * @property {(err: Error) => void} error tells the error listeners of err
 * @property {(after?: number) => void} lost the connection failed or was lost: reconnect after the backoff, or after about after ms when the server said when (Retry-After, a retry line)
 * @property {(code: number, reason: string, retry?: number) => boolean} ended the server ended the connection (retry: a close frame's delay); reports whether that settled what follows: a final ending, or a restart's reconnection
 * @property {(err: Error) => void} refused a request was answered 401
 * @property {() => void} whyRefused a WebSocket was refused before it opened: ask why
 * @property {(mode: "websocket"|"sse"|"poll") => void} moveTo use another transport, at once
 * @property {(ref: number, p: Publish, cursor: string) => void} published a publish went through
 * @property {(ref: number, p: Publish, err: Error) => void} publishFailed a publish failed
 * @property {(err: (channel: string) => Error) => void} sentLost the connection that carried the publishes sent on it was lost
 * @property {() => typeof fetch} fetch the fetch function to use
 * @property {() => string} sseURL the stream's URL, resolved, without a trailing slash
 */

export {};
