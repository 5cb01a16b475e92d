// react.js: React bindings for live.js, the browser client of
// github.com/go-live/live. A plain ES module for the app's bundler: it
// imports "react" and "@tanstack/react-query" by name (the app's own
// copies) and live.js beside it.
//
//	<QueryClientProvider client={queryClient}>
//	  <LiveProvider url="/ws">
//	    <App />
//	  </LiveProvider>
//	</QueryClientProvider>
//
//	const { data, isLive } = useLiveData({ channel: "metrics:dashboard", queryKey: ["metrics"], fetcher });
//
// LiveProvider opens one connection for the page (live.js's createLive)
// when it mounts and closes it when it unmounts; nothing else reconnects it.
// The hooks subscribe through it, so every channel shares that connection,
// and a subscription made before the connection exists, or while it is
// down, waits for it. What the hooks fetch lives in the React Query cache
// under their queryKey.

import { createContext, createElement, useContext, useEffect, useInsertionEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { LiveError, createLive, liveList, liveState, mergeShallow } from "./live.js";

/** @typedef {import("./live").Connection} Connection */

const LiveContext = createContext(/** @type {any} */ (null));

function report(err) {
  if (typeof reportError === "function") reportError(err);
  else setTimeout(() => {
    throw err;
  });
}

function call(fn, ...args) {
  if (typeof fn !== "function") return;
  try {
    fn(...args);
  } catch (e) {
    report(e);
  }
}

/** hashKey identifies a query key by value, so that a new array with the same members is the same key. */
function hashKey(key) {
  return JSON.stringify(key);
}

/** useLatest returns a ref that holds the value of the last committed render. */
function useLatest(value) {
  const ref = useRef(value);
  useInsertionEffect(() => {
    ref.current = value;
  });
  return ref;
}

// ---------------------------------------------------------------------------
// The bridge between the components and the connection

/**
 * Bridge is what LiveProvider gives its children: subscriptions and
 * publishes that outlive any one connection. It forwards each hook's
 * subscription to the connection attached now, which keeps the channels,
 * their cursors and acknowledgements; when another connection is attached
 * (a remount, a new url, another client) it subscribes them there again,
 * from the cursors the last one reached, so nothing is missed in between.
 * It holds the subscriptions made before the provider's connection exists.
 */
class Bridge {
  constructor() {
    this.live = null;
    this.hooks = new Map(); // channel -> the hooks' subscriptions: Set of {callback, opts, cursor, stop}
    /** @type {Connection} */
    this.connection = { status: "connecting", reconnectAttempt: 0, delayed: false, ending: null };
    this.transport = null;
    this.statusListeners = new Set();
    this.errorListeners = new Set();
    this.waiting = []; // publishes made while no connection is attached
    this.queryClient = null;
    this.managed = new Map(); // hashKey -> count of hooks that keep that query themselves
    this.subscribe = this.subscribe.bind(this);
    this.publish = this.publish.bind(this);
    this.onStatus = this.onStatus.bind(this);
    this.getConnection = this.getConnection.bind(this);
    this.connect = this.connect.bind(this);
  }

  attach(live) {
    this.live = live;
    this.transport = live.transport;
    this.stopStatus = live.onStatus((c) => {
      this.transport = live.transport;
      const was = this.connection;
      if (c.status === was.status && c.reconnectAttempt === was.reconnectAttempt && c.delayed === was.delayed && c.ending === was.ending) return;
      this.connection = c;
      for (const l of [...this.statusListeners]) call(l);
    });
    this.stopErrors = live.onError((err) => this.emitError(err));
    for (const [channel, subs] of this.hooks) for (const sub of subs) this.open(channel, sub);
    for (const run of this.waiting.splice(0)) run();
  }

  detach() {
    if (!this.live) return;
    for (const [channel, subs] of this.hooks) {
      const cursor = this.live.cursor(channel); // before the last of them stops
      for (const sub of subs) if (cursor) sub.cursor = cursor;
    }
    for (const subs of this.hooks.values()) {
      for (const sub of subs) {
        sub.stop?.();
        sub.stop = null;
      }
    }
    this.stopStatus();
    this.stopErrors();
    this.live = null;
  }

  /** open subscribes a hook's subscription on the connection attached. */
  open(channel, sub) {
    const subs = this.hooks.get(channel);
    const o = sub.opts;
    sub.stop = this.live.subscribe(channel, (data, meta) => {
      call(sub.callback, data, meta);
      // The hub names the query this channel feeds (as the original LiveProvider does);
      // the channel's first hook feeds it, once per publication.
      if (Array.isArray(meta.queryKey) && this.queryClient && subs.values().next().value === sub && !this.managed.has(hashKey(meta.queryKey))) {
        this.queryClient.setQueryData(meta.queryKey, data);
      }
    }, { cursor: sub.cursor ?? undefined, onSubscribed: o.onSubscribed, onReset: o.onReset, onError: o.onError, onPresence: o.onPresence });
  }

  /** The hub's name for the connection attached now, or null. */
  get connectionID() {
    return this.live?.connectionID ?? null;
  }

  /**
   * subscribe is live.js's subscribe, for as long as the provider lives:
   * callback(data, meta) for each publication on channel, once and in
   * order. It returns the function that unsubscribes, which is safe to
   * call at any time, the connection open or not.
   */
  subscribe(channel, callback, opts = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("live: subscribe: channel must be a non-empty string");
    if (typeof callback !== "function") throw new TypeError("live: subscribe: callback must be a function");
    let subs = this.hooks.get(channel);
    if (!subs) {
      subs = new Set();
      this.hooks.set(channel, subs);
    }
    const sub = { callback, opts, cursor: typeof opts.cursor === "string" && opts.cursor ? opts.cursor : null, stop: null };
    subs.add(sub);
    if (this.live) this.open(channel, sub);
    return () => {
      if (!subs.delete(sub)) return;
      if (subs.size === 0 && this.hooks.get(channel) === subs) this.hooks.delete(channel);
      sub.stop?.(); // live.js sends nothing on a connection that is not open
      sub.stop = null;
    };
  }

  /**
   * publish is live.js's publish: it resolves with the publication's
   * cursor. Its failures also go to the provider's onError, so callers
   * that ignore the promise (as the original LiveProvider's callers did) leave no unhandled
   * rejection behind.
   */
  publish(channel, data, opts) {
    const p = this.live
      ? this.live.publish(channel, data, opts)
      : new Promise((resolve, reject) => this.waiting.push(() => this.live.publish(channel, data, opts).then(resolve, reject)));
    p.catch((err) => this.emitError(err));
    return p;
  }

  emitError(err) {
    for (const l of [...this.errorListeners]) call(l, err);
  }

  onStatus(listener) {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  getConnection() {
    return this.connection;
  }

  /** connect is live.js's connect, on the connection attached: again after a final ending. */
  connect() {
    this.live?.connect();
  }

  /** manage notes that a hook keeps the query key itself; it returns the function that undoes it. */
  manage(key) {
    const h = hashKey(key);
    this.managed.set(h, (this.managed.get(h) ?? 0) + 1);
    return () => {
      const n = this.managed.get(h) - 1;
      if (n > 0) this.managed.set(h, n);
      else this.managed.delete(h);
    };
  }
}

// ---------------------------------------------------------------------------
// LiveProvider and useLive

/**
 * LiveProvider connects the page to a hub for its children. Props: url,
 * sseURL and transport (live.js's options of those names; changing one
 * reconnects, and the channels resume from their cursors), options (the
 * rest of live.js's options, read when the connection is made), client (a
 * connection made by the app with createLive, used instead and not closed
 * by the provider) and onError (errors the hub reports, and failed
 * publishes). It needs a QueryClientProvider above it.
 *
 * The connection is made once per mount: status changes re-render the
 * children but never remake it, and a server restart is followed by one
 * reconnection with backoff, whatever the number of attempts.
 *
 * @param {import("./react").LiveProviderProps} props
 */
export function LiveProvider({ children, url, sseURL, transport, options, client, onError }) {
  const queryClient = useQueryClient();
  const [bridge] = useState(() => new Bridge());
  const optionsRef = useLatest(options);
  const onErrorRef = useLatest(onError);

  useEffect(() => {
    bridge.queryClient = queryClient;
  }, [bridge, queryClient]);

  useEffect(() => {
    bridge.errorListeners.add(forward);
    function forward(err) {
      call(onErrorRef.current, err);
    }
    return () => bridge.errorListeners.delete(forward);
  }, [bridge, onErrorRef]);

  useEffect(() => {
    const own = !client;
    const o = { ...optionsRef.current };
    if (url !== undefined) o.url = url;
    if (sseURL !== undefined) o.sseURL = sseURL;
    if (transport !== undefined) o.transport = transport;
    // StrictMode mounts, unmounts and mounts again at once: a connection
    // made on the first mount would be closed while it connects, which the
    // browser logs as a failed WebSocket. It is made a microtask later,
    // once the mount has stood; the hooks' subscriptions wait for it.
    let live = null;
    let gone = false;
    queueMicrotask(() => {
      if (gone) return;
      live = client ?? createLive(o);
      bridge.attach(live);
    });
    return () => {
      gone = true;
      if (!live) return;
      bridge.detach();
      if (own) live.close();
    };
  }, [bridge, client, url, sseURL, transport, optionsRef]);

  const connection = useSyncExternalStore(bridge.onStatus, bridge.getConnection, bridge.getConnection);
  const transportNow = bridge.transport;
  const value = useMemo(
    () => ({ connection, subscribe: bridge.subscribe, publish: bridge.publish, connect: bridge.connect, transport: transportNow, live: bridge }),
    [bridge, connection, transportNow],
  );
  return createElement(LiveContext.Provider, { value }, children);
}

/**
 * useLive returns the provider's connection state ({status,
 * reconnectAttempt, delayed, ending}), subscribe, publish, connect and the
 * transport in use. connection.ending is the last ending the server
 * decided (live.js's onEnd): after a final one the status is "removed" or
 * "signed-out" and nothing reconnects until connect().
 * @returns {import("./react").LiveContextValue}
 */
export function useLive() {
  const ctx = useContext(LiveContext);
  if (!ctx) throw new Error("useLive must be used within a LiveProvider");
  return ctx;
}

// ---------------------------------------------------------------------------
// useLiveData

/** How long useLiveData's first fetch waits for the subscription, by default. */
const defaultSubscribeTimeout = 3000;

/** How many updates are held while a fetch runs; past it the fetch is redone. */
const maxHeld = 10000;

/**
 * useLiveData keeps a query (queryKey, fetched by fetcher) up to date with
 * a channel: each publication is merged into the cached value with merge
 * (mergeShallow, the original's {...current, ...update}, by default) through
 * setQueryData. The first fetch waits for the subscription to be
 * acknowledged (up to subscribeTimeout ms; if it had to go on without it,
 * it is redone once the subscription is in), so no publication falls
 * between the fetched value and the stream. Publications that arrive
 * while a fetch runs are merged into its result. A reset (the hub could
 * not replay what the connection missed) invalidates the query, so it is
 * fetched again; a merge that throws does too. Merges should be
 * idempotent (setting values, not adding to them): one that lands in a
 * fetched value may be applied to it again.
 *
 * It returns useQuery's result, plus isLive.
 *
 * @param {import("./react").UseLiveDataOptions<any>} options
 */
export function useLiveData({ channel, queryKey, fetcher, merge = mergeShallow, subscribeTimeout = defaultSubscribeTimeout, onError, ...queryOptions }) {
  const { subscribe, connection, live: bridge } = useLive();
  const queryClient = useQueryClient();
  const key = hashKey(queryKey);
  const keyRef = useLatest(queryKey);
  const fetcherRef = useLatest(fetcher);
  const mergeRef = useLatest(merge);
  const onErrorRef = useLatest(onError);

  // The state the subscription and the query function share, one per
  // channel and key.
  const stRef = useRef(null);
  if (stRef.current === null || stRef.current.id !== channel + "\u0000" + key) {
    stRef.current = { id: channel + "\u0000" + key, acked: false, ackWaiters: [], early: false, redo: false, holding: 0, log: [], logStart: 0, mergedUpTo: 0 };
  }
  const st = stRef.current;

  useEffect(() => {
    const queryKey = keyRef.current;
    const fail = (err) => {
      call(onErrorRef.current, err);
      queryClient.invalidateQueries({ queryKey, exact: true });
    };
    const apply = (update) => {
      try {
        queryClient.setQueryData(queryKey, (current) => (current === undefined ? current : mergeRef.current(current, update)));
      } catch (e) {
        fail(e);
      }
    };
    st.apply = apply;
    const unmanage = bridge.manage(queryKey);
    const stop = subscribe(channel, (update) => {
      if (st.holding > 0 || queryClient.getQueryData(queryKey) === undefined) {
        if (st.log.length >= maxHeld) {
          st.logStart += st.log.length;
          st.log = [];
          st.mergedUpTo = st.logStart;
          queryClient.invalidateQueries({ queryKey, exact: true });
        }
        st.log.push(update);
        return;
      }
      apply(update);
    }, {
      onSubscribed: () => {
        const first = !st.acked;
        st.acked = true;
        for (const w of st.ackWaiters.splice(0)) w();
        // A fetch that went ahead without the subscription may have missed
        // publications: fetch again now that they flow (once it is done:
        // React Query does not restart a first fetch).
        if (first && st.early) {
          st.early = false;
          if (st.holding > 0) st.redo = true;
          else queryClient.invalidateQueries({ queryKey, exact: true });
        }
      },
      onReset: () => queryClient.invalidateQueries({ queryKey, exact: true }),
      onError: (err) => call(onErrorRef.current, err),
    });
    return () => {
      // A fetch waiting for the subscription waits for the next one (a
      // remount, as StrictMode does) or gives up after subscribeTimeout.
      stop();
      unmanage();
      st.acked = false;
    };
  }, [bridge, subscribe, queryClient, channel, key, st, keyRef, mergeRef, onErrorRef]);

  const query = useQuery({
    staleTime: Infinity, // publications keep it fresh
    ...queryOptions,
    queryKey,
    queryFn: async (ctx) => {
      if (!st.acked && subscribeTimeout > 0) {
        let timer;
        await new Promise((resolve) => {
          st.ackWaiters.push(resolve);
          timer = setTimeout(resolve, subscribeTimeout);
        });
        clearTimeout(timer);
      }
      if (!st.acked) st.early = true;
      st.holding++;
      const from = st.logStart + st.log.length;
      let data;
      let included = null;
      try {
        data = await fetcherRef.current(ctx);
        included = st.logStart + st.log.length;
        for (const update of st.log.slice(Math.max(0, from - st.logStart))) {
          data = data === undefined ? data : mergeRef.current(data, update);
        }
      } finally {
        // React Query stores the result after this returns: updates that
        // arrive until then are held, and applied to the stored value.
        const aborted = ctx.signal?.aborted;
        setTimeout(() => {
          st.holding--;
          if (included !== null && !aborted) st.mergedUpTo = Math.max(st.mergedUpTo, included);
          if (st.holding > 0) return;
          const rest = st.log.slice(Math.max(0, st.mergedUpTo - st.logStart));
          st.logStart += st.log.length;
          st.log = [];
          st.mergedUpTo = st.logStart;
          if (queryClient.getQueryData(queryKey) !== undefined) for (const update of rest) st.apply?.(update);
          if (st.redo) {
            st.redo = false;
            queryClient.invalidateQueries({ queryKey, exact: true });
          }
        }, 0);
      }
      return data;
    },
  });

  return { ...query, isLive: connection.status === "connected" };
}

// ---------------------------------------------------------------------------
// useDeltaSync and useLiveList: liveState and liveList, mirrored into the
// React Query cache

/**
 * useFollower makes a liveState or liveList with create(bridge) for as
 * long as deps stay the same, mirrors its value into the cache under
 * queryKey with value(f), and returns a slot that the query function
 * reads through: it loads through the follower, so a fetch (first or
 * after invalidateQueries) and the stream never race.
 */
function useFollower(queryKey, create, value, deps) {
  const { live: bridge } = useLive();
  const queryClient = useQueryClient();
  const keyRef = useLatest(queryKey);
  const [slot] = useState(() => new Slot());
  useEffect(() => {
    const queryKey = keyRef.current;
    const unmanage = bridge.manage(queryKey);
    const f = create(bridge);
    const entry = { f, closed: false, onClose: [] };
    const stop = f.onChange(() => queryClient.setQueryData(queryKey, value(f)));
    // Writes an earlier page left unsettled show at once, before the load
    // (which waits for the network, as React Query's does by default).
    if (f.pending > 0 && queryClient.getQueryData(queryKey) === undefined) queryClient.setQueryData(queryKey, value(f));
    slot.set(entry);
    return () => {
      entry.closed = true;
      for (const w of entry.onClose.splice(0)) w();
      stop();
      f.close();
      unmanage();
      slot.set(null);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [bridge, queryClient, slot, ...deps]);

  const queryFn = async () => {
    for (;;) {
      const entry = await slot.current();
      const ok = await new Promise((resolve) => {
        entry.onClose.push(() => resolve(false));
        (entry.f.loaded ? entry.f.refetch() : entry.f.ready).then(() => resolve(!entry.closed));
      });
      if (ok) return value(entry.f);
    }
  };
  return { slot, queryFn };
}

/** Slot holds the current follower; current() waits for one. */
class Slot {
  constructor() {
    this.entry = null;
    this.waiters = [];
  }

  set(entry) {
    this.entry = entry;
    if (entry) for (const w of this.waiters.splice(0)) w(entry);
  }

  current() {
    return this.entry ? Promise.resolve(this.entry) : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/**
 * useDeltaSync keeps the value of a State channel (Hub.State) in the
 * React Query cache under queryKey: initialFetcher answers {data,
 * version}; each versioned delta is applied in order, and a version gap,
 * a delta that cannot be applied or a reset makes it fetch again. It
 * fetches only once the subscription is acknowledged, so nothing falls in
 * between. invalidateQueries(queryKey) fetches again too.
 *
 * It returns useQuery's result, plus version and isLive.
 *
 * @param {unknown[]} queryKey
 * @param {string} channel
 * @param {() => Promise<{data: any, version: number}>} initialFetcher
 * @param {import("./react").UseDeltaSyncOptions} [options]
 */
export function useDeltaSync(queryKey, channel, initialFetcher, options = {}) {
  const { connection } = useLive();
  const fetcherRef = useLatest(initialFetcher);
  const onErrorRef = useLatest(options.onError);
  const [version, setVersion] = useState(0);
  const [pending, setPending] = useState(0);
  const { url, persist, offline } = options;
  const { slot, queryFn } = useFollower(
    queryKey,
    (bridge) => {
      const s = liveState(bridge, {
        channel,
        url,
        persist,
        offline,
        load: () => fetcherRef.current(),
        onError: (err) => call(onErrorRef.current, err),
      });
      s.onChange((_, v) => {
        setVersion(v);
        setPending(s.pending);
      });
      setPending(s.pending);
      return s;
    },
    (s) => s.value,
    [channel, url, hashKey(queryKey)],
  );
  const { onError: _, url: _u, persist: _p, offline: _o, ...queryOptions } = options;
  const query = useQuery({ staleTime: Infinity, ...queryOptions, queryKey, queryFn });
  // patch shows a merge patch at once and PATCHes it to options.url.
  const patch = async (changes, opts) => (await slot.current()).f.patch(changes, opts);
  return { ...query, version, isLive: connection.status === "connected", pending, patch };
}

/**
 * useLiveList keeps a list (queryKey; fetcher answers the array) in sync
 * with channel, whose publications are the list operations of the React LiveProvider pattern
 * ({"type":"add"|"update"|"remove"}, as Hub.Hook publishes them), and
 * makes add, update and remove optimistic: shown at once (an added item
 * with a temporary id and `_optimistic: true`), then replaced by the
 * server's item exactly once, whether the response or the broadcast comes
 * first (they are matched by the Live-Mutation-Id header), and rolled back
 * on an error, a conflict (409 or 412, which also refetches) or a timeout.
 * Mutations go to options.url (POST; default "/api/" + channel, as in the
 * original useLiveList) and options.itemURL(id) (PATCH and DELETE; default url/id).
 *
 * add, update and remove are React Query mutations' mutate: they return
 * nothing, and failures show in error and go to options.onError;
 * addAsync, updateAsync and removeAsync return the promise.
 *
 * @param {string} channel
 * @param {unknown[]} queryKey
 * @param {() => Promise<any[]>} [fetcher]
 * @param {import("./react").UseLiveListOptions<any>} [options]
 */
export function useLiveList(channel, queryKey, fetcher, options = {}) {
  const fetcherRef = useLatest(fetcher);
  const optionsRef = useLatest(options);
  const url = options.url ?? `/api/${channel}`;
  const [pending, setPending] = useState(0);
  const { slot, queryFn } = useFollower(
    queryKey,
    (bridge) => {
      const o = optionsRef.current;
      const list = liveList(bridge, {
        channel,
        url,
        itemURL: o.itemURL ? (id) => optionsRef.current.itemURL(id) : undefined,
        idField: o.idField,
        headers: o.headers,
        timeout: o.timeout,
        fetch: o.fetch,
        load: fetcherRef.current ? () => fetcherRef.current() : undefined,
        persist: o.persist,
        offline: o.offline,
        onError: (err) => call(optionsRef.current.onError, err),
      });
      list.onChange(() => setPending(list.pending));
      setPending(list.pending);
      return list;
    },
    (list) => list.items,
    [channel, url, hashKey(queryKey)],
  );
  const query = useQuery({ queryKey, queryFn, staleTime: Infinity });

  const list = async () => (await slot.current()).f;
  const failed = (err) => call(optionsRef.current.onError, err);
  // The list shows, keeps and sends again what is written offline itself:
  // React Query's default networkMode ("online") would pause the mutation
  // before the list saw it, and show nothing.
  const addMutation = useMutation({
    networkMode: "always",
    mutationFn: async (item) => (await list()).add(item),
    onError: failed,
  });
  const updateMutation = useMutation({
    networkMode: "always",
    mutationFn: async (item) => {
      if (item === null || typeof item !== "object") throw new TypeError("live: update: the item must be an object with its id");
      const idField = optionsRef.current.idField ?? "id";
      const { [idField]: id, ...changes } = item;
      const ifMatch = optionsRef.current.ifMatch?.(item);
      return (await list()).update(id, changes, ifMatch === undefined ? {} : { ifMatch });
    },
    onError: failed,
  });
  const removeMutation = useMutation({
    networkMode: "always",
    mutationFn: async (id) => (await list()).remove(id),
    onError: failed,
  });

  return {
    items: query.data ?? [],
    isLoading: query.isLoading,
    error: query.error ?? addMutation.error ?? updateMutation.error ?? removeMutation.error ?? null,
    add: addMutation.mutate,
    update: updateMutation.mutate,
    remove: removeMutation.mutate,
    addAsync: addMutation.mutateAsync,
    updateAsync: updateMutation.mutateAsync,
    removeAsync: removeMutation.mutateAsync,
    isAdding: addMutation.isPending,
    isUpdating: updateMutation.isPending,
    isRemoving: removeMutation.isPending,
    pending,
    refetch: async () => (await list()).refetch(),
  };
}

// ---------------------------------------------------------------------------
// usePresence

/**
 * usePresence follows who is subscribed to channel, a channel the hub
 * gives presence (Options.Presence), and returns {members, count, ready}:
 * the members sorted by user ({user, info, conns}; empty on a channel that
 * shows counts only), how many are here, and whether the hub has sent
 * them yet. options.onChange({members, count, joined, left}) is called on
 * every change (to show "Ann joined"), options.onError on a refusal. It
 * shares the channel's subscription with the page's other hooks.
 *
 * @param {string} channel
 * @param {import("./react").UsePresenceOptions} [options]
 * @returns {import("./react").PresenceState}
 */
export function usePresence(channel, options = {}) {
  const { live } = useLive();
  const [state, setState] = useState(emptyPresence);
  const optionsRef = useLatest(options);
  useEffect(() => {
    setState(emptyPresence);
    return live.subscribe(channel, () => {}, {
      onPresence: (p) => {
        setState({ members: p.members, count: p.count, ready: true });
        call(optionsRef.current.onChange, p);
      },
      onError: (err) => call(optionsRef.current.onError, err),
    });
  }, [live, channel, optionsRef]);
  return state;
}

const emptyPresence = { members: [], count: 0, ready: false };

export { LiveError };
