// Endings: how the server ends a connection, on any transport, which of
// its endings are final, and how a page whose WebSocket was refused learns
// why (see createLive).

import { httpError, retryAfter } from "./http.js";

/**
 * The endings the server means as final, by code, and the status each
 * leaves: the application disconnected the user (Hub.Disconnect: the
 * WebSocket's close code 4001, which streams and polls carry in their
 * "close" frame), or refused who the page is when it came back (HTTP 401
 * from Options.Identify). Every other ending (1013 try again later, 1001
 * the server going away, 1012 the server restarts, a network failure) is
 * followed by a reconnection.
 */
const finalEndings = new Map([
  [4001, "removed"],
  [401, "signed-out"],
]);

/** finalStatus returns the status a final ending with code leaves ("removed" or "signed-out"), or undefined for one followed by a reconnection. */
export function finalStatus(code) {
  return finalEndings.get(code);
}

/**
 * The ending of a server that restarts (Hub.Drain: close code 1012, service
 * restart): the client comes back after the delay it is told, "restart;
 * retry in N ms" (a close frame's "retry" field), from its cursors.
 */
const restart = 1012;

/**
 * restartDelay returns, for the ending of a server that restarts (1012),
 * the delay in ms it told the client to come back after: a close frame's
 * retry, else the N of the reason's "retry in N ms", else NaN (it gave
 * none). For any other ending it returns undefined.
 * @param {number} code
 * @param {string} reason
 * @param {unknown} [retry]
 * @returns {number|undefined}
 */
export function restartDelay(code, reason, retry) {
  if (code !== restart) return undefined;
  return Number.isSafeInteger(retry) ? Number(retry) : Number(/retry in (\d+) ms/.exec(reason)?.[1]);
}

/**
 * refusal returns the ending, [code, reason], of a request answered 401:
 * a Hub.Disconnect that caught the request on its way in (code
 * "disconnected") is the 4001 it would have closed an open one with;
 * anything else is Identify's refusal.
 * @param {import("./errors.js").LiveError} err
 * @returns {[number, string]}
 */
export function refusal(err) {
  return [err.code === "disconnected" ? 4001 : 401, String(err.body?.message ?? err.code)];
}

/**
 * whyRefused asks the stream URL (sseURL, resolved and without its
 * trailing slash; given is the sseURL of the options) whether the hub
 * refuses who the page is, after a WebSocket that did not open: a refused
 * handshake shows the page nothing. If wanted() still says so when the
 * answer comes, it calls refused with the error of a 401 answer, and
 * later with the wait in ms a 503's Retry-After asks for (a draining
 * hub: come back then, not at the backoff's draw); any other answer, or
 * none, leaves the reconnection already scheduled to tell.
 */
export function whyRefused(fetch, sseURL, o, wanted, refused, later) {
  let url;
  try {
    const base = sseURL() + (/\/$/.test(o.sseURL) ? "/" : "");
    url = `${base}${base.includes("?") ? "&" : "?"}channels=`;
  } catch {
    return;
  }
  Promise.resolve()
    .then(() => fetch()(url, { headers: { Accept: "application/json", ...o.headers }, credentials: o.credentials, cache: "no-store" }))
    .then(async (res) => {
      if (!wanted()) return;
      const after = res.status === 503 ? retryAfter(res) : undefined;
      if (after !== undefined) later(after);
      if (res.status !== 401) return;
      refused(await httpError(res, "connecting"));
    })
    .catch(() => {}); // the network: the reconnection tells
}
