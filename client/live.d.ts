// Type declarations for live.js, the browser client of
// github.com/go-live/live.

/** Arrays and objects nest at most this deep in merged values. */
export const MAX_DEPTH: 512;

/** The request header naming a mutation. */
export const MUTATION_ID_HEADER: "Live-Mutation-Id";

export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** The kinds of merge failure, named as in the shared test vectors. */
export type MergeErrorKind = "invalid" | "type" | "op" | "path" | "gap" | "depth";

export class MergeError extends Error {
  constructor(kind: MergeErrorKind, message: string);
  readonly name: "MergeError";
  /** Why the merge failed; "gap" means deltas were missed: refetch. */
  readonly kind: MergeErrorKind;
}

export class LiveError extends Error {
  constructor(code: string, message: string, extra?: { channel?: string; status?: number; body?: unknown });
  readonly name: "LiveError";
  /**
   * The hub's error code ("forbidden", "rate_limited", "unknown_channel",
   * …) or this client's: "closed", "disconnected", "timeout",
   * "queue_full", "network", "http", "conflict" (409 or 412),
   * "bad_response", "bad_frame", "pending".
   */
  readonly code: string;
  readonly channel?: string;
  /** The HTTP status, for failed requests. */
  readonly status?: number;
  /** The decoded JSON body of a failed request, if it had one. */
  readonly body?: unknown;
}

/** parseJSON parses text, throwing a MergeError of kind "invalid" or "depth". */
export function parseJSON(text: string): JSONValue;

export type Merge<T = any, U = any> = (current: T | null | undefined, update: U) => T;

/** Each update is the new value. */
export function mergeReplace<T = any>(current: unknown, update: T): T;
/** {...current, ...update}, useLiveData's default. */
export function mergeShallow<T extends object = Record<string, any>>(current: T | null | undefined, update: Partial<T>): T;
/** RFC 7386 JSON Merge Patch. */
export function mergePatch<T = any>(current: T | null | undefined, update: unknown): T;

export type ListUpdate<T> =
  | { type: "add"; item: T; mutationId?: string }
  | { type: "update"; item: Partial<T>; mutationId?: string }
  | { type: "remove"; id: string | number | boolean | null; mutationId?: string };

/** useLiveList's merge, for items identified by idField ("id"). */
export function mergeList<T extends object = Record<string, any>>(idField?: string): (current: T[] | null | undefined, update: ListUpdate<T>) => T[];

export interface Change {
  op: "add" | "update" | "remove";
  /** Members and array indices separated by dots: "items.3.title". */
  path: string;
  value?: JSONValue;
}

/** useDeltaSync's message: the changes from version-1 to version. */
export interface Delta {
  version: number;
  changes?: Change[] | null;
}

/** Applies delta to current, the value at version; throws a MergeError, of kind "gap" unless delta.version is version+1. */
export function applyDelta<T = any>(current: T | null | undefined, version: number, delta: Delta): T;

/** The changes that turn old into next, or ok false when a delta cannot express them. */
export function diff(old: unknown, next: unknown): { ok: true; changes: Change[] } | { ok: false; changes: null };

/** Splits a cursor "<seq>.<epoch>", or returns null. */
export function parseCursor(cursor: unknown): { seq: number; epoch: string } | null;

/**
 * "offline" while the browser says it has no network (nothing is tried
 * until it has); "removed" and "signed-out" after a final ending (see
 * Ending): nothing reconnects until connect().
 */
export type Status = "connecting" | "connected" | "disconnected" | "error" | "offline" | "removed" | "signed-out";

/**
 * An ending the server decided, on any transport. code is the WebSocket
 * close code (4001 the application disconnected the user, 1013 try again
 * later, 1001 the server going away, 1012 the server restarts: Hub.Drain),
 * which streams and polls carry in a "close" frame, or 401 when the hub
 * refused who the page is as it came back. 4001 and 401 are final (retry
 * false): the status becomes "removed" or "signed-out" and no
 * reconnection follows until connect(). After 1012 the status is
 * "connecting" until the client comes back, after the delay the server
 * gave ("restart; retry in N ms").
 */
export interface Ending {
  code: number;
  /** The server's reason ("disconnected by the server"), or the message of its refusal. */
  reason: string;
  /** Whether the client reconnects by itself. */
  retry: boolean;
  /** The transport the ending came on. */
  transport: Connection["transport"];
}

/** The LiveConnection of the React LiveProvider pattern. */
export interface Connection {
  status: Status;
  /** Failed or lost connections since the last one that opened. */
  reconnectAttempt: number;
  /** The transport in use: "websocket", or "sse" or "poll" once chosen or fallen back to. */
  transport: "websocket" | "sse" | "poll";
  /**
   * True while connected to a hub whose link to its broker broke: updates
   * are delayed, and arrive (or a reset) once the hub says they flow again.
   * A hub cut off for more than about 5 s ends the connection instead.
   */
  delayed: boolean;
  /** The last ending the server decided, until a connection opens; null when none. */
  ending: Ending | null;
}

/**
 * "auto" (the default) opens a WebSocket and, if the first one fails before
 * it opens (refused, blocked on the way, or not open within
 * connectTimeout), uses SSE from then on for this connection; once a
 * WebSocket has opened, later failures reconnect the WebSocket.
 */
export type Transport = "auto" | Connection["transport"];

export interface LiveOptions {
  /** Which transport to use. Default "auto". */
  transport?: Transport;
  /** The hub's WebSocket URL, relative to the page or absolute. Default "/ws". */
  url?: string | URL;
  /**
   * The hub's SSE URL, relative to the page or absolute: one stream of
   * every channel is GET sseURL?channels=a,b&cursor.a=…, and publishing
   * over SSE is POST sseURL/channel. Default "/api/live"; under the hub's
   * prefix mount, the prefix with its slash ("/live/").
   */
  sseURL?: string | URL;
  /** A connection not open within this many ms is given up (and, in "auto" mode, the first such WebSocket falls back to SSE). Default 10000. */
  connectTimeout?: number;
  /** Extra headers for the SSE transport's requests (a WebSocket cannot send any). */
  headers?: Record<string, string>;
  /** fetch's credentials for the SSE transport's requests. Default "same-origin". */
  credentials?: RequestCredentials;
  /**
   * Fetches a new credential when the hub says the connection's expires
   * (Identity.Expires: a "refresh" frame some time before, the ending
   * 4003 at it, a 401 "credentials_expired"): renew a cookie, or return
   * headers (a new Authorization) that join `headers`. The client then
   * reconnects at once from every channel's cursor, losing nothing; the
   * status is "connecting" meanwhile, with no error. A rejection goes to
   * onError listeners. Without it an expiry ends the connection as any
   * ending does, and the reconnection is refused ("signed-out") unless
   * the credential was renewed meanwhile.
   */
  refresh?: () => void | Record<string, string> | Promise<void | Record<string, string>>;
  /** The fetch function of the SSE transport. Default globalThis.fetch. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** Backoff bounds in ms: the wait after the n-th failure is uniform below min(maxBackoff, minBackoff·2^(n-1)). Defaults 1000 and 30000. */
  minBackoff?: number;
  maxBackoff?: number;
  /** How long publish waits for the hub's acknowledgement, in ms, connecting included. Default 10000. */
  publishTimeout?: number;
  /** Publishes that may wait at once. Default 1000. */
  maxQueue?: number;
  /**
   * After this long without a frame the client pings; 0 disables. Default
   * 25000 ms. A stream cannot be pinged: it is given up after
   * pingInterval + pongTimeout without a byte (the hub's heartbeat comes
   * every 15 s by default).
   */
  pingInterval?: number;
  /** A ping unanswered this long drops the connection. Default 10000 ms. */
  pongTimeout?: number;
  /** With "auto": a stream that brings no frame within this many ms is taken for buffered, and the client polls. Default 5000. */
  firstFrameTimeout?: number;
  /**
   * With "auto": how often the transports above the one in use are tried
   * again, in ms; 0 never. Default 300000. The first try after a move down
   * comes after min(30000, probeInterval). Polling tries the stream by
   * moving to it: behind a buffering proxy it comes back to polling after
   * firstFrameTimeout, each channel going on from its cursor.
   */
  probeInterval?: number;
  /** The WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: { new (url: string): WebSocket };
  /** Uniform in [0, 1), for the backoff jitter. Default Math.random. */
  random?: () => number;
}

export interface Meta {
  channel: string;
  /** The publication's cursor; null for coalesced list operations. */
  cursor: string | null;
  /** The channel's React Query key, when the hub names one. */
  queryKey?: string[];
  /** The event name of a text publication (live.Text) that has one; its data is the text. */
  event?: string;
}

export interface SubscribeOptions {
  /** Resume from this cursor (only for the channel's first subscriber). */
  cursor?: string;
  /** The hub could not replay what was missed: refetch. The stream continues after cursor. */
  onReset?: (cursor: string | null, reason: string) => void;
  /** The hub acknowledged the subscription: from now on publications arrive. */
  onSubscribed?: (cursor: string | null) => void;
  /** The hub refused the subscription or reported an error on the channel. */
  onError?: (err: LiveError) => void;
  /** On a presence channel: who is here, after each change; the listener of Live.presence, given with the subscription. */
  onPresence?: (p: Presence) => void;
}

/** A user subscribed to a presence channel; Info is the shape of the record the server's Identify gives. */
export interface Member<Info = unknown> {
  user: string;
  /** The public record the server's Identify gave the user. */
  info?: Info;
  /** The user's connections to the channel (tabs, devices). */
  conns: number;
}

/** A presence channel's members, as a presence listener gets them. */
export interface Presence<Info = unknown> {
  /** Sorted by user; empty on a channel that shows counts only. */
  members: Member<Info>[];
  /** Users plus anonymous connections. */
  count: number;
  /** Members who joined, or whose info or connection count changed, since the last call. */
  joined: Member<Info>[];
  /** Users who left since the last call. */
  left: string[];
}

/** The header naming the page's connection in its writes. */
export const CONNECTION_HEADER: "Live-Connection";

export interface Live {
  /** The connection state now. */
  readonly connection: Connection;
  /** connection.transport. */
  readonly transport: Connection["transport"];
  /** Calls listener now and on every change; returns a function that stops it. */
  onStatus(listener: (c: Connection) => void): () => void;
  /** Calls listener with every error the hub reports; returns a function that stops it. */
  onError(listener: (err: LiveError) => void): () => void;
  /** Calls listener with every ending the server decides, on any transport; returns a function that stops it. */
  onEnd(listener: (ending: Ending) => void): () => void;
  /** Connects again after a final ending (after a new login, say); otherwise reconnects now if a reconnection waits. Throws after close(). */
  connect(): void;
  /** Calls callback for each publication on channel, once and in order; returns the unsubscribe function. */
  subscribe<T = any>(channel: string, callback: (data: T, meta: Meta) => void, opts?: SubscribeOptions): () => void;
  /** Publishes data on channel (over SSE: a POST); resolves with its cursor once acknowledged. */
  publish(channel: string, data: unknown, opts?: { timeout?: number }): Promise<string>;
  /** The cursor the channel resumes from, or null. */
  cursor(channel: string): string | null;
  /** Follows who is subscribed to a presence channel; returns the function that stops. */
  presence<Info = unknown>(channel: string, listener: (p: Presence<Info>) => void, opts?: { onError?: (err: LiveError) => void }): () => void;
  /** The channel's presence as last received, or null. */
  members<Info = unknown>(channel: string): Pick<Presence<Info>, "members" | "count"> | null;
  /** The hub's name for the connection, sent as the Live-Connection header of writes; null before the first acknowledgement. */
  readonly connectionID: string | null;
  /** Closes the connection for good. */
  close(): void;
}

/** Opens the page's connection to a hub. */
export function createLive(options?: LiveOptions): Live;

type Fetch = (url: string, init: RequestInit) => Promise<Response>;

export interface LiveStateOptions<T = any> {
  /** The State's channel. */
  channel: string;
  /** Where GET answers {data, version} and patch() PATCHes: the State's own handler. Needed unless load is given, and for patch(). */
  url?: string;
  /** Loads {data, version} instead of GET url. */
  load?: () => Promise<{ data: T; version: number }>;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Request timeout in ms. Default 10000. */
  timeout?: number;
  fetch?: Fetch;
  onChange?: (value: T, version: number) => void;
  onError?: (err: Error) => void;
  /** As liveList's: keep patches that fail on the way and send them again once back. Default true. */
  offline?: boolean;
  /** As liveList's: keep waiting patches in localStorage. Default true. */
  persist?: boolean | string;
}

export interface LiveState<T = any> {
  /** The current value, with the patches not yet settled laid over it; undefined until the first fetch. */
  readonly value: T | undefined;
  /** The version of the value the server has confirmed. */
  readonly version: number;
  /** Patches the server has not settled yet. */
  readonly pending: number;
  /** Shows a JSON merge patch at once and PATCHes it to url; resolves with the server's {data, version}. */
  patch(changes: Partial<T>, opts?: { ifMatch?: string | number; timeout?: number }): Promise<{ data: T; version: number }>;
  /** Resolves once the first value is in. */
  readonly ready: Promise<void>;
  /** Whether a value has been loaded. */
  readonly loaded: boolean;
  onChange(listener: (value: T, version: number) => void): () => void;
  /** Loads afresh; resolves once a load begun after the call has succeeded, or on close. */
  refetch(): Promise<void>;
  close(): void;
}

/** Keeps the value of a State channel in sync. */
export function liveState<T = any>(live: Live, options: LiveStateOptions<T>): LiveState<T>;

export interface LiveListOptions<T = any> {
  /** The channel the list's changes are published on. */
  channel: string;
  /** The collection: GET answers the array (unless load is given), POST adds. */
  url: string;
  /** Loads the array instead of GET url. */
  load?: () => Promise<T[]>;
  /** An item's URL, for PATCH and DELETE. Default url + "/" + id. */
  itemURL?: (id: any) => string;
  /** The id member of items. Default "id". */
  idField?: string;
  headers?: Record<string, string>;
  /** Request timeout in ms; a mutation that times out is rolled back. Default 10000. */
  timeout?: number;
  /**
   * Writes that fail on the way (no network, 502–504) are kept, shown as
   * pending, and sent again in order once back; false rolls them back at
   * once instead. Default true.
   */
  offline?: boolean;
  /** Keep waiting writes in localStorage, so a reload keeps them: true (default), false, or the storage key. */
  persist?: boolean | string;
  fetch?: Fetch;
  onChange?: (items: Array<T & { _optimistic?: true }>) => void;
  onError?: (err: Error) => void;
}

export interface MutationOptions {
  /** Sent as If-Match; a 412 or 409 answer rolls back and refetches. */
  ifMatch?: string;
  timeout?: number;
}

export interface LiveList<T = any> {
  /**
   * The list as shown: the server's, with pending mutations applied, in
   * the stream's order (newest add first): pending adds, then items the
   * server answered our adds with whose adds the channel has yet to bring,
   * then the rest, each placed where the channel's add put it.
   */
  readonly items: Array<T & { _optimistic?: true }>;
  readonly ready: Promise<void>;
  /** Whether the list has been loaded. */
  readonly loaded: boolean;
  /** Mutations the server has not settled yet: in flight, or waiting for the network. */
  readonly pending: number;
  onChange(listener: (items: Array<T & { _optimistic?: true }>) => void): () => void;
  /** Shows item at once, POSTs it, resolves with the server's item. */
  add(item: Partial<T>, opts?: MutationOptions): Promise<T>;
  /** Shows changes at once, PATCHes them, resolves with the server's item. */
  update(id: any, changes: Partial<T>, opts?: MutationOptions): Promise<T | undefined>;
  /** Hides the item at once, DELETEs it. */
  remove(id: any, opts?: MutationOptions): Promise<unknown>;
  /** Loads afresh, pending mutations kept; resolves once a load begun after the call has succeeded, or on close. */
  refetch(): Promise<void>;
  close(): void;
}

/** Keeps a list in sync, with optimistic add, update and remove. */
export function liveList<T = any>(live: Live, options: LiveListOptions<T>): LiveList<T>;
