// liveList: a list with optimistic mutations.

import { given } from "./options.js";
import { call, LiveError } from "./errors.js";
import { Follower } from "./follow.js";
import { hasOwn, isObject, listMerge } from "./merge.js";
import { newMutationID, Outbox } from "./outbox.js";

/**
 * liveList keeps a list of items from options.url (GET answers the array;
 * POST adds, PATCH and DELETE on itemURL(id) update and remove, as handlers
 * wrapped by Hub.Hook do) in sync with its channel, and makes mutations
 * optimistic: add, update and remove show at once, the added item marked
 * `_optimistic: true` under a temporary id, and are replaced by the
 * server's item exactly once, whether the HTTP response or the broadcast
 * (matched by the Live-Mutation-Id header) arrives first. A failed request,
 * a conflict (409 or 412, which also refetches) or a timeout rolls the
 * mutation back. options.load, if given, replaces the GET: a function
 * resolving with the array.
 *
 * Items are listed in the stream's order, newest add first: an add the
 * channel brings places its item once, at the add's position, whatever
 * order items reached the page in. Pending adds come first; then items
 * the server answered our adds with, until the channel brings their adds
 * (published after everything it has brought, they are the newest); then
 * the rest. A fetch's items keep the fetch's order until the channel
 * brings their adds.
 *
 * @param {import("../live").Live} live
 * @param {import("../live").LiveListOptions} options
 */
export function liveList(live, options) {
  return new LiveList(live, options);
}

class LiveList extends Follower {
  constructor(live, options) {
    const o = { idField: "id", headers: {}, timeout: 10000, ...given(options) };
    if (o.url === undefined) throw new TypeError("live: liveList: options.url is required");
    super(o, "liveList");
    o.itemURL ??= (id) => `${String(o.url).replace(/\/$/, "")}/${encodeURIComponent(String(id))}`;
    this._confirmed = []; // the server's list, as far as we know, in the stream's order
    // Where an item of _confirmed stands in the stream (see _place):
    this._fresh = new Set(); // ids the server answered our add with, whose add the stream has yet to bring: a prefix of _confirmed
    this._placed = new Set(); // ids the stream has added since the last load
    this._view = [];
    this._outbox = new Outbox(this, o, `list:${o.channel}:${o.url}`);
    this._follow(live);
    this._outbox.restore();
  }

  /** The list as shown: the server's, with pending mutations applied. */
  get items() {
    return this._view;
  }


  /**
   * add shows item at once, with a temporary id and `_optimistic: true`,
   * POSTs it, and resolves with the server's item.
   */
  add(item, opts = {}) {
    if (!isObject(item)) return Promise.reject(new TypeError("live: add: item must be an object"));
    const mid = newMutationID();
    const optimistic = { ...item, [this._o.idField]: mid, _optimistic: true };
    return this._mutate({ mid, type: "add", item: optimistic }, "POST", this._o.url, item, opts);
  }

  /**
   * update lays changes over the item with id at once (marked
   * `_optimistic: true` until settled), PATCHes them, and resolves with
   * the server's item. opts.ifMatch sends If-Match.
   */
  update(id, changes, opts = {}) {
    if (!isObject(changes)) return Promise.reject(new TypeError("live: update: changes must be an object"));
    const add = this._pending.find((m) => m.type === "add" && m.item[this._o.idField] === id);
    if (add && this._outbox.waiting(add)) {
      // Not sent yet: the add carries the changes.
      add.item = { ...add.item, ...changes, [this._o.idField]: id };
      add.body = { ...add.body, ...changes };
      this._outbox.save();
      this._render();
      return add.done;
    }
    if (add) {
      return Promise.reject(new LiveError("pending", "live: update: the item has not been created on the server yet"));
    }
    const mid = newMutationID();
    return this._mutate({ mid, type: "update", id, item: changes }, "PATCH", this._o.itemURL(id), changes, opts);
  }

  /** remove hides the item with id at once, DELETEs it, and resolves when the server has. */
  remove(id, opts = {}) {
    const add = this._pending.find((m) => m.type === "add" && m.item[this._o.idField] === id);
    if (add && this._outbox.waiting(add)) {
      // Not sent yet: it never will be.
      this._outbox.cancel(add, new LiveError("cancelled", "live: add: the item was removed before it was sent"));
      this._render();
      return Promise.resolve(undefined);
    }
    if (add) {
      return Promise.reject(new LiveError("pending", "live: remove: the item has not been created on the server yet"));
    }
    const mid = newMutationID();
    return this._mutate({ mid, type: "remove", id }, "DELETE", this._o.itemURL(id), undefined, opts);
  }

  _mutate(m, method, url, body, opts) {
    if (this._closed) return Promise.reject(new LiveError("closed", "live: the list is closed"));
    Object.assign(m, { method, url, body, ifMatch: opts.ifMatch === undefined ? undefined : String(opts.ifMatch), timeout: opts.timeout });
    return this._write(m);
  }

  _changed() {
    this._render();
  }

  _settle(m, result) {
    if (!m.settled) {
      m.settled = true;
      this._drop(m);
      this._confirm(m, result);
      this._render();
    }
  }

  /** _confirm applies what the server answered a mutation to the confirmed list. */
  _confirm(m, result) {
    const idf = this._o.idField;
    let op;
    switch (m.type) {
      case "add":
        if (isObject(result) && hasOwn(result, idf)) op = { type: "add", item: result };
        break; // without an id, the broadcast brings the item
      case "update":
        op = { type: "update", item: isObject(result) && hasOwn(result, idf) ? result : { ...m.item, [idf]: m.id } };
        break;
      case "remove":
        op = { type: "remove", id: m.id };
        break;
    }
    if (!op) return;
    const had = op.type === "add" && this._confirmed.some((it) => isObject(it) && it[idf] === op.item[idf]);
    try {
      this._confirmed = listMerge(idf, this._confirmed, op);
    } catch (e) {
      this._error(e);
      return;
    }
    // The stream will bring the new item's add after everything it has
    // brought so far: until then, the item is the newest.
    if (op.type === "add" && !had) this._fresh.add(op.item[idf]);
    if (op.type === "remove") this._forgetPlace(op.id);
  }

  async _load() {
    if (this._buffer === null) this._buffer = [];
    const { body: items, waiting } = await this._get((items) => {
      if (!Array.isArray(items)) throw new LiveError("bad_response", `live: fetching ${this._o.channel}: the response is not an array`);
    });
    if (this._closed) return;
    const buffered = this._buffer;
    this._buffer = null;
    this._confirmed = items;
    this._fresh.clear(); // the server's order now, until the stream says more
    this._placed.clear();
    this._loaded = true;
    // Events from after the subscription began: applying one the fetched
    // list already reflects changes nothing (list operations are
    // idempotent) but the place of an add, which the stream decides.
    for (const ev of buffered) this._applyEvent(ev);
    this._render();
    this._ready();
    for (const resolve of waiting) resolve();
  }

  _onFrame(ev) {
    if (this._buffer !== null || !this._loaded) {
      this._hold(ev);
      return;
    }
    this._applyEvent(ev);
    this._render();
  }

  _applyEvent(ev) {
    if (isObject(ev) && ev.type === "refetch") {
      // A bulk change announced as one event (live.SetEvent): reload.
      this._refetch();
      return;
    }
    try {
      this._confirmed = listMerge(this._o.idField, this._confirmed, ev);
    } catch (e) {
      this._error(e);
      this._refetch();
      return;
    }
    if (ev.type === "add") this._place(ev.item[this._o.idField]);
    else if (ev.type === "remove") this._forgetPlace(ev.id);
    // The broadcast of one of our mutations settles it, if the response
    // has not: the server's item is in the confirmed list now.
    const mid = isObject(ev) ? ev.mutationId : undefined;
    if (typeof mid === "string") {
      const m = this._pending.find((p) => p.mid === mid);
      if (m && !m.settled) {
        m.settled = true;
        this._drop(m);
        this._outbox.forget(m);
      }
    }
  }

  /**
   * _place puts the item with id, which the stream has just added, where
   * the stream says: after the items the server answered our adds with
   * whose adds the stream has yet to bring (their places in the stream are
   * later), before every other. The stream brings each channel's
   * publications once and in the order of their positions, so placing
   * each add as it comes keeps the list in that order, whatever order the
   * items reached the page in: a response before its broadcast, a replay
   * after a gap bringing older items after newer ones were shown, a fetch
   * listing items whose adds the stream brings after it. An item the
   * stream has placed already keeps its place: an add of an id present is
   * no change (mergeList).
   */
  _place(id) {
    if (this._placed.has(id)) return;
    this._placed.add(id);
    this._fresh.delete(id);
    const idf = this._o.idField;
    const items = this._confirmed;
    const i = items.findIndex((it) => isObject(it) && it[idf] === id);
    const at = this._fresh.size; // the fresh items are the first
    if (i < 0 || i === at) return;
    const next = items.slice();
    const [it] = next.splice(i, 1);
    next.splice(at, 0, it);
    this._confirmed = next;
  }

  /** _forgetPlace forgets where the removed item with id stood. */
  _forgetPlace(id) {
    this._fresh.delete(id);
    this._placed.delete(id);
  }

  /** _render recomputes the list as shown and tells the listeners. */
  _render() {
    const idf = this._o.idField;
    let view = this._confirmed;
    for (const m of this._pending) {
      switch (m.type) {
        case "add":
          view = [m.item, ...view];
          break;
        case "update":
          view = view.map((it) => (isObject(it) && it[idf] === m.id ? { ...it, ...m.item, [idf]: m.id, _optimistic: true } : it));
          break;
        case "remove":
          view = view.filter((it) => !(isObject(it) && it[idf] === m.id));
          break;
      }
    }
    if (view === this._view) return; // nothing changed
    this._view = view;
    for (const l of [...this._listeners]) call(l, view);
  }
}
