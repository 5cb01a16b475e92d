// liveState: the value of a State channel.

import { given } from "./options.js";
import { call, LiveError, MergeError } from "./errors.js";
import { Follower } from "./follow.js";
import { deltaApply, hasOwn, isObject, isStateReset, mergePatch, parseCursor } from "./merge.js";
import { newMutationID, Outbox } from "./outbox.js";

/**
 * liveState keeps the value of a State channel (Hub.State) in sync: once
 * the subscription is acknowledged it fetches {data, version} from
 * options.url, then applies each versioned delta. It refetches when a
 * delta does not follow its version (a gap) or cannot be applied, and on
 * a reset that carries no value; a reset that carries one is adopted.
 * Deltas that arrive during a fetch are applied after it, if newer.
 * options.load, if given, replaces the GET: a function resolving with
 * {data, version}.
 *
 * @param {import("../live").Live} live
 * @param {import("../live").LiveStateOptions} options
 */
export function liveState(live, options) {
  return new LiveState(live, options);
}

class LiveState extends Follower {
  constructor(live, options) {
    const o = { headers: {}, timeout: 10000, ...given(options) };
    super(o, "liveState");
    this._value = undefined;
    this._version = 0;
    this._outbox = new Outbox(this, o, `state:${o.channel}:${o.url}`);
    this._follow(live);
    this._outbox.restore();
  }

  /**
   * The current value, with the patches not yet settled laid over it;
   * undefined until the first fetch.
   */
  get value() {
    let v = this._value;
    if (v === undefined) return v;
    for (const m of this._pending) v = mergePatch(v, m.body);
    return v;
  }

  /**
   * patch shows changes (a JSON merge patch) at once and PATCHes them to
   * options.url, as Hub.State serves it; it resolves with the server's
   * {data, version}. Like liveList's writes, a patch that cannot reach the
   * server waits and goes again, in order, once back, also after a
   * reload; a refusal (opts.ifMatch sends If-Match: a 412 when the value
   * moved on) rolls it back.
   */
  patch(changes, opts = {}) {
    if (!isObject(changes)) return Promise.reject(new TypeError("live: patch: changes must be an object"));
    if (this._closed) return Promise.reject(new LiveError("closed", "live: the state is closed"));
    if (this._o.url === undefined) return Promise.reject(new TypeError("live: patch: options.url is required"));
    return this._write({ mid: newMutationID(), type: "patch", method: "PATCH", url: String(this._o.url), body: changes, ifMatch: opts.ifMatch === undefined ? undefined : String(opts.ifMatch), timeout: opts.timeout });
  }

  _changed() {
    this._emit();
  }

  _settle(m, result) {
    if (m.settled) return;
    m.settled = true;
    this._drop(m);
    // The answer is the value after the patch, at its version: newer than
    // what the stream brought so far, or already overtaken by it.
    if (isObject(result) && hasOwn(result, "data") && Number.isSafeInteger(result.version) && result.version > this._version && this._loaded) {
      this._value = result.data;
      this._version = result.version;
    }
    this._emit();
  }

  /** The version of the value: the position of the publication that made it. */
  get version() {
    return this._version;
  }

  async _load() {
    if (this._buffer === null) this._buffer = [];
    const { body, waiting } = await this._get((body) => {
      if (!isObject(body) || !hasOwn(body, "data") || !Number.isSafeInteger(body.version)) {
        throw new LiveError("bad_response", `live: fetching ${this._o.channel}: the response is not {"data":…,"version":N}`);
      }
    });
    if (this._closed) return;
    const buffered = this._buffer;
    this._buffer = null;
    this._value = body.data;
    this._version = body.version;
    this._loaded = true;
    for (const [data, meta] of buffered) {
      if (!this._apply(data, meta)) break;
    }
    this._emit();
    this._ready();
    for (const resolve of waiting) resolve();
  }

  _onFrame(data, meta) {
    if (this._buffer !== null || !this._loaded) {
      // A fetch is running (or has yet to): apply once it is done.
      this._hold([data, meta]);
      return;
    }
    if (this._apply(data, meta)) this._emit();
  }

  /** _apply folds one frame into the value; it returns false when a refetch is needed instead. */
  _apply(data, meta) {
    if (isStateReset(data)) {
      const pos = parseCursor(meta.cursor);
      if (hasOwn(data, "data") && pos) {
        if (pos.seq < this._version) return true; // older than the value we have
        this._value = data.data;
        this._version = pos.seq;
        return true;
      }
      this._refetch();
      return false;
    }
    if (isObject(data) && Number.isSafeInteger(data.version) && data.version <= this._version) return true; // in the fetched value already
    try {
      this._value = deltaApply(this._value, this._version, data);
      this._version = data.version;
      return true;
    } catch (e) {
      if (!(e instanceof MergeError && e.kind === "gap")) this._error(e);
      this._refetch();
      return false;
    }
  }

  _emit() {
    for (const l of [...this._listeners]) call(l, this.value, this._version);
  }
}
