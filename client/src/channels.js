// Channels: the channels the page follows, each with one subscription
// that its subscribers share, the cursor it resumes from and its presence.

import { call, LiveError } from "./errors.js";
import { followPresence, membersOf } from "./presence.js";

/**
 * Channels keeps the channels subscribed, by name, and tells the
 * transport in use of each channel gained (added) and dropped (removed).
 */
export class Channels {
  /**
   * @param {{closed: () => boolean, added: (ch: import("./link.js").Channel) => void, removed: (ch: import("./link.js").Channel) => void}} to
   */
  constructor(to) {
    this._to = to;
    /** @type {Map<string, import("./link.js").Channel>} */
    this._byName = new Map();
  }

  /** get returns the channel named name, or undefined. */
  get(name) {
    return this._byName.get(name);
  }

  /** values returns the channels subscribed. */
  values() {
    return this._byName.values();
  }

  /** cursor returns the cursor the channel resumes from, or null. */
  cursor(name) {
    return this._byName.get(name)?.cursor ?? null;
  }

  /** members returns the channel's presence as last received ({members, count}), or null. */
  members(name) {
    return membersOf(this._byName.get(name));
  }

  /**
   * subscribe calls callback(data, meta) for every publication on channel,
   * in order, each once, and returns a function that unsubscribes.
   * Callers of one channel share its subscription. opts.cursor resumes
   * from a saved cursor (only for the channel's first subscriber);
   * opts.onReset(cursor, reason) is called when the hub could not replay
   * what was missed: refetch the channel's state. opts.onSubscribed(cursor)
   * is called whenever the hub acknowledges the subscription, after which
   * publications reach the callback; opts.onError(err) on a refusal;
   * opts.onPresence(presence) on a presence channel (see Live.presence).
   */
  subscribe(channel, callback, opts = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("live: subscribe: channel must be a non-empty string");
    if (typeof callback !== "function") throw new TypeError("live: subscribe: callback must be a function");
    if (this._to.closed()) throw new LiveError("closed", "live: subscribe after close");
    let ch = this._byName.get(channel);
    if (!ch) {
      ch = { name: channel, cursor: typeof opts.cursor === "string" && opts.cursor ? opts.cursor : null, acked: false, refused: false, subs: new Set() };
      this._byName.set(channel, ch);
      this._to.added(ch);
    }
    /** @type {import("./link.js").Subscriber} */
    const sub = { callback, onReset: opts.onReset, onSubscribed: opts.onSubscribed, onError: opts.onError, onPresence: opts.onPresence };
    ch.subs.add(sub);
    if (ch.acked && sub.onSubscribed) {
      const cursor = ch.cursor;
      queueMicrotask(() => ch.subs.has(sub) && call(sub.onSubscribed, cursor));
    }
    followPresence(ch, sub);
    return () => {
      if (!ch.subs.delete(sub) || ch.subs.size > 0 || this._byName.get(channel) !== ch) return;
      this._byName.delete(channel);
      this._to.removed(ch);
    };
  }
}
