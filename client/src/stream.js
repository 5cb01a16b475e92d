// The SSE and long-poll transports.

import { LiveError } from "./errors.js";
import { httpError, request, validChannel } from "./http.js";
import { isObject } from "./merge.js";

/** The longest a hub holds a poll (live's maxHold). */
const maxHold = 25000;

/**
 * A poll that brings nothing new is followed by the next no sooner than
 * pollPace ms after it was sent, doubling with each such poll up to
 * maxPollPace: a hub or proxy that answers at once with nothing the client
 * takes cannot make it poll in a loop. A poll that brings news resets it.
 */
const pollPace = 250;
const maxPollPace = 5000;

/** The longest line a stream may send; past it the stream is given up. */
const maxLine = 16 << 20;

/**
 * A StreamTransport carries frames over one multiplexed SSE stream of
 * every channel, or, polling, over one long-poll after another; each is a
 * request from the channels' cursors, made again when the set of channels
 * changes. Publishes are POSTs.
 */
export class StreamTransport {
  constructor(live, poll) {
    this.live = live;
    this.poll = poll;
    this.name = poll ? "poll" : "sse";
    this._stream = null; // the stream or poll: {ctl, names, open, poll, framed, firstTimer, sent}
    this._paced = null; // the next poll, waiting after one that brought nothing new: {timer, names}
    this._pace = 0; // how long that wait is, from the last poll's start
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
    this._unpace();
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

  /**
   * refuses reports whether an error frame for ch keeps it out of later
   * requests: a channel refused before its acknowledgement (a poll does
   * not acknowledge again what it resumes), until the next reconnection.
   */
  refuses(ch) {
    return !ch.acked || this.poll;
  }

  /** publish sends a publish as a POST to sseURL/channel. */
  publish(ref, p) {
    p.sent = true;
    p.ctl = new AbortController();
    const { channel, data } = p.frame;
    let url;
    try {
      url = `${this.live._sseURL()}/${encodeURIComponent(channel)}`;
    } catch (e) {
      this.live._failPublish(ref, p, new LiveError("network", `live: publish on ${channel}: ${e.message}`, { channel }));
      return;
    }
    request(this.live._fetch(), url, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json", ...this.live._o.headers },
      credentials: this.live._o.credentials,
      body: JSON.stringify(data),
      signal: p.ctl.signal,
    }, 0, `publish on ${channel}`).then(
      (body) => {
        if (this.live._publishes.get(ref) !== p) return;
        this.live._publishes.delete(ref);
        clearTimeout(p.timer);
        p.resolve(isObject(body) && typeof body.cursor === "string" ? body.cursor : "");
      },
      (e) => {
        if (this.live._publishes.get(ref) !== p) return;
        if (e instanceof LiveError && e.channel === undefined) e.channel = channel;
        this.live._failPublish(ref, p, e);
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
    for (const ch of this.live._channels.values()) {
      if (!ch.refused && !validChannel(ch.name)) {
        ch.refused = "invalid";
        const err = new LiveError("bad_channel", `live: ${ch.name.slice(0, 140)}: a channel name is 1 to 128 of A-Z a-z 0-9 _ - : . @ = +, and not "." or ".."`, { channel: ch.name });
        for (const sub of [...ch.subs]) this.live._emitError(err, sub);
      }
      if (!ch.refused) out.push(ch);
    }
    return out;
  }

  /** _channelsChanged opens a stream for the new set of channels once the current task is done. */
  _channelsChanged() {
    if (this.live._closed || this._reopenTimer !== null) return;
    this._reopenTimer = setTimeout(() => {
      this._reopenTimer = null;
      // While a reconnection waits, it will take the new set.
      if (this.live._closed || this.live._final !== null || this.live._offline || this.live._t !== this || this.live._timer !== null) return;
      const want = this._streamable().map((ch) => ch.name);
      const have = this._stream?.names ?? this._paced?.names ?? [];
      if (want.length === 0 && !this._stream) {
        this.live._setStatus("connected", 0); // nothing to stream: nothing can fail either
        return;
      }
      if (want.length === have.length && want.every((n) => have.includes(n))) return;
      this._dropStream(this.poll);
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
    if (this.live._closed || this.live._final !== null || this.live._offline || this._stream || this.live._timer !== null) return;
    clearTimeout(this._reopenTimer);
    this._reopenTimer = null;
    this._unpace();
    if (!planned) {
      // A new connection asks again for the channels the hub refused.
      for (const ch of this.live._channels.values()) if (ch.refused === "hub") ch.refused = false;
    }
    const chans = this._streamable();
    if (chans.length === 0) {
      // Nothing to stream: nothing can fail either. A connection just made
      // waits for the subscriptions of the task that made it.
      if (planned) this.live._setStatus("connected", 0);
      else this._channelsChanged();
      return;
    }
    const poll = this.poll;
    const s = { ctl: new AbortController(), names: chans.map((ch) => ch.name), open: false, poll, framed: false, firstTimer: null, sent: Date.now() };
    this._stream = s;
    // A poll leaves out the acknowledgements of the channels it resumes:
    // those go on as they were. A channel resumed without one (a saved
    // cursor, or one reached over another transport) asks for it, as its
    // data is taken only once it is acknowledged.
    for (const ch of this.live._channels.values()) ch.acked = poll && chans.includes(ch) && ch.cursor !== null && ch.acked;
    const acks = poll ? chans.filter((ch) => ch.cursor && !ch.acked).map((ch) => ch.name) : [];
    if (!replacing || this.live._conn.status !== "connected") this.live._setStatus("connecting", this.live._conn.reconnectAttempt);
    let url;
    try {
      const q = new URLSearchParams();
      q.set("channels", s.names.join(","));
      for (const ch of chans) if (ch.cursor) q.set("cursor." + ch.name, ch.cursor);
      if (poll) {
        q.set("poll", "");
        if (acks.length > 0) q.set("ack", acks.join(","));
        for (const ch of chans) if (ch.presence?.tag) q.set("presence." + ch.name, ch.presence.tag);
      }
      // A prefix mount ("/live/") streams several channels at the prefix
      // itself: keep its slash.
      const base = this.live._sseURL() + (/\/$/.test(this.live._o.sseURL) ? "/" : "");
      url = `${base}${base.includes("?") ? "&" : "?"}${q}`;
    } catch (e) {
      this._streamFailed(s, new LiveError("network", `live: cannot open the stream: ${e.message}`), true);
      return;
    }
    if (this.live._o.connectTimeout > 0) {
      // A poll is answered when there is news, or after the hub's hold.
      const limit = this.live._o.connectTimeout + (poll ? maxHold : 0);
      this._openTimer = setTimeout(() => {
        this._openTimer = null;
        if (this._stream === s && !s.open) this._streamFailed(s, new LiveError("timeout", `live: the ${poll ? "poll was not answered" : "stream did not open"} within ${limit} ms`), false);
      }, limit);
    }
    if (!poll && this.live._o.transport === "auto" && this.live._o.firstFrameTimeout > 0) {
      // The hub acknowledges every channel at once: a stream that brings
      // nothing is held up on the way, by a proxy that buffers it.
      s.firstTimer = setTimeout(() => {
        if (this._stream === s && !s.framed) this.live._moveTo("poll");
      }, this.live._o.firstFrameTimeout);
    }
    Promise.resolve()
      .then(() => this.live._fetch()(url, {
        headers: { Accept: poll ? "application/json" : "text/event-stream", ...this.live._o.headers },
        credentials: this.live._o.credentials,
        cache: "no-store",
        signal: s.ctl.signal,
      }))
      .then(async (res) => {
        if (this._stream !== s) return;
        clearTimeout(this._openTimer);
        this._openTimer = null;
        if (!res.ok) {
          const err = await httpError(res, "opening the stream");
          if (this._stream === s) this._streamRefused(s, err);
          return;
        }
        const type = res.headers.get("Content-Type") ?? "";
        if (poll) {
          await this._readPoll(s, res, type);
          return;
        }
        if (!/^text\/event-stream\b/i.test(type) || !res.body) {
          this._streamFailed(s, new LiveError("bad_response", `live: the stream answered ${JSON.stringify(type.slice(0, 60))}, not text/event-stream`, { status: res.status }), true);
          return;
        }
        s.open = true;
        this._alive();
        this.live._setStatus("connected", 0);
        await this._read(s, res.body);
      })
      .catch((e) => {
        if (this._stream !== s) return;
        this._streamFailed(s, e instanceof LiveError ? e : new LiveError("network", `live: the stream failed: ${e?.message ?? e}`), false);
      });
  }

  /**
   * _readPoll handles a poll's answer, a JSON array of frames, and sends
   * the next poll from the cursors they moved: at once after news, paced
   * after a poll that brought nothing new (see pollPace).
   */
  async _readPoll(s, res, type) {
    if (!/^application\/json\b/i.test(type)) {
      this._streamFailed(s, new LiveError("bad_response", `live: the poll answered ${JSON.stringify(type.slice(0, 60))}, not application/json`, { status: res.status }), true);
      return;
    }
    s.open = true;
    this._alive();
    this.live._setStatus("connected", 0);
    const frames = await res.json();
    if (this._stream !== s) return;
    if (!Array.isArray(frames)) {
      this._streamFailed(s, new LiveError("bad_response", "live: the poll answered something other than an array of frames", { status: res.status }), true);
      return;
    }
    s.framed = true;
    this.live._everStreamed = true;
    let news = false;
    for (const m of frames) {
      if (this.live._frame(m)) news = true;
      if (this._stream !== s) return;
    }
    // The next poll, keeping the subscriptions acknowledged.
    this._stream = null;
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    this._openTimer = this._pingTimer = null;
    // A poll held as long as the longest pace (the hub had nothing for
    // it) was not hot either.
    const held = Date.now() - s.sent >= maxPollPace;
    this._pace = news || held ? 0 : Math.min(maxPollPace, this._pace > 0 ? this._pace * 2 : pollPace);
    const wait = s.sent + this._pace - Date.now();
    if (wait <= 0) {
      this._openStream(true, true);
      return;
    }
    const paced = { names: s.names, timer: null };
    paced.timer = setTimeout(() => {
      if (this._paced !== paced) return;
      this._paced = null;
      this._openStream(true, true);
    }, wait);
    this._paced = paced;
  }

  /** _unpace forgets the poll waiting for its pace: another replaces it. */
  _unpace() {
    if (!this._paced) return;
    clearTimeout(this._paced.timer);
    this._paced = null;
  }

  /** _read parses the stream's events and handles each one's data as a frame. */
  async _read(s, body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = null; // the data lines of the event being read
    for (;;) {
      const { done, value } = await reader.read();
      if (this._stream !== s) {
        reader.cancel().catch(() => {});
        return;
      }
      if (done) break;
      this._alive();
      buf += decoder.decode(value, { stream: true });
      let pos = 0;
      while (pos < buf.length) {
        const lf = buf.indexOf("\n", pos);
        const cr = buf.indexOf("\r", pos);
        let end;
        let next;
        if (cr >= 0 && (lf < 0 || cr < lf)) {
          if (cr === buf.length - 1) break; // a CR LF may be split across chunks
          end = cr;
          next = buf[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else if (lf >= 0) {
          end = lf;
          next = lf + 1;
        } else {
          break;
        }
        const line = buf.slice(pos, end);
        pos = next;
        if (line === "") {
          if (data !== null) {
            const frame = data;
            data = null;
            if (!s.framed) {
              s.framed = true;
              this.live._everStreamed = true;
              clearTimeout(s.firstTimer);
            }
            this.live._handle(frame);
            if (this._stream !== s) {
              reader.cancel().catch(() => {});
              return;
            }
          }
          continue;
        }
        if (line[0] === ":") continue; // a comment: the hub's heartbeat
        const colon = line.indexOf(":");
        if ((colon < 0 ? line : line.slice(0, colon)) !== "data") continue; // no id, event or retry is sent
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v[0] === " ") v = v.slice(1);
        data = data === null ? v : data + "\n" + v;
      }
      buf = buf.slice(pos);
      if (buf.length + (data?.length ?? 0) > maxLine) {
        this._streamFailed(s, new LiveError("bad_frame", `live: the stream sent an event longer than ${maxLine} bytes`), true);
        reader.cancel().catch(() => {});
        return;
      }
    }
    this._streamFailed(s, new LiveError("disconnected", "live: the stream ended"), false);
  }

  /**
   * _streamRefused handles an HTTP error answering the stream. 400, 403
   * and 404 refuse its channels (each subscriber hears why), which are
   * not asked for again until the next reconnection; anything else is a
   * failed connection, retried after the backoff.
   */
  _streamRefused(s, err) {
    if (err.status === 401) {
      // Who the page is was refused: a final ending.
      this._dropStream();
      this.live._emitError(err);
      this.live._refused(err);
      return;
    }
    if (err.status !== 400 && err.status !== 403 && err.status !== 404) {
      this._streamFailed(s, err, true);
      return;
    }
    this._dropStream();
    for (const name of s.names) {
      const ch = this.live._channels.get(name);
      if (!ch) continue;
      ch.refused = "hub";
      const e = new LiveError(err.code, err.message, { channel: name, status: err.status, body: err.body });
      for (const sub of [...ch.subs]) this.live._emitError(e, sub);
    }
    this._openStream(true, false); // the rest, if some came meanwhile
  }

  /** _streamFailed gives up the stream s and schedules a reconnection. */
  _streamFailed(s, err, report) {
    if (this._stream !== s) return;
    if (!s.poll && this.live._o.transport === "auto" && !this.live._everStreamed) {
      // No stream has ever brought a frame here: try polling.
      this.live._moveTo("poll");
      return;
    }
    this._dropStream();
    this.live._setStatus("error", this.live._conn.reconnectAttempt);
    if (report) this.live._emitError(err);
    this.live._lost();
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
    if (!keepAcks) for (const ch of this.live._channels.values()) ch.acked = false;
  }

  /**
   * _alive notes that the stream works. A stream cannot be pinged: the
   * hub's heartbeat comments keep it alive, and it is given up after
   * pingInterval + pongTimeout of silence.
   */
  _alive() {
    this._lastSeen = Date.now();
    if (this._pingTimer !== null || this.live._o.pingInterval <= 0) return;
    this._watchStream(this.live._o.pingInterval + this.live._o.pongTimeout);
  }

  _watchStream(delay) {
    const s = this._stream;
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      if (this._stream !== s) return;
      const limit = this.live._o.pingInterval + this.live._o.pongTimeout;
      const idle = Date.now() - this._lastSeen;
      if (idle < limit) {
        this._watchStream(limit - idle);
        return;
      }
      this._streamFailed(s, new LiveError("timeout", `live: the stream was silent for ${idle} ms`), false);
    }, delay);
  }
}
