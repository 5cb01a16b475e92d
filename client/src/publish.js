// Publishes: those waiting for the hub's answer, each settled once, by its
// answer, its timeout, or the end of the connection that carried it.

import { LiveError } from "./errors.js";

/**
 * Publishes keeps the publishes waiting for an answer, by ref. A transport
 * sends each (over a WebSocket, a frame; over SSE and polling, a POST);
 * the hub's answer comes in a "published" or "error" frame with its ref,
 * or as the answer to the POST.
 */
export class Publishes {
  /**
   * @param {number} maxQueue how many may wait at once
   * @param {(ref: number, p: import("./link.js").Publish) => void} send sends one by the transport in use
   */
  constructor(maxQueue, send) {
    this._maxQueue = maxQueue;
    this._send = send;
    /** @type {Map<number, import("./link.js").Publish>} */
    this._waiting = new Map();
    this._ref = 0;
  }

  /**
   * publish sends data on channel and resolves with its cursor once the
   * hub acknowledges it; it rejects after timeout ms (0: never) without an
   * answer.
   * @returns {Promise<string>}
   */
  publish(channel, data, timeout) {
    try {
      if (JSON.stringify(data) === undefined) throw new TypeError("data is undefined");
    } catch (e) {
      return Promise.reject(new TypeError(`live: publish: data must be a JSON value: ${e.message}`));
    }
    if (this._waiting.size >= this._maxQueue) {
      return Promise.reject(new LiveError("queue_full", `live: publish: ${this._maxQueue} publishes are already waiting`, { channel }));
    }
    const ref = ++this._ref;
    /** @type {import("./link.js").Publish["frame"]} */
    const frame = { type: "publish", channel, data, ref };
    return new Promise((resolve, reject) => {
      /** @type {import("./link.js").Publish} */
      const p = { frame, sent: false, resolve, reject, timer: null, ctl: null };
      if (timeout > 0) {
        p.timer = setTimeout(() => {
          this._waiting.delete(ref);
          p.ctl?.abort();
          reject(new LiveError("timeout", `live: publish on ${channel}: no acknowledgement within ${timeout} ms`, { channel }));
        }, timeout);
      }
      this._waiting.set(ref, p);
      this._send(ref, p);
    });
  }

  /** sendUnsent sends again, by the transport in use now, those not sent yet. */
  sendUnsent() {
    for (const [ref, p] of this._waiting) if (!p.sent) this._send(ref, p);
  }

  /** published resolves p, the publish ref, with cursor, if it still waits. */
  published(ref, p, cursor) {
    if (this._waiting.get(ref) !== p) return;
    this._waiting.delete(ref);
    clearTimeout(p.timer);
    p.resolve(cursor);
  }

  /** failed rejects p, the publish ref, with err, if it still waits. */
  failed(ref, p, err) {
    if (this._waiting.get(ref) === p) this._fail(ref, p, err);
  }

  /** acknowledged resolves the publish ref with cursor; it reports whether one waited. */
  acknowledged(ref, cursor) {
    const p = this._waiting.get(ref);
    if (p) this.published(ref, p, cursor);
    return p !== undefined;
  }

  /**
   * refused rejects the publish ref with the hub's error code and detail
   * (its message, or the code); it reports whether one waited.
   */
  refused(ref, code, detail) {
    const p = this._waiting.get(ref);
    if (!p) return false;
    this._waiting.delete(ref);
    clearTimeout(p.timer);
    p.reject(new LiveError(code, `live: publish on ${p.frame.channel}: ${detail}`, { channel: p.frame.channel }));
    return true;
  }

  /**
   * sentLost rejects the publishes sent on a connection that was lost
   * (those a request carries settle with it) with err(channel): whether
   * the hub made them is unknown.
   */
  sentLost(err) {
    for (const [ref, p] of this._waiting) if (p.sent && !p.ctl) this._fail(ref, p, err(p.frame.channel));
  }

  /** failAll rejects every publish waiting with err(channel). */
  failAll(err) {
    for (const [ref, p] of this._waiting) this._fail(ref, p, err(p.frame.channel));
  }

  _fail(ref, p, err) {
    this._waiting.delete(ref);
    clearTimeout(p.timer);
    p.ctl?.abort();
    p.reject(err);
  }
}
