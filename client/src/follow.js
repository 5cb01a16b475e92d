// Follower: what liveState and liveList share.

import { call } from "./errors.js";
import { defaultFetch, request } from "./http.js";

/** maxHeld bounds the frames held during a fetch. */
const maxHeld = 10000;

/** Retrier runs one task at a time: again() while it runs makes it run once more; failures retry with backoff. */
class Retrier {
  constructor(task, minDelay, maxDelay, random) {
    this._task = task;
    this._min = minDelay;
    this._max = maxDelay;
    this._random = random;
    this._running = false;
    this._again = false;
    this._timer = null;
    this._failures = 0;
    this._stopped = false;
  }

  run() {
    if (this._stopped) return;
    if (this._running) {
      this._again = true;
      return;
    }
    clearTimeout(this._timer);
    this._timer = null;
    this._running = true;
    this._again = false;
    Promise.resolve()
      .then(() => this._task())
      .then(
        () => {
          this._failures = 0;
          this._running = false;
          if (this._again) this.run();
        },
        () => {
          this._running = false;
          if (this._stopped) return;
          this._failures++;
          const ceiling = Math.min(this._max, this._min * 2 ** Math.min(this._failures - 1, 30));
          this._timer = setTimeout(() => this.run(), Math.floor(this._random() * ceiling));
        },
      );
  }

  get running() {
    return this._running || this._timer !== null;
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
  }
}

// Follower is what liveState and liveList share: a value loaded from
// options.url (or by options.load), with retries, and kept in sync by a
// channel's frames, which wait in _buffer while a load runs. Subclasses set
// up their own fields, then call _follow; they provide _fetchValue, _load
// and _onFrame.
export class Follower {
  constructor(o, name) {
    if (typeof o.channel !== "string" || !o.channel) throw new TypeError(`live: ${name}: options.channel is required`);
    if (o.url === undefined && o.load === undefined) throw new TypeError(`live: ${name}: options.url or options.load is required`);
    if (o.load !== undefined && typeof o.load !== "function") throw new TypeError(`live: ${name}: options.load must be a function`);
    this._o = o;
    this._fetch = o.fetch ?? (o.url === undefined ? null : defaultFetch());
    this._loaded = false;
    this._waiters = []; // refetch() calls waiting for a load to end
    this._buffer = null; // frames that arrived during a fetch
    this._listeners = new Set();
    this._abort = new AbortController();
    this._closed = false;
    this._pending = []; // writes not yet settled, in the order they were made
    let ready;
    this.ready = new Promise((resolve) => (ready = resolve));
    this._ready = ready;
    if (o.onChange) this._listeners.add(o.onChange);
  }

  _follow(live) {
    this._live = live;
    this._loader = new Retrier(() => this._load(), 500, 30000, Math.random);
    this._unsubscribe = live.subscribe(this._o.channel, (data, meta) => this._onFrame(data, meta), {
      onSubscribed: () => {
        if (!this._loaded && !this._loader.running) this._loader.run();
        this._outbox?.connected();
      },
      onReset: () => this._refetch(),
      onError: (err) => this._error(err),
    });
  }

  /** _hold keeps a frame for after the fetch; too many, and the fetch runs again instead. */
  _hold(frame) {
    this._buffer ??= [];
    if (this._buffer.length >= maxHeld) {
      this._buffer = [];
      this._loader.run();
      return;
    }
    this._buffer.push(frame);
  }

  /** onChange calls listener after every change; it returns a function that stops the calls. */
  onChange(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /** Whether a value has been loaded. */
  get loaded() {
    return this._loaded;
  }

  /**
   * refetch loads afresh; a list keeps its pending mutations applied over
   * the new items. It resolves once a load that began after the call has
   * succeeded (failed loads are retried), or the follower is closed.
   * @returns {Promise<void>}
   */
  refetch() {
    if (this._closed) return Promise.resolve();
    const done = new Promise((resolve) => this._waiters.push(resolve));
    this._refetch();
    return done;
  }

  _refetch() {
    if (this._closed) return;
    this._buffer ??= []; // from now on, frames wait for the new value
    this._loader.run();
  }

  /** How many writes the server has not settled yet: in flight, or waiting for the network. */
  get pending() {
    return this._pending.length;
  }

  // Writes go through the subclass's outbox (this._outbox) and show at
  // once; _changed shows a change of what is pending (a list renders, a
  // state emits). The outbox calls _rollback, _settle and _restored.

  /** _write shows m and sends it. */
  _write(m) {
    this._pending.push(m);
    this._changed();
    return this._outbox.submit(m);
  }

  _drop(m) {
    const i = this._pending.indexOf(m);
    if (i >= 0) this._pending.splice(i, 1);
  }

  /** _rollback undoes m, which the server refused, unless its broadcast showed it was made after all. */
  _rollback(m, e) {
    if (!m.settled) {
      m.settled = true;
      this._drop(m);
      this._changed();
    }
    if (e.code === "conflict" && !this._closed) this._refetch();
  }

  /** _restored shows m, a write an earlier page left unsettled. */
  _restored(m) {
    this._pending.push(m);
    this._changed();
  }

  /** close stops following the channel and abandons requests in flight. */
  close() {
    this._closed = true;
    this._outbox?.close();
    this._loader.stop();
    this._abort.abort();
    this._unsubscribe();
    for (const resolve of this._waiters.splice(0)) resolve();
  }

  /**
   * _get loads the value: options.load() if given, else GET options.url.
   * It returns what the load answered, after check(body) accepted it,
   * and the refetch() calls the load answers.
   */
  async _get(check) {
    const waiting = this._waiters.splice(0);
    try {
      let body;
      if (this._o.load) {
        body = await this._o.load();
      } else {
        body = await request(this._fetch, this._o.url, {
          headers: { Accept: "application/json", ...this._o.headers },
          cache: "no-store",
          signal: this._abort.signal,
        }, this._o.timeout, `fetching ${this._o.channel}`);
      }
      check(body);
      return { body, waiting };
    } catch (e) {
      this._waiters.unshift(...waiting); // answered by a later load
      if (!this._closed) this._error(e);
      throw e;
    }
  }

  _error(err) {
    if (this._o.onError) call(this._o.onError, err);
  }
}
