// The connection: Live, which keeps the channels, their cursors, the
// publishes and the connection's status, and moves between transports (the
// ladder: WebSocket, SSE, long-poll), probing upward, following the
// endings the server decides and the browser's offline and online.

import { call, LiveError, report } from "./errors.js";
import { defaultFetch, httpError, retryAfter } from "./http.js";
import { advances, isObject, isStateReset } from "./merge.js";
import { PollTransport } from "./poll.js";
import { SSETransport } from "./sse.js";
import { SocketTransport, wsURL } from "./ws.js";

/**
 * @typedef {"connecting"|"connected"|"disconnected"|"error"|"offline"|"removed"|"signed-out"} Status
 * @typedef {{code: number, reason: string, retry: boolean, transport: "websocket"|"sse"|"poll"}} Ending
 * @typedef {{status: Status, reconnectAttempt: number, transport: "websocket"|"sse"|"poll", delayed: boolean, ending: Ending|null}} Connection
 */

/**
 * The endings the server means as final, by code, and the status each
 * leaves: the application disconnected the user (Hub.Disconnect: the
 * WebSocket's close code 4001, which streams and polls carry in their
 * "close" frame), or refused who the page is when it came back (HTTP 401
 * from Options.Identify). Every other ending (1013 try again later, 1001
 * the server going away, a network failure) is followed by a reconnection.
 */

/**
 * The ending of a server that restarts (Hub.Drain: close code 1012, service
 * restart): the client comes back after the delay it is told, "restart;
 * retry in N ms" (a close frame's "retry" field), from its cursors.
 */
const restart = 1012;
const finalEndings = new Map([
  [4001, "removed"],
  [401, "signed-out"],
]);

/** offline reports whether the browser says it has no network. */
export const offline = () => typeof navigator !== "undefined" && navigator.onLine === false;

const transports = ["auto", "websocket", "sse", "poll"];

/**
 * createLive connects the page to a hub and returns the handle every
 * channel goes through. Options: transport ("auto", the default: the best
 * transport that works, see below; "websocket"; "sse"; "poll"), url (the
 * WebSocket, default "/ws"),
 * sseURL (the multiplexed stream and HTTP publishing, default
 * "/api/live"; under the hub's prefix mount, the prefix with its slash,
 * "/live/"), both relative to the page; minBackoff and maxBackoff in
 * ms (1000 and 30000: the wait before reconnecting is drawn uniformly
 * below min(maxBackoff, minBackoff·2^n) after the n-th failure, and starts
 * again from minBackoff once a connection opens), connectTimeout (10000
 * ms), publishTimeout (10000 ms), maxQueue (publishes held while
 * disconnected, 1000), pingInterval (25000 ms; 0 disables the liveness
 * check), pongTimeout (10000 ms), headers and credentials (for the SSE
 * transport's requests), firstFrameTimeout (5000 ms) and probeInterval
 * (300000 ms; 0 never probes) for "auto", WebSocket and fetch (for tests) and random
 * (Math.random, for tests).
 *
 * Endings the server decides reach onEnd listeners, on every transport,
 * as {code, reason, retry}: WebSocket close codes (4001 disconnected by
 * the application, 1013 try again later, 1001 going away), which streams
 * and polls carry in a "close" frame, or 401 when the hub refused who the
 * page is as it came back (a WebSocket's refused handshake shows the page
 * nothing, so the client asks the stream URL why). 4001 and 401 are final:
 * no reconnection follows, and the status stays "removed" or "signed-out"
 * until connect() is called (after a new login, say). 1012 (the server
 * restarts: Hub.Drain) is followed by a reconnection after the delay the
 * server drew for this client, with the status "connecting" meanwhile,
 * never "error" or "disconnected". The others are followed by a
 * reconnection as usual. A connection refused with 503 and a Retry-After
 * header (a draining or cut-off hub) is tried again after that long,
 * jittered up to half as long again, instead of after the backoff.
 *
 * The browser's own network events count too: on "offline" the status
 * becomes "offline" at once and no reconnection is tried; on "online" the
 * client reconnects at once, and with "auto" tries the transports above
 * the one in use then rather than at the next probe.
 *
 * With "auto" the client tries a WebSocket, then the multiplexed SSE
 * stream, then long-polling: it moves down when a WebSocket fails before
 * it ever opened (a proxy that refuses upgrades), and when a stream
 * brings no frame within firstFrameTimeout (a proxy that buffers whole
 * responses, so events would come only when the response ends) or fails
 * before its first. Every probeInterval it tries the transports above the
 * one in use again, and moves up when one works; each channel goes on
 * from its cursor, so nothing is lost or repeated on the way.
 * connection.transport says which is in use. Polling asks the hub to
 * acknowledge a channel it resumes without an acknowledgement (?ack=), and
 * paces polls whose answers bring nothing new (see pollPace).
 *
 * @param {import("../live").LiveOptions} [options]
 * @returns {import("../live").Live}
 */
export function createLive(options = {}) {
  return new Live(options);
}

class Live {
  constructor(options) {
    const o = {
      url: "/ws",
      sseURL: "/api/live",
      transport: "auto",
      minBackoff: 1000,
      maxBackoff: 30000,
      connectTimeout: 10000,
      publishTimeout: 10000,
      maxQueue: 1000,
      pingInterval: 25000,
      pongTimeout: 10000,
      firstFrameTimeout: 5000,
      probeInterval: 300000,
      headers: {},
      credentials: "same-origin",
      random: Math.random,
      WebSocket: globalThis.WebSocket,
      fetch: undefined,
      ...given(options),
    };
    if (!transports.includes(o.transport)) throw new TypeError(`live: transport must be "auto", "websocket", "sse" or "poll", not ${JSON.stringify(String(o.transport))}`);
    const noSocket = typeof o.WebSocket !== "function";
    if (noSocket && o.transport === "websocket") throw new TypeError("live: no WebSocket constructor: pass options.WebSocket");
    this._o = o;
    /** @type {"websocket"|"sse"|"poll"} */
    this._mode = o.transport === "auto" ? (noSocket ? "sse" : "websocket") : o.transport;
    this._probeTimer = null; // the next try of the transports above the one in use
    this._probing = null; // the WebSocket a probe opened
    this._everStreamed = false; // a stream or poll has brought a frame since the last move
    this._sseBase = null; // resolved when first needed
    this._everOpened = false; // a WebSocket has opened: auto stays on WebSocket
    this._closed = false;
    this._timer = null; // the one reconnect timer
    this._ending = null; // the last ending the server decided, until a connection opens
    this._final = null; // the status a final ending left: no reconnection until connect()
    this._offline = offline(); // the browser says it has no network: no reconnection until it does
    /** @type {Connection} */
    this._conn = { status: this._offline ? "offline" : "connecting", reconnectAttempt: 0, transport: this._mode, delayed: false, ending: null };
    this._statusListeners = new Set();
    this._errorListeners = new Set();
    this._endListeners = new Set();
    /** @type {Map<string, any>} */
    this._channels = new Map();
    this._ref = 0;
    this._connectionID = null; // the hub's name for the connection, from "subscribed" frames
    this._publishes = new Map(); // ref -> {frame, sent, resolve, reject, timer, ctl}
    /** The transport in use: it carries frames between this and the hub. */
    this._t = this._newTransport(this._mode);
    this._onOnline = () => this._online();
    this._onOffline = () => this._goOffline();
    if (typeof addEventListener === "function") {
      addEventListener("online", this._onOnline);
      addEventListener("offline", this._onOffline);
    }
    this._connect();
  }

  /** @returns {Connection} */
  get connection() {
    return { ...this._conn };
  }

  /** The transport in use: "websocket", "sse" or "poll". */
  get transport() {
    return this._mode;
  }

  /**
   * onStatus calls listener with the connection state now and whenever it
   * changes; it returns a function that stops the calls.
   */
  onStatus(listener) {
    this._statusListeners.add(listener);
    const c = this.connection;
    try {
      listener(c);
    } catch (e) {
      report(e);
    }
    return () => this._statusListeners.delete(listener);
  }

  /** onError calls listener with every LiveError the hub reports; it returns a function that stops the calls. */
  onError(listener) {
    this._errorListeners.add(listener);
    return () => this._errorListeners.delete(listener);
  }

  /**
   * onEnd calls listener({code, reason, retry, transport}) whenever the
   * server ends the connection, on any transport (see createLive): retry
   * false for the final endings, after which the status is "removed" or
   * "signed-out" and nothing reconnects until connect(). It returns a
   * function that stops the calls.
   */
  onEnd(listener) {
    this._endListeners.add(listener);
    return () => this._endListeners.delete(listener);
  }

  /**
   * connect connects again after a final ending (once the user has logged
   * in again, say): every channel resumes from its cursor. Otherwise it
   * reconnects at once if a reconnection waits, and does nothing if the
   * connection is open or opening.
   */
  connect() {
    if (this._closed) throw new LiveError("closed", "live: connect after close");
    if (this._final !== null) {
      this._final = null;
      this._setStatus("connecting", 0);
      this._scheduleProbe(Math.min(30000, this._o.probeInterval));
      this._connect();
      return;
    }
    if (this._timer !== null) this._reconnectNow();
  }

  /** The hub's name for the connection (sent as the Live-Connection header of writes), or null before the first acknowledgement. */
  get connectionID() {
    return this._connectionID;
  }

  /**
   * presence follows who is subscribed to channel, on a channel the hub
   * gives presence (Options.Presence): it subscribes (sharing the
   * channel's subscription) and calls listener({members, count, joined,
   * left}) with the members (sorted by user: {user, info, conns}), how
   * many are here (users plus anonymous connections), and who joined or
   * left since the last call (a member whose info or connection count
   * changed is among joined). A page that reloads, or a connection that
   * comes back, within the hub's grace window is neither a leave nor a
   * join. On a channel that shows counts only, members stays empty. It
   * returns a function that stops following; opts.onError gets refusals.
   */
  presence(channel, listener, opts = {}) {
    if (typeof listener !== "function") throw new TypeError("live: presence: listener must be a function");
    return this.subscribe(channel, () => {}, { onPresence: listener, onError: opts.onError });
  }

  /** members returns the channel's presence as last received ({members, count}), or null. */
  members(channel) {
    const p = this._channels.get(channel)?.presence;
    return p ? { members: [...p.members.values()], count: p.count } : null;
  }

  /** cursor returns the cursor the channel resumes from, or null. */
  cursor(channel) {
    return this._channels.get(channel)?.cursor ?? null;
  }

  /**
   * subscribe calls callback(data, meta) for every publication on channel,
   * in order, each once, and returns a function that unsubscribes.
   * Callers of one channel share its subscription. opts.cursor resumes
   * from a saved cursor (only for the channel's first subscriber);
   * opts.onReset(cursor, reason) is called when the hub could not replay
   * what was missed: refetch the channel's state. opts.onSubscribed(cursor)
   * is called whenever the hub acknowledges the subscription, after which
   * publications reach the callback; opts.onError(err) on a refusal.
   */
  subscribe(channel, callback, opts = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("live: subscribe: channel must be a non-empty string");
    if (typeof callback !== "function") throw new TypeError("live: subscribe: callback must be a function");
    if (this._closed) throw new LiveError("closed", "live: subscribe after close");
    let ch = this._channels.get(channel);
    if (!ch) {
      ch = { name: channel, cursor: typeof opts.cursor === "string" && opts.cursor ? opts.cursor : null, acked: false, refused: false, subs: new Set() };
      this._channels.set(channel, ch);
      this._t.added(ch);
    }
    const sub = { callback, onReset: opts.onReset, onSubscribed: opts.onSubscribed, onError: opts.onError, onPresence: opts.onPresence };
    ch.subs.add(sub);
    if (ch.acked && sub.onSubscribed) {
      const cursor = ch.cursor;
      queueMicrotask(() => ch.subs.has(sub) && call(sub.onSubscribed, cursor));
    }
    if (ch.presence && sub.onPresence) {
      queueMicrotask(() => ch.subs.has(sub) && ch.presence && call(sub.onPresence, presenceView(ch.presence, [], [])));
    }
    return () => {
      if (!ch.subs.delete(sub) || ch.subs.size > 0 || this._channels.get(channel) !== ch) return;
      this._channels.delete(channel);
      this._t.removed(ch);
    };
  }

  /**
   * publish sends data on channel (the hub must allow clients to publish
   * there) and resolves with its cursor once the hub acknowledges it. Over
   * a WebSocket it waits while disconnected; over SSE it is a POST to
   * sseURL/channel. Either way it gives up after opts.timeout ms. It
   * rejects with a LiveError: the hub's code, "timeout", "queue_full",
   * "closed", "network", or "disconnected" when the connection was lost
   * after sending, in which case the publication may or may not have been
   * made.
   * @returns {Promise<string>}
   */
  publish(channel, data, opts = {}) {
    if (this._closed) return Promise.reject(new LiveError("closed", "live: publish after close", { channel }));
    try {
      if (JSON.stringify(data) === undefined) throw new TypeError("data is undefined");
    } catch (e) {
      return Promise.reject(new TypeError(`live: publish: data must be a JSON value: ${e.message}`));
    }
    if (this._publishes.size >= this._o.maxQueue) {
      return Promise.reject(new LiveError("queue_full", `live: publish: ${this._o.maxQueue} publishes are already waiting`, { channel }));
    }
    const ref = ++this._ref;
    const frame = { type: "publish", channel, data, ref };
    return new Promise((resolve, reject) => {
      const timeout = opts.timeout ?? this._o.publishTimeout;
      const p = { frame, sent: false, resolve, reject, timer: null, ctl: null };
      if (timeout > 0) {
        p.timer = setTimeout(() => {
          this._publishes.delete(ref);
          p.ctl?.abort();
          reject(new LiveError("timeout", `live: publish on ${channel}: no acknowledgement within ${timeout} ms`, { channel }));
        }, timeout);
      }
      this._publishes.set(ref, p);
      this._dispatch(ref, p);
    });
  }

  /** close closes the connection for good: no reconnection follows. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (typeof removeEventListener === "function") {
      removeEventListener("online", this._onOnline);
      removeEventListener("offline", this._onOffline);
    }
    clearTimeout(this._timer);
    clearTimeout(this._probeTimer);
    this._timer = this._probeTimer = null;
    this._stopProbing();
    this._t.close("closed by the client");
    for (const [ref, p] of this._publishes) this._failPublish(ref, p, new LiveError("closed", "live: closed before the publish was acknowledged", { channel: p.frame.channel }));
    this._setStatus("disconnected", this._conn.reconnectAttempt);
  }

  // --- internals

  _setStatus(status, reconnectAttempt) {
    const transport = this._mode;
    const c = this._conn;
    // A hub's word that updates are delayed holds for its connection only.
    const delayed = status === "connected" && this._delayed === true;
    if (!delayed) this._delayed = false;
    if (status === "connected") this._ending = null;
    const ending = this._ending;
    if (c.status === status && c.reconnectAttempt === reconnectAttempt && c.transport === transport && c.delayed === delayed && c.ending === ending) return;
    this._conn = { status, reconnectAttempt, transport, delayed, ending };
    for (const l of [...this._statusListeners]) call(l, { ...this._conn });
  }

  /**
   * _ended tells onEnd listeners that the server ended the connection with
   * code and reason, and, for a final ending, stops: the transport is
   * closed, no reconnection or probe is pending, publishes waiting fail,
   * and the status stays what the ending left until connect(). A restart
   * (1012) is followed by its reconnection (_restart). It reports whether
   * it took care of what follows: a final ending, or a restart.
   */
  _ended(code, reason, retry) {
    if (this._closed || this._final !== null) return true;
    const status = finalEndings.get(code);
    const ending = { code, reason, retry: status === undefined, transport: this._mode };
    this._ending = ending;
    for (const l of [...this._endListeners]) call(l, { ...ending });
    if (code === restart) {
      this._restart(Number.isSafeInteger(retry) ? retry : Number(/retry in (\d+) ms/.exec(reason)?.[1]));
      return true;
    }
    if (status === undefined) return false;
    this._final = status;
    clearTimeout(this._timer);
    clearTimeout(this._probeTimer);
    this._timer = this._probeTimer = null;
    this._stopProbing();
    this._t.close("ended by the server");
    for (const [ref, p] of this._publishes) {
      this._failPublish(ref, p, new LiveError(status === "removed" ? "disconnected" : "unauthenticated", `live: publish on ${p.frame.channel}: the server ended the connection (${code} ${reason})`, { channel: p.frame.channel }));
    }
    this._setStatus(status, this._conn.reconnectAttempt);
    return true;
  }

  /**
   * _restart follows a server that restarts: the connection is given up
   * without an error and opened again after delay ms, the server's draw
   * for this client (under a second when it gave none), from the cursors,
   * wherever the load balancer sends it.
   */
  _restart(delay) {
    this._t.close("the server restarts");
    clearTimeout(this._timer);
    this._timer = null;
    this._setStatus("connecting", this._conn.reconnectAttempt);
    this._wait(Number.isFinite(delay) && delay >= 0 ? Math.min(delay, 60000) : 100 + Math.floor(this._o.random() * 900));
  }

  /**
   * _refused ends the connection for a 401 answer: a Hub.Disconnect that
   * caught the request on its way in (code "disconnected") is the 4001 it
   * would have closed an open one with; anything else is Identify's
   * refusal.
   */
  _refused(err) {
    const reason = String(err.body?.message ?? err.code);
    this._ended(err.code === "disconnected" ? 4001 : 401, reason);
  }

  /** _stopProbing gives up a probe's WebSocket, if one is open. */
  _stopProbing() {
    if (!this._probing) return;
    this._probing.onopen = this._probing.onclose = this._probing.onerror = null;
    this._probing.close();
    this._probing = null;
  }

  /**
   * _goOffline follows the browser offline: the connection is given up at
   * once (it may take a ping's timeout to fail by itself) and nothing is
   * tried until the browser is back online.
   */
  _goOffline() {
    if (this._closed || this._offline) return;
    this._offline = true;
    if (this._final !== null) return;
    clearTimeout(this._timer);
    clearTimeout(this._probeTimer);
    this._timer = this._probeTimer = null;
    this._stopProbing();
    this._t.close("offline");
    this._setStatus("offline", this._conn.reconnectAttempt);
  }

  /**
   * _online follows the browser back online: reconnect at once, and, below
   * WebSocket with "auto", try the transports above now, as the move down
   * may have been the network's doing.
   */
  _online() {
    if (!this._offline && this._timer === null) return;
    this._offline = false;
    if (this._closed || this._final !== null) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._connect();
    if (this._o.transport === "auto" && this._mode !== "websocket" && this._o.probeInterval > 0 && !this._probing) {
      clearTimeout(this._probeTimer);
      this._probeTimer = null;
      this._probe();
    }
  }

  /**
   * _whyRefused asks the stream URL whether the hub refuses who the page
   * is, after a WebSocket that did not open: a refused handshake shows the
   * page nothing. A 401 is a final ending; a 503 with Retry-After (a
   * draining hub) moves the reconnection _lost scheduled to when it says;
   * anything else leaves it.
   */
  _whyRefused() {
    let url;
    try {
      const base = this._sseURL() + (/\/$/.test(this._o.sseURL) ? "/" : "");
      url = `${base}${base.includes("?") ? "&" : "?"}channels=`;
    } catch {
      return;
    }
    const mode = this._mode;
    Promise.resolve()
      .then(() => this._fetch()(url, { headers: { Accept: "application/json", ...this._o.headers }, credentials: this._o.credentials, cache: "no-store" }))
      .then(async (res) => {
        if (this._closed || this._mode !== mode || this._conn.status === "connected") return;
        const after = res.status === 503 ? retryAfter(res) : undefined;
        if (after !== undefined && this._timer !== null) {
          // A draining hub: come back when it says, not at the backoff's draw.
          clearTimeout(this._timer);
          this._timer = null;
          this._wait(jitter(after, this._o.random));
        }
        if (res.status !== 401) return;
        this._refused(await httpError(res, "connecting"));
      })
      .catch(() => {}); // the network: the reconnection tells
  }

  _emitError(err, sub) {
    if (sub?.onError) call(sub.onError, err);
    for (const l of [...this._errorListeners]) call(l, err);
  }

  /** _dispatch sends a publish by the transport in use. */
  _dispatch(ref, p) {
    this._t.publish(ref, p);
  }

  _connect() {
    if (this._closed || this._final !== null) return;
    if (this._offline) {
      this._setStatus("offline", this._conn.reconnectAttempt);
      return;
    }
    this._t.open();
  }

  /**
   * _newTransport returns a transport of the kind mode names. It reaches
   * this Live only through the link and the options it is given.
   */
  _newTransport(mode) {
    const o = this._o;
    let t = null;
    const link = this._link(() => t);
    const timing = { connectTimeout: o.connectTimeout, pingInterval: o.pingInterval, pongTimeout: o.pongTimeout };
    if (mode === "websocket") {
      t = new SocketTransport(link, { ...timing, url: o.url, WebSocket: o.WebSocket });
    } else {
      const opts = { ...timing, sseURL: o.sseURL, headers: o.headers, credentials: o.credentials, auto: o.transport === "auto", firstFrameTimeout: o.firstFrameTimeout };
      t = mode === "poll" ? new PollTransport(link, opts) : new SSETransport(link, opts);
    }
    return t;
  }

  /**
   * _link returns what a transport (the one transport() returns) may ask
   * of this Live and tell it: a Link.
   * @returns {import("./link.js").Link}
   */
  _link(transport) {
    const live = this;
    return {
      channels: () => live._channels.values(),
      channel: (name) => live._channels.get(name),
      channelError(ch, err) {
        for (const sub of [...ch.subs]) live._emitError(err, sub);
      },
      status(status) {
        live._setStatus(status, status === "connected" ? 0 : live._conn.reconnectAttempt);
      },
      connected: () => live._conn.status === "connected",
      closed: () => live._closed,
      mayOpen: () => !live._closed && live._final === null && !live._offline && live._timer === null,
      current: () => live._t === transport(),
      opened() {
        live._everOpened = true;
        for (const [ref, p] of live._publishes) if (!p.sent) live._dispatch(ref, p);
      },
      framed() {
        live._everStreamed = true;
      },
      everFramed: () => live._everStreamed,
      willFallBack: () => live._willFallBack(),
      message: (text) => live._handle(text),
      frame: (m) => live._frame(m),
      error: (err) => live._emitError(err),
      lost: (after) => live._lost(after),
      ended: (code, reason, retry) => live._ended(code, reason, retry),
      refused: (err) => live._refused(err),
      whyRefused: () => live._whyRefused(),
      moveTo: (mode) => live._moveTo(mode),
      published(ref, p, cursor) {
        if (live._publishes.get(ref) !== p) return;
        live._publishes.delete(ref);
        clearTimeout(p.timer);
        p.resolve(cursor);
      },
      publishFailed(ref, p, err) {
        if (live._publishes.get(ref) === p) live._failPublish(ref, p, err);
      },
      sentLost(err) {
        for (const [ref, p] of live._publishes) if (p.sent && !p.ctl) live._failPublish(ref, p, err(p.frame.channel));
      },
      fetch: () => live._fetch(),
      sseURL: () => live._sseURL(),
    };
  }

  /** _willFallBack reports whether a WebSocket failing now makes the client use SSE. */
  _willFallBack() {
    return this._o.transport === "auto" && !this._everOpened;
  }

  /**
   * _moveTo makes mode the transport, at once: publishes not yet sent go
   * by the new one, and every channel goes on from its cursor. Below
   * WebSocket, a probe of the transports above is scheduled.
   */
  _moveTo(mode) {
    if (this._closed || this._final !== null) return;
    this._t.close("moving to another transport");
    clearTimeout(this._timer);
    this._timer = null;
    this._mode = mode;
    this._t = this._newTransport(mode);
    this._everStreamed = false;
    for (const [ref, p] of this._publishes) if (!p.sent) this._dispatch(ref, p);
    this._setStatus("connecting", this._conn.reconnectAttempt);
    this._scheduleProbe(Math.min(30000, this._o.probeInterval));
    this._connect();
  }

  /**
   * _scheduleProbe plans the next try of the transports above the one in
   * use, with "auto": after delay, probeInterval by default. The first
   * after a move down comes sooner, since the move may have been caused by
   * a server that was down rather than by a proxy.
   */
  _scheduleProbe(delay = this._o.probeInterval) {
    clearTimeout(this._probeTimer);
    this._probeTimer = null;
    if (this._o.transport !== "auto" || this._mode === "websocket" || this._o.probeInterval <= 0 || this._closed || this._final !== null || this._offline) return;
    this._probeTimer = setTimeout(() => {
      this._probeTimer = null;
      this._probe();
    }, delay);
  }

  /**
   * _probe tries a WebSocket beside the transport in use, and moves to it
   * if it opens. Polling without one tries the stream next: moving to it
   * is the test, since a buffering proxy in the way sends it back to
   * polling after firstFrameTimeout, and cursors keep every channel whole.
   */
  _probe() {
    if (this._closed || this._final !== null || this._offline || this._mode === "websocket") return;
    const fallBack = () => {
      if (this._closed || this._final !== null || this._offline) return;
      if (this._mode === "poll") this._moveTo("sse");
      else this._scheduleProbe();
    };
    if (typeof this._o.WebSocket !== "function") {
      fallBack();
      return;
    }
    let ws;
    try {
      ws = new this._o.WebSocket(wsURL(this._o.url));
    } catch {
      fallBack();
      return;
    }
    this._probing = ws;
    const timer = setTimeout(() => done(false), this._o.connectTimeout > 0 ? this._o.connectTimeout : 10000);
    const done = (opened) => {
      if (this._probing !== ws) return;
      this._probing = null;
      clearTimeout(timer);
      ws.onopen = ws.onclose = ws.onerror = null;
      ws.close(1000, "probe");
      if (opened) {
        this._everOpened = true;
        this._moveTo("websocket");
      } else {
        fallBack();
      }
    };
    ws.onopen = () => done(true);
    ws.onclose = () => done(false);
    ws.onerror = () => done(false);
  }

  /**
   * _lost schedules the next attempt after a failed or lost connection:
   * after the backoff, or after about after ms when the server said when
   * to come back (Retry-After, a retry line).
   */
  _lost(after) {
    if (this._closed || this._final !== null) return;
    const n = this._conn.reconnectAttempt + 1;
    if (this._offline) {
      this._setStatus("offline", n);
      return;
    }
    this._setStatus("disconnected", n);
    if (this._timer !== null) return;
    const ceiling = Math.min(this._o.maxBackoff, this._o.minBackoff * 2 ** Math.min(n - 1, 30));
    this._wait(after >= 0 ? jitter(after, this._o.random) : Math.floor(this._o.random() * ceiling));
  }

  /** _wait sets the reconnect timer: the next attempt comes after delay ms. */
  _wait(delay) {
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }

  _reconnectNow() {
    clearTimeout(this._timer);
    this._timer = null;
    this._connect();
  }

  _fetch() {
    return this._o.fetch ?? defaultFetch();
  }

  /** _sseURL returns sseURL resolved against the page, without a trailing slash. */
  _sseURL() {
    if (this._sseBase === null) {
      const base = typeof location !== "undefined" ? location.href : undefined;
      this._sseBase = new URL(this._o.sseURL, base).href.replace(/\/+$/, "");
    }
    return this._sseBase;
  }

  _failPublish(ref, p, err) {
    this._publishes.delete(ref);
    clearTimeout(p.timer);
    p.ctl?.abort();
    p.reject(err);
  }


  _handle(text) {
    if (typeof text !== "string") return;
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      this._emitError(new LiveError("bad_frame", "live: the hub sent a frame that is not JSON"));
      return;
    }
    this._frame(m);
  }

  /**
   * _frame handles one frame from the hub, parsed, and reports whether it
   * was news: a frame that changed nothing here (data seen already, or of
   * a subscription not acknowledged, an acknowledgement held already) is
   * not, which keeps a poll that brings only such frames from being
   * followed by another at once.
   */
  _frame(m) {
    if (!isObject(m)) return false;
    const ch = typeof m.channel === "string" ? this._channels.get(m.channel) : undefined;
    switch (m.type) {
      case "data": {
        // Frames of an unacknowledged subscription belong to an older one.
        if (!ch || !ch.acked) return false;
        if (typeof m.cursor === "string") {
          // Resets of a State channel come in band, at the hub's cursor,
          // which may be behind the client's: always take them.
          if (!isStateReset(m.data) && ch.cursor && !advances(ch.cursor, m.cursor)) return false; // seen already
          ch.cursor = m.cursor;
        }
        const meta = { channel: m.channel, cursor: m.cursor ?? null };
        if (m.queryKey !== undefined) meta.queryKey = m.queryKey;
        for (const sub of [...ch.subs]) if (ch.subs.has(sub)) call(sub.callback, m.data, meta);
        return true;
      }
      case "subscribed": {
        if (typeof m.connection === "string") this._connectionID = m.connection;
        if (!ch) return false;
        const moves = typeof m.cursor === "string" && (!ch.cursor || advances(ch.cursor, m.cursor));
        const news = !ch.acked || moves;
        ch.acked = true;
        if (moves) ch.cursor = m.cursor;
        for (const sub of [...ch.subs]) if (sub.onSubscribed) call(sub.onSubscribed, ch.cursor);
        return news;
      }
      case "presence": {
        if (!ch || !ch.acked) return false;
        const p = ch.presence ?? (ch.presence = { members: new Map(), count: 0, tag: null });
        if (typeof m.tag === "string") p.tag = m.tag;
        const joined = [];
        const left = [];
        if (Array.isArray(m.members)) {
          // A snapshot: the difference from what we had is what changed.
          const next = new Map();
          for (const mb of m.members) if (isObject(mb) && typeof mb.user === "string") next.set(mb.user, mb);
          for (const [user, mb] of next) if (!sameMember(p.members.get(user), mb)) joined.push(mb);
          for (const user of p.members.keys()) if (!next.has(user)) left.push(user);
          p.members = next;
        }
        if (Array.isArray(m.join)) {
          for (const mb of m.join) {
            if (!isObject(mb) || typeof mb.user !== "string") continue;
            p.members.set(mb.user, mb);
            joined.push(mb);
          }
        }
        if (Array.isArray(m.leave)) {
          for (const user of m.leave) if (p.members.delete(user)) left.push(user);
        }
        if (Number.isSafeInteger(m.count)) p.count = m.count;
        const view = presenceView(p, joined, left);
        for (const sub of [...ch.subs]) if (sub.onPresence) call(sub.onPresence, view);
        return true;
      }
      case "status": {
        // The hub's link to its broker broke ("delayed") or is back
        // ("live"): updates wait meanwhile, and arrive after.
        const delayed = m.status === "delayed";
        if (delayed === (this._delayed === true)) return false;
        this._delayed = delayed;
        this._setStatus(this._conn.status, this._conn.reconnectAttempt);
        return true;
      }
      case "reset": {
        if (!ch) return false;
        const was = ch.cursor;
        if (typeof m.cursor === "string") ch.cursor = m.cursor;
        for (const sub of [...ch.subs]) if (sub.onReset) call(sub.onReset, ch.cursor, String(m.reason ?? ""));
        return ch.cursor !== was;
      }
      case "close": {
        // The server ends the stream or poll, saying what a WebSocket's
        // close frame would, and a drain's when to come back.
        if (!Number.isSafeInteger(m.closeCode)) return false;
        this._ended(m.closeCode, String(m.reason ?? ""), m.retry);
        return true;
      }
      case "published":
      case "error": {
        const p = typeof m.ref === "number" ? this._publishes.get(m.ref) : undefined;
        if (p) {
          this._publishes.delete(m.ref);
          clearTimeout(p.timer);
          if (m.type === "published") p.resolve(String(m.cursor ?? ""));
          else p.reject(new LiveError(String(m.code ?? "error"), `live: publish on ${p.frame.channel}: ${m.message ?? m.code}`, { channel: p.frame.channel }));
          return true;
        }
        if (m.type === "error") {
          const err = new LiveError(String(m.code ?? "error"), `live: ${m.channel ? m.channel + ": " : ""}${m.message ?? m.code}`, m.channel ? { channel: m.channel } : {});
          // On a stream, a channel refused before it was acknowledged is
          // left out of the streams that follow, until the next reconnection.
          if (ch && this._t.refuses(ch)) ch.refused = "hub";
          if (ch) for (const sub of [...ch.subs]) this._emitError(err, sub);
          else this._emitError(err);
          return true;
        }
        return false;
      }
    }
    return false;
  }
}

/** presenceView is what presence listeners get. */
function presenceView(p, joined, left) {
  const members = [...p.members.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
  return { members, count: p.count, joined, left };
}

function sameMember(a, b) {
  return a !== undefined && a.conns === b.conns && JSON.stringify(a.info) === JSON.stringify(b.info);
}

/**
 * jitter spreads a wait the server asked for: after ms, up to half as long
 * again (at most 10 minutes), so that the clients it turned away together
 * do not come back together.
 */
function jitter(after, random) {
  const ms = Math.min(after, 600000);
  return ms + Math.floor(random() * ms / 2);
}

/** given returns the options that are set: an undefined option takes its default. */
export function given(options) {
  const o = {};
  for (const [k, v] of Object.entries(options ?? {})) if (v !== undefined) o[k] = v;
  return o;
}

