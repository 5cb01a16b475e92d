// Options: createLive's options, their defaults and their checks, and
// given, which every function taking options uses.

const transports = ["auto", "websocket", "sse", "poll"];

/**
 * liveOptions returns createLive's options with their defaults, and
 * throws a TypeError for a transport it does not know or a "websocket"
 * without a WebSocket constructor. The options: transport ("auto", the
 * default: the best transport that works, see createLive; "websocket";
 * "sse"; "poll"), url (the WebSocket, default "/ws"), sseURL (the
 * multiplexed stream and HTTP publishing, default "/api/live"; under the
 * hub's prefix mount, the prefix with its slash, "/live/"), both relative
 * to the page; minBackoff and maxBackoff in ms (1000 and 30000: the wait
 * before reconnecting is drawn uniformly below min(maxBackoff,
 * minBackoff·2^n) after the n-th failure, and starts again from
 * minBackoff once a connection opens), connectTimeout (10000 ms),
 * publishTimeout (10000 ms), maxQueue (publishes held while
 * disconnected, 1000), pingInterval (25000 ms; 0 disables the liveness
 * check), pongTimeout (10000 ms), headers and credentials (for the SSE
 * transport's requests), firstFrameTimeout (5000 ms) and probeInterval
 * (300000 ms; 0 never probes) for "auto", WebSocket and fetch (for tests)
 * and random (Math.random, for tests).
 * @param {import("../live").LiveOptions} [options]
 */
export function liveOptions(options) {
  const o = {
    url: "/ws",
    sseURL: "/api/live",
    transport: "auto",
    minBackoff: 1000,
    maxBackoff: 30000,
    connectTimeout: 10000,
    publishTimeout: 10000,
    maxQueue: 1000,
    pingInterval: 25000,
    pongTimeout: 10000,
    firstFrameTimeout: 5000,
    probeInterval: 300000,
    headers: {},
    credentials: "same-origin",
    random: Math.random,
    WebSocket: globalThis.WebSocket,
    fetch: undefined,
    ...given(options),
  };
  if (!transports.includes(o.transport)) throw new TypeError(`live: transport must be "auto", "websocket", "sse" or "poll", not ${JSON.stringify(String(o.transport))}`);
  if (typeof o.WebSocket !== "function" && o.transport === "websocket") throw new TypeError("live: no WebSocket constructor: pass options.WebSocket");
  return o;
}

/** given returns the options that are set: an undefined option takes its default. */
export function given(options) {
  const o = {};
  for (const [k, v] of Object.entries(options ?? {})) if (v !== undefined) o[k] = v;
  return o;
}
