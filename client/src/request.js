// What the SSE and long-poll transports share: every channel asked for by
// one HTTP request from the channels' cursors, made again when the set of
// channels changes, and publishes as POSTs.

import { LiveError } from "./errors.js";
import { httpError, request, retryAfter, validChannel } from "./http.js";
import { isObject } from "./merge.js";

/**
 * @typedef {{sseURL: string, headers: Record<string, string>, credentials: RequestCredentials, auto: boolean, connectTimeout: number, firstFrameTimeout: number, pingInterval: number, pongTimeout: number}} RequestOptions
 */

/**
 * A RequestTransport carries frames over a request of every channel, each
 * from its cursor, made again when the set of channels changes; publishes
 * are POSTs. SSETransport (one stream) and PollTransport (one long-poll
 * after another) extend it, and provide:
 *
 *   - _keepsAck(ch, chans): whether ch stays acknowledged in a request of chans;
 *   - _params(chans): the query parameters a request of chans adds;
 *   - _started(s): s was sent;
 *   - _answered(s, res, type): s was answered with res, of Content-Type type;
 *   - _fellBack(s): whether a failure of s moved to another transport;
 *   - _waiting(): the channels of a request waiting to be sent, or null;
 *   - _unwait(): forget that request;
 *
 * and the fields name, accept (the Accept header), hold (how long the hub
 * may hold a request before answering), keepAcksOnChange and notOpened.
 */
export class RequestTransport {
  /**
   * @param {import("./link.js").Link} link
   * @param {RequestOptions} o
   */
  constructor(link, o) {
    this.link = link;
    this._o = o;
    this._stream = null; // the stream or poll: {ctl, names, open, framed, firstTimer, sent}
    this._openTimer = null; // gives up a request that does not open
    this._reopenTimer = null; // gathers channel changes into one new stream
    this._pingTimer = null;
    this._lastSeen = 0;
  }

  /** open opens the stream, unless one is open or a reconnection waits. */
  open() {
    this._openStream(false);
  }

  /** close drops the stream: its events are ignored from now on. */
  close() {
    clearTimeout(this._reopenTimer);
    this._reopenTimer = null;
    this._unwait();
    this._dropStream();
  }

  /** added makes the next stream carry a channel the Live gained. */
  added() {
    this._channelsChanged();
  }

  /** removed makes the next stream leave out a channel the Live dropped. */
  removed() {
    this._channelsChanged();
  }


  /** publish sends a publish as a POST to sseURL/channel. */
  publish(ref, p) {
    p.sent = true;
    p.ctl = new AbortController();
    const { channel, data } = p.frame;
    let url;
    try {
      url = `${this.link.sseURL()}/${encodeURIComponent(channel)}`;
    } catch (e) {
      this.link.publishFailed(ref, p, new LiveError("network", `live: publish on ${channel}: ${e.message}`, { channel }));
      return;
    }
    request(this.link.fetch(), url, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json", ...this._o.headers },
      credentials: this._o.credentials,
      body: JSON.stringify(data),
      signal: p.ctl.signal,
    }, 0, `publish on ${channel}`).then(
      (body) => this.link.published(ref, p, isObject(body) && typeof body.cursor === "string" ? body.cursor : ""),
      (e) => {
        if (e instanceof LiveError && e.channel === undefined) e.channel = channel;
        this.link.publishFailed(ref, p, e);
      },
    );
  }

  /**
   * _streamable returns the channels a stream should carry: all but those
   * the hub refused. Names the hub would refuse, which would make it refuse
   * the whole stream, are reported to their subscribers here instead.
   */
  _streamable() {
    const out = [];
    for (const ch of this.link.channels()) {
      if (!ch.refused && !validChannel(ch.name)) {
        ch.refused = "invalid";
        const err = new LiveError("bad_channel", `live: ${ch.name.slice(0, 140)}: a channel name is 1 to 128 of A-Z a-z 0-9 _ - : . @ = +, and not "." or ".."`, { channel: ch.name });
        this.link.channelError(ch, err);
      }
      if (!ch.refused) out.push(ch);
    }
    return out;
  }

  /** _channelsChanged opens a stream for the new set of channels once the current task is done. */
  _channelsChanged() {
    if (this.link.closed() || this._reopenTimer !== null) return;
    this._reopenTimer = setTimeout(() => {
      this._reopenTimer = null;
      // While a reconnection waits, it will take the new set.
      if (!this.link.mayOpen() || !this.link.current()) return;
      const want = this._streamable().map((ch) => ch.name);
      const have = this._stream?.names ?? this._waiting() ?? [];
      if (want.length === 0 && !this._stream) {
        this.link.status("connected"); // nothing to stream: nothing can fail either
        return;
      }
      if (want.length === have.length && want.every((n) => have.includes(n))) return;
      this._dropStream(this.keepAcksOnChange);
      this._openStream(true, have.length > 0);
    }, 0);
  }

  /**
   * _openStream opens the stream of every streamable channel, each from
   * its cursor. planned is true when only the set of channels changed;
   * then, if it replaces a stream (replacing), a client that is connected
   * stays so while the new stream opens.
   */
  _openStream(planned, replacing = false) {
    if (!this.link.mayOpen() || this._stream) return;
    clearTimeout(this._reopenTimer);
    this._reopenTimer = null;
    this._unwait();
    if (!planned) {
      // A new connection asks again for the channels the hub refused.
      for (const ch of this.link.channels()) if (ch.refused === "hub") ch.refused = false;
    }
    const chans = this._streamable();
    if (chans.length === 0) {
      // Nothing to stream: nothing can fail either. A connection just made
      // waits for the subscriptions of the task that made it.
      if (planned) this.link.status("connected");
      else this._channelsChanged();
      return;
    }
    const s = { ctl: new AbortController(), names: chans.map((ch) => ch.name), open: false, framed: false, firstTimer: null, sent: Date.now() };
    this._stream = s;
    for (const ch of this.link.channels()) ch.acked = this._keepsAck(ch, chans);
    const params = this._params(chans);
    if (!replacing || !this.link.connected()) this.link.status("connecting");
    let url;
    try {
      const q = new URLSearchParams();
      q.set("channels", s.names.join(","));
      for (const ch of chans) if (ch.cursor) q.set("cursor." + ch.name, ch.cursor);
      for (const [k, v] of params) q.set(k, v);
      // A prefix mount ("/live/") streams several channels at the prefix
      // itself: keep its slash.
      const base = this.link.sseURL() + (/\/$/.test(this._o.sseURL) ? "/" : "");
      url = `${base}${base.includes("?") ? "&" : "?"}${q}`;
    } catch (e) {
      this._streamFailed(s, new LiveError("network", `live: cannot open the stream: ${e.message}`), true);
      return;
    }
    if (this._o.connectTimeout > 0) {
      // A request the hub may hold is answered when there is news, or after the hold.
      const limit = this._o.connectTimeout + this.hold;
      this._openTimer = setTimeout(() => {
        this._openTimer = null;
        if (this._stream === s && !s.open) this._streamFailed(s, new LiveError("timeout", `live: the ${this.notOpened} within ${limit} ms`), false);
      }, limit);
    }
    this._started(s);
    Promise.resolve()
      .then(() => this.link.fetch()(url, {
        headers: { Accept: this.accept, ...this._o.headers },
        credentials: this._o.credentials,
        cache: "no-store",
        signal: s.ctl.signal,
      }))
      .then(async (res) => {
        if (this._stream !== s) return;
        clearTimeout(this._openTimer);
        this._openTimer = null;
        if (!res.ok) {
          const err = await httpError(res, "opening the stream");
          err.retryAfter = retryAfter(res);
          if (this._stream === s) this._streamRefused(s, err);
          return;
        }
        await this._answered(s, res, res.headers.get("Content-Type") ?? "");
      })
      .catch((e) => {
        if (this._stream !== s) return;
        this._streamFailed(s, e instanceof LiveError ? e : new LiveError("network", `live: the stream failed: ${e?.message ?? e}`), false);
      });
  }




  /**
   * _streamRefused handles an HTTP error answering the stream. 400, 403
   * and 404 refuse its channels (each subscriber hears why), which are
   * not asked for again until the next reconnection; a 503 with
   * Retry-After is retried after that; anything else is a failed
   * connection, retried after the backoff.
   */
  _streamRefused(s, err) {
    if (err.status === 401) {
      // Who the page is was refused: a final ending.
      this._dropStream();
      this.link.error(err);
      this.link.refused(err);
      return;
    }
    if (err.status === 503 && err.retryAfter !== undefined) {
      // A draining hub, or one cut off from its broker, says when to come
      // back: not an error, and no sign of a proxy in the way.
      this._dropStream();
      this.link.lost(err.retryAfter);
      return;
    }
    if (err.status !== 400 && err.status !== 403 && err.status !== 404) {
      this._streamFailed(s, err, true);
      return;
    }
    this._dropStream();
    for (const name of s.names) {
      const ch = this.link.channel(name);
      if (!ch) continue;
      ch.refused = "hub";
      const e = new LiveError(err.code, err.message, { channel: name, status: err.status, body: err.body });
      this.link.channelError(ch, e);
    }
    this._openStream(true, false); // the rest, if some came meanwhile
  }

  /**
   * _streamFailed gives up the stream s and schedules a reconnection, after
   * the backoff, or after about after ms (a retry line).
   */
  _streamFailed(s, err, report, after) {
    if (this._stream !== s) return;
    if (this._fellBack(s)) return;
    this._dropStream();
    this.link.status("error");
    if (report) this.link.error(err);
    this.link.lost(after);
  }

  /**
   * _dropStream forgets the stream and aborts its request: its events are
   * ignored from now on. keepAcks keeps the channels acknowledged, for a
   * poll replaced by one with more channels.
   */
  _dropStream(keepAcks = false) {
    const s = this._stream;
    if (!s) return;
    this._stream = null;
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(s.firstTimer);
    this._openTimer = this._pingTimer = null;
    s.ctl.abort();
    if (!keepAcks) for (const ch of this.link.channels()) ch.acked = false;
  }

  /**
   * _alive notes that the stream works. A stream cannot be pinged: the
   * hub's heartbeat comments keep it alive, and it is given up after
   * pingInterval + pongTimeout of silence.
   */
  _alive() {
    this._lastSeen = Date.now();
    if (this._pingTimer !== null || this._o.pingInterval <= 0) return;
    this._watchStream(this._o.pingInterval + this._o.pongTimeout);
  }

  _watchStream(delay) {
    const s = this._stream;
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      if (this._stream !== s) return;
      const limit = this._o.pingInterval + this._o.pongTimeout;
      const idle = Date.now() - this._lastSeen;
      if (idle < limit) {
        this._watchStream(limit - idle);
        return;
      }
      this._streamFailed(s, new LiveError("timeout", `live: the stream was silent for ${idle} ms`), false);
    }, delay);
  }
}
