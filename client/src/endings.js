// Endings: how the server ends a connection, on any transport, which of
// its endings are final, and how a page whose WebSocket was refused learns
// why (see createLive).

import { httpError } from "./http.js";

/**
 * The endings the server means as final, by code, and the status each
 * leaves: the application disconnected the user (Hub.Disconnect: the
 * WebSocket's close code 4001, which streams and polls carry in their
 * "close" frame), or refused who the page is when it came back (HTTP 401
 * from Options.Identify). Every other ending (1013 try again later, 1001
 * the server going away, a network failure) is followed by a reconnection.
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
 * handshake shows the page nothing. It calls refused with the error of a
 * 401 answer if wanted() still says so; any other answer, or none, leaves
 * the reconnection already scheduled to tell.
 */
export function whyRefused(fetch, sseURL, o, wanted, refused) {
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
      if (res.status !== 401 || !wanted()) return;
      refused(await httpError(res, "connecting"));
    })
    .catch(() => {}); // the network: the reconnection tells
}
