// The outbox: a follower's writes, kept and sent again in order.

import { offline } from "./connection.js";
import { LiveError } from "./errors.js";
import { CONNECTION_HEADER, MUTATION_ID_HEADER, request } from "./http.js";
import { isObject } from "./merge.js";

let mutationCounter = 0;

/**
 * retryable reports whether a failed write never reached the application
 * and may go through later: no network, or a proxy or server that is down.
 * A timeout is not: the server may be slow, not gone, and the write is
 * rolled back as the options' timeout asks.
 */
function retryable(e) {
  return e instanceof LiveError && (e.code === "network" || e.status === 502 || e.status === 503 || e.status === 504);
}

/**
 * An Outbox sends a follower's writes. Online, each goes at once. One that
 * fails on the way (no network, 502–504) is kept, with every
 * write after it, and they are sent again in order, one at a time, when
 * the browser is back online, the live connection is back, or after a
 * backoff (1 s doubling to 30 s). While the browser is offline
 * (navigator.onLine false) nothing is sent: writes wait, and go at once,
 * in order, on its "online" event. They are kept in localStorage (options.persist:
 * true by default, false for memory only, or a key of your own), so a
 * reload keeps them: they are shown as pending again and sent. Every write
 * carries its mutation id, which the hub's Hook recognises, so one sent
 * twice (its answer lost, or sent again after a reload) is applied once.
 * A write the server refuses (4xx, 409/412 conflicts, other 5xx) is rolled
 * back; its promise rejects, and a write restored after a reload, which no
 * one awaits, goes to options.onError.
 */
export class Outbox {
  constructor(f, o, name) {
    this._f = f;
    this._o = o;
    this._queue = []; // writes waiting for the network, in the order they were made
    this._flushing = false;
    this._timer = null;
    this._delay = 1000;
    this._seq = 0;
    this._unsettled = new Set(); // every write not settled, sent or waiting: what save keeps
    let storage = null;
    try {
      if (o.persist !== false && typeof localStorage !== "undefined") storage = localStorage;
    } catch {
      storage = null; // storage refused (privacy settings)
    }
    this._storage = storage;
    this._key = typeof o.persist === "string" ? o.persist : `live:outbox:${name}`;
    this._onOnline = () => {
      this._delay = 1000;
      this._flushSoon(0);
    };
    if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
  }

  /** submit sends m, or queues it behind writes waiting; it resolves with the server's answer. */
  submit(m) {
    this._track(m);
    if (this._queue.length > 0 || offline()) {
      this._queue.push(m);
      this.save();
      this._flushSoon(0);
    } else {
      this.save();
      this._send(m).then((r) => {
        if (r === "retry") this._hold(m);
      });
    }
    return m.done;
  }

  /** _track numbers m, gives it the promise its writer awaits, and keeps it until it settles. */
  _track(m) {
    m.seq = ++this._seq;
    m.settled = false;
    m.done = new Promise((resolve, reject) => {
      m.resolve = resolve;
      m.reject = reject;
    });
    m.done.catch(() => {}); // also reported to whoever awaits it, or to onError
    this._unsettled.add(m);
  }

  /** waiting reports whether m waits for the network, not sent yet. */
  waiting(m) {
    return this._queue.includes(m) && !m.inflight;
  }

  /** cancel drops m, not sent yet, rejecting its promise with err. */
  cancel(m, err) {
    this.forget(m);
    this._f._drop(m);
    m.settled = true;
    m.reject(err);
  }

  /** forget drops m from the outbox: settled by a broadcast, or cancelled. */
  forget(m) {
    const i = this._queue.indexOf(m);
    if (i >= 0) this._queue.splice(i, 1);
    this._unsettled.delete(m);
    this.save();
  }

  /** _hold keeps m, which failed on the way, to send again in order. */
  _hold(m) {
    if (this._f._closed || m.settled) return;
    if (!this._queue.includes(m)) {
      this._queue.push(m);
      this._queue.sort((a, b) => a.seq - b.seq);
    }
    this.save();
    this._flushSoon(this._delay);
    this._delay = Math.min(this._delay * 2, 30000);
  }

  /** _send makes m's request once: "ok", "failed" (rolled back) or "retry". */
  async _send(m) {
    const f = this._f;
    const headers = { Accept: "application/json", [MUTATION_ID_HEADER]: m.mid, ...this._o.headers };
    const conn = f._live?.connectionID;
    if (typeof conn === "string") headers[CONNECTION_HEADER] = conn;
    if (m.body !== undefined) headers["Content-Type"] = "application/json";
    if (m.ifMatch !== undefined) headers["If-Match"] = m.ifMatch;
    m.inflight = true;
    let result;
    try {
      result = await request(f._fetch, m.url, {
        method: m.method,
        headers,
        body: m.body === undefined ? undefined : JSON.stringify(m.body),
        signal: f._abort.signal,
      }, m.timeout ?? this._o.timeout, `${m.method} ${m.url}`);
    } catch (e) {
      m.inflight = false;
      if (m.settled) return "ok"; // the broadcast settled it meanwhile
      if (retryable(e) && this._o.offline !== false && !f._closed) return "retry";
      this.forget(m);
      f._rollback(m, e);
      if (m.restored) f._error(e);
      m.reject(e);
      return "failed";
    }
    m.inflight = false;
    this.forget(m);
    f._settle(m, result);
    m.resolve(result);
    return "ok";
  }

  _flushSoon(delay) {
    // Offline, a request can only fail: the browser's "online" sends.
    if (this._f._closed || this._queue.length === 0 || offline()) return;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._flush();
    }, delay);
  }

  /** _flush sends the waiting writes in order, one at a time, until one cannot go. */
  async _flush() {
    if (this._flushing) return;
    this._flushing = true;
    try {
      while (this._queue.length > 0 && !this._f._closed) {
        const m = this._queue[0];
        if (m.settled) {
          this.forget(m);
          continue;
        }
        if ((await this._send(m)) === "retry") {
          this._hold(m);
          return;
        }
      }
      this._delay = 1000;
    } finally {
      this._flushing = false;
    }
  }

  /** connected is called when the live connection is back: time to send. */
  connected() {
    this._delay = 1000;
    this._flushSoon(0);
  }

  /** save writes every write not settled to storage. */
  save() {
    if (!this._storage) return;
    const all = [...this._unsettled].filter((m) => !m.settled).sort((a, b) => a.seq - b.seq);
    try {
      if (all.length === 0) this._storage.removeItem(this._key);
      else this._storage.setItem(this._key, JSON.stringify(all.map((m) => ({ mid: m.mid, type: m.type, id: m.id, item: m.item, method: m.method, url: m.url, body: m.body, ifMatch: m.ifMatch }))));
    } catch {
      // full or refused: the writes are kept in memory still
    }
  }

  /** restore shows the writes a previous page left unsettled as pending, and sends them again. */
  restore() {
    if (!this._storage) return;
    let saved;
    try {
      saved = JSON.parse(this._storage.getItem(this._key) ?? "[]");
    } catch {
      saved = [];
    }
    if (!Array.isArray(saved)) return;
    for (const r of saved) {
      if (!isObject(r) || typeof r.mid !== "string" || typeof r.method !== "string" || typeof r.url !== "string") continue;
      const m = { ...r, restored: true };
      this._track(m);
      this._queue.push(m);
      this._f._restored(m);
    }
    this._flushSoon(0);
  }

  close() {
    clearTimeout(this._timer);
    this._timer = null;
    if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
  }
}

export function newMutationID() {
  if (typeof crypto !== "undefined" && typeof crypto.randomUUID === "function") return "m-" + crypto.randomUUID();
  return `m-${Date.now().toString(36)}-${(++mutationCounter).toString(36)}-${Math.random().toString(36).slice(2)}`;
}
