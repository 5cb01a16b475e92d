// HTTP: the headers the hub reads, and fetch with a timeout, every
// failure turned into a LiveError.

import { LiveError } from "./errors.js";
import { isObject } from "./merge.js";

/** The request header naming a mutation (live.MutationIDHeader). */
export const MUTATION_ID_HEADER = "Live-Mutation-Id";

/**
 * The header that names this page's connection in its writes, so that the
 * server can leave the connection out of what the write publishes
 * (live.Except, HookOptions.ToOthers).
 */
export const CONNECTION_HEADER = "Live-Connection";

/** httpError turns a failed response into a LiveError carrying its JSON body. */
export async function httpError(res, what) {
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const conflict = res.status === 409 || res.status === 412;
  const code = conflict ? "conflict" : (isObject(body) && typeof body.error === "string" ? body.error : "http");
  const detail = isObject(body) && typeof body.message === "string" ? `: ${body.message}` : "";
  return new LiveError(code, `live: ${what}: ${res.status}${detail}`, { status: res.status, body });
}

/** request runs fetch with a timeout, turning every failure into a LiveError. */
export async function request(fetchFn, url, init, timeout, what) {
  const ctl = new AbortController();
  const outer = init.signal;
  const onAbort = () => ctl.abort(outer.reason);
  outer?.addEventListener("abort", onAbort);
  let timedOut = false;
  const timer = timeout > 0 ? setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, timeout) : null;
  try {
    const res = await fetchFn(url, { ...init, signal: ctl.signal });
    if (!res.ok) throw await httpError(res, what);
    const text = await res.text();
    if (text === "") return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new LiveError("bad_response", `live: ${what}: the response is not JSON`, { status: res.status });
    }
  } catch (e) {
    if (e instanceof LiveError) throw e;
    if (timedOut) throw new LiveError("timeout", `live: ${what}: no response within ${timeout} ms`);
    if (outer?.aborted) throw new LiveError("closed", `live: ${what}: cancelled`);
    throw new LiveError("network", `live: ${what}: ${e?.message ?? e}`);
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener("abort", onAbort);
  }
}

/**
 * retryAfter returns how long a response's Retry-After header asks to wait,
 * in ms (it gives seconds or a date), or undefined without a valid one.
 */
export function retryAfter(res) {
  const v = res.headers?.get?.("Retry-After")?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export function defaultFetch() {
  if (typeof fetch !== "function") throw new TypeError("live: no fetch function: pass options.fetch");
  return (url, init) => fetch(url, init);
}

/** validChannel reports whether the hub accepts name as a channel (live.ValidChannel). */
export function validChannel(name) {
  return name.length <= 128 && name !== "." && name !== ".." && /^[A-Za-z0-9_\-:.@=+]+$/.test(name);
}

