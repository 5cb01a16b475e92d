// The connection: Live, the handle createLive returns. It keeps the
// connection's status and moves between transports (the ladder:
// WebSocket, SSE, long-poll), reconnecting with backoff, following the
// endings the server decides and the browser's offline and online. Its
// parts: the channels and their subscribers (channels.js), the publishes
// waiting for an answer (publish.js), what each frame from the hub does
// (frames.js, presence.js), the tries of the transports above the one in
// use (probe.js), and the transports themselves (ws.js, sse.js, poll.js),
// each reaching the Live only through the callbacks it is given.

import { Channels } from "./channels.js";
import { finalStatus, refusal, restartDelay, whyRefused } from "./endings.js";
import { call, LiveError, report } from "./errors.js";
import { handleFrame, handleText } from "./frames.js";
import { defaultFetch } from "./http.js";
import { liveOptions } from "./options.js";
import { PollTransport } from "./poll.js";
import { Prober } from "./probe.js";
import { Publishes } from "./publish.js";
import { SSETransport } from "./sse.js";
import { SocketTransport } from "./ws.js";

/**
 * @typedef {"connecting"|"connected"|"disconnected"|"error"|"offline"|"removed"|"signed-out"} Status
 * @typedef {{code: number, reason: string, retry: boolean, transport: "websocket"|"sse"|"poll"}} Ending
 * @typedef {{status: Status, reconnectAttempt: number, transport: "websocket"|"sse"|"poll", delayed: boolean, ending: Ending|null}} Connection
 */

/** expired is the ending of a connection whose credential expired (Identity.Expires). */
const expired = 4003;

/** offline reports whether the browser says it has no network. */
export const offline = () => typeof navigator !== "undefined" && navigator.onLine === false;

/**
 * createLive connects the page to a hub and returns the handle every
 * channel goes through. Its options and their defaults are liveOptions'
 * (options.js).
 *
 * Endings the server decides reach onEnd listeners, on every transport,
 * as {code, reason, retry}: WebSocket close codes (4001 disconnected by
 * the application, 1013 try again later, 1001 going away), which streams
 * and polls carry in a "close" frame, or 401 when the hub refused who the
 * page is as it came back (a WebSocket's refused handshake shows the page
 * nothing, so the client asks the stream URL why), 4003 when the
 * credential expired (followed, with the refresh option, by a new
 * credential and a reconnection: see _refresh). 4001 and 401 are final:
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
    const o = liveOptions(options);
    o.headers = { ...o.headers }; // the refresh option's headers join them
    this._o = o;
    /** @type {"websocket"|"sse"|"poll"} */
    this._mode = o.transport === "auto" ? (typeof o.WebSocket !== "function" ? "sse" : "websocket") : o.transport;
    this._everStreamed = false; // a stream or poll has brought a frame since the last move
    this._sseBase = null; // resolved when first needed
    this._everOpened = false; // a WebSocket has opened: auto stays on WebSocket
    this._closed = false;
    this._timer = null; // the one reconnect timer
    this._ending = null; // the last ending the server decided, until a connection opens
    this._final = null; // the status a final ending left: no reconnection until connect()
    this._refreshing = false; // the refresh option runs
    this._expiredRetried = false; // a 401 "credentials_expired" was refreshed since a connection opened
    this._offline = offline(); // the browser says it has no network: no reconnection until it does
    /** @type {Connection} */
    this._conn = { status: this._offline ? "offline" : "connecting", reconnectAttempt: 0, transport: this._mode, delayed: false, ending: null };
    this._statusListeners = new Set();
    this._errorListeners = new Set();
    this._endListeners = new Set();
    this._channels = new Channels({ closed: () => this._closed, added: (ch) => this._t.added(ch), removed: (ch) => this._t.removed(ch) });
    this._connectionID = null; // the hub's name for the connection, from "subscribed" frames
    this._delayed = false; // the hub said updates are delayed, on the connection open now
    this._publishes = new Publishes(o.maxQueue, (ref, p) => this._t.publish(ref, p));
    /** What frames act on besides the channels: see frames.js. */
    this._receiver = this._newReceiver();
    /** The transport in use: it carries frames between this and the hub. */
    this._t = this._newTransport(this._mode);
    this._prober = new Prober(o, {
      mode: () => this._mode,
      usable: () => !this._closed && this._final === null && !this._offline,
      opened: () => {
        this._everOpened = true;
      },
      moveTo: (mode) => this._moveTo(mode),
    });
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
      this._prober.schedule(Math.min(30000, this._o.probeInterval));
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
    return this._channels.members(channel);
  }

  /** cursor returns the cursor the channel resumes from, or null. */
  cursor(channel) {
    return this._channels.cursor(channel);
  }

  /**
   * subscribe calls callback(data, meta) for every publication on channel,
   * in order, each once, and returns a function that unsubscribes: see
   * Channels.subscribe (channels.js) for its options.
   */
  subscribe(channel, callback, opts = {}) {
    return this._channels.subscribe(channel, callback, opts);
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
    return this._publishes.publish(channel, data, opts.timeout ?? this._o.publishTimeout);
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
    this._timer = null;
    this._prober.stop();
    this._t.close("closed by the client");
    this._publishes.failAll((channel) => new LiveError("closed", "live: closed before the publish was acknowledged", { channel }));
    this._setStatus("disconnected", this._conn.reconnectAttempt);
  }

  // --- internals

  _setStatus(status, reconnectAttempt) {
    const transport = this._mode;
    const c = this._conn;
    // A hub's word that updates are delayed holds for its connection only.
    const delayed = status === "connected" && this._delayed === true;
    if (!delayed) this._delayed = false;
    if (status === "connected") {
      this._ending = null;
      this._expiredRetried = false;
    }
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
    const status = finalStatus(code);
    const ending = { code, reason, retry: status === undefined, transport: this._mode };
    this._ending = ending;
    for (const l of [...this._endListeners]) call(l, { ...ending });
    if (code === expired && this._o.refresh) {
      this._refresh();
      return true;
    }
    const delay = restartDelay(code, reason, retry);
    if (delay !== undefined) {
      this._restart(delay);
      return true;
    }
    if (status === undefined) return false;
    this._final = status;
    clearTimeout(this._timer);
    this._timer = null;
    this._prober.stop();
    this._t.close("ended by the server");
    const failed = status === "removed" ? "disconnected" : "unauthenticated";
    this._publishes.failAll((channel) => new LiveError(failed, `live: publish on ${channel}: the server ended the connection (${code} ${reason})`, { channel }));
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
   * _refused ends the connection for a 401 answer (see refusal), unless
   * the credential expired and the refresh option may renew it: once
   * until a connection opens, so that a refresh that renews nothing ends
   * as "signed-out".
   */
  _refused(err) {
    if (err.code === "credentials_expired" && this._o.refresh && !this._expiredRetried && !this._closed && this._final === null) {
      this._expiredRetried = true;
      this._refresh();
      return;
    }
    this._ended(...refusal(err));
  }

  /**
   * _refresh follows a hub that says the connection's credential expires
   * (a "refresh" frame, the ending 4003, a 401 "credentials_expired"):
   * with the refresh option it awaits a new credential (headers it returns
   * join the headers option), then reconnects at once from every channel's
   * cursor, with the status "connecting" meanwhile and no error. Without
   * it the expiry ends the connection as any ending does. A refresh that
   * fails is reported to onError listeners; the connection goes on until
   * the hub ends it.
   */
  _refresh() {
    const fetchNew = this._o.refresh;
    if (typeof fetchNew !== "function" || this._refreshing || this._closed || this._final !== null) return;
    this._refreshing = true;
    Promise.resolve()
      .then(() => fetchNew())
      .then(
        (headers) => {
          this._refreshing = false;
          if (headers && typeof headers === "object") Object.assign(this._o.headers, headers);
          if (this._closed || this._final !== null) return;
          this._t.close("refreshing the credential");
          clearTimeout(this._timer);
          this._timer = null;
          this._setStatus("connecting", this._conn.reconnectAttempt);
          this._connect();
        },
        (e) => {
          this._refreshing = false;
          this._emitError(new LiveError("refresh_failed", `live: refreshing the credential failed: ${e?.message ?? e}`));
        },
      );
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
    this._timer = null;
    this._prober.stop();
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
    this._prober.now();
  }

  /**
   * _whyRefused asks why a WebSocket did not open (see whyRefused), unless
   * the connection has moved on meanwhile. A 401 is a final ending; a 503
   * with Retry-After (a draining hub) moves the reconnection _lost
   * scheduled to when it says.
   */
  _whyRefused() {
    const mode = this._mode;
    const wanted = () => !this._closed && this._mode === mode && this._conn.status !== "connected";
    const later = (after) => {
      if (this._timer === null) return;
      clearTimeout(this._timer);
      this._timer = null;
      this._wait(jitter(after, this._o.random));
    };
    whyRefused(() => this._fetch(), () => this._sseURL(), this._o, wanted, (err) => this._refused(err), later);
  }

  _emitError(err, sub) {
    if (sub?.onError) call(sub.onError, err);
    for (const l of [...this._errorListeners]) call(l, err);
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
        live._publishes.sendUnsent();
      },
      framed() {
        live._everStreamed = true;
      },
      everFramed: () => live._everStreamed,
      willFallBack: () => live._willFallBack(),
      message: (text) => handleText(text, live._receiver),
      frame: (m) => handleFrame(m, live._receiver),
      error: (err) => live._emitError(err),
      lost: (after) => live._lost(after),
      ended: (code, reason, retry) => live._ended(code, reason, retry),
      refused: (err) => live._refused(err),
      whyRefused: () => live._whyRefused(),
      moveTo: (mode) => live._moveTo(mode),
      published: (ref, p, cursor) => live._publishes.published(ref, p, cursor),
      publishFailed: (ref, p, err) => live._publishes.failed(ref, p, err),
      sentLost: (err) => live._publishes.sentLost(err),
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
    this._publishes.sendUnsent();
    this._setStatus("connecting", this._conn.reconnectAttempt);
    this._prober.schedule(Math.min(30000, this._o.probeInterval));
    this._connect();
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

  /**
   * _newReceiver returns what frames act on besides a channel's own state
   * and subscribers: a Receiver.
   * @returns {import("./frames.js").Receiver}
   */
  _newReceiver() {
    return {
      channel: (name) => this._channels.get(name),
      named: (id) => {
        this._connectionID = id;
      },
      delayed: (delayed) => {
        if (delayed === this._delayed) return false;
        this._delayed = delayed;
        this._setStatus(this._conn.status, this._conn.reconnectAttempt);
        return true;
      },
      ended: (code, reason, retry) => this._ended(code, reason, retry),
      refresh: () => this._refresh(),
      acknowledged: (ref, cursor) => this._publishes.acknowledged(ref, cursor),
      refused: (ref, code, detail) => this._publishes.refused(ref, code, detail),
      refuses: (ch) => this._t.refuses(ch),
      error: (err, sub) => this._emitError(err, sub),
    };
  }
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
