// Frames: what each frame from the hub does, whichever transport brought
// it: to a channel and its subscribers (publications, acknowledgements,
// resets, presence, refusals), to the publishes waiting for an answer,
// and to the connection (its name, the hub's delays, the server's
// endings), which a Live gives as a Receiver.

import { call, LiveError } from "./errors.js";
import { advances, isObject, isStateReset } from "./merge.js";
import { presenceFrame } from "./presence.js";

/**
 * Receiver is what frames act on besides a channel's own state and
 * subscribers.
 * @typedef {object} Receiver
 * @property {(name: string) => import("./link.js").Channel|undefined} channel one channel by name
 * @property {(id: string) => void} named the hub named the connection
 * @property {(delayed: boolean) => boolean} delayed the hub's link to its broker broke (true) or is back; reports whether that was news
 * @property {(code: number, reason: string, retry?: unknown) => void} ended the server ends the stream or poll (retry: when a restart's client is to come back, in ms)
 * @property {() => void} refresh the credential the connection was admitted with expires soon
 * @property {(ref: number, cursor: string) => boolean} acknowledged the publish ref went through; reports whether it waited
 * @property {(ref: number, code: string, detail: unknown) => boolean} refused the hub refused the publish ref; reports whether it waited
 * @property {(ch: import("./link.js").Channel) => boolean} refuses reports whether the transport in use leaves a channel the hub refused out of the requests that follow
 * @property {(err: Error, sub?: import("./link.js").Subscriber) => void} error tells err to sub's onError, if given, and to the error listeners
 */

/** handleText handles a frame that arrived as JSON text. */
export function handleText(text, to) {
  if (typeof text !== "string") return;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    to.error(new LiveError("bad_frame", "live: the hub sent a frame that is not JSON"));
    return;
  }
  handleFrame(m, to);
}

/**
 * handleFrame handles one frame from the hub, parsed, and reports whether
 * it was news: a frame that changed nothing here (data seen already, or
 * of a subscription not acknowledged, an acknowledgement held already) is
 * not, which keeps a poll that brings only such frames from being
 * followed by another at once.
 * @param {unknown} m
 * @param {Receiver} to
 */
export function handleFrame(m, to) {
  if (!isObject(m)) return false;
  const ch = typeof m.channel === "string" ? to.channel(m.channel) : undefined;
  switch (m.type) {
    case "data": {
      // Frames of an unacknowledged subscription belong to an older one.
      if (!ch || !ch.acked) return false;
      if (typeof m.cursor === "string") {
        // Resets of a State channel come in band, at the hub's cursor,
        // which may be behind the client's: always take them.
        if (!isStateReset(m.data) && ch.cursor && !advances(ch.cursor, m.cursor)) return false; // seen already
        ch.cursor = m.cursor;
      }
      const meta = { channel: m.channel, cursor: m.cursor ?? null };
      if (m.queryKey !== undefined) meta.queryKey = m.queryKey;
      if (typeof m.event === "string") meta.event = m.event;
      for (const sub of [...ch.subs]) if (ch.subs.has(sub)) call(sub.callback, m.data, meta);
      return true;
    }
    case "subscribed": {
      if (typeof m.connection === "string") to.named(m.connection);
      if (!ch) return false;
      const moves = typeof m.cursor === "string" && (!ch.cursor || advances(ch.cursor, m.cursor));
      const news = !ch.acked || moves;
      ch.acked = true;
      if (moves) ch.cursor = m.cursor;
      for (const sub of [...ch.subs]) if (sub.onSubscribed) call(sub.onSubscribed, ch.cursor);
      return news;
    }
    case "presence": {
      if (!ch || !ch.acked) return false;
      presenceFrame(ch, m);
      return true;
    }
    case "status":
      // The hub's link to its broker broke ("delayed") or is back
      // ("live"): updates wait meanwhile, and arrive after.
      return to.delayed(m.status === "delayed");
    case "reset": {
      if (!ch) return false;
      const was = ch.cursor;
      if (typeof m.cursor === "string") ch.cursor = m.cursor;
      for (const sub of [...ch.subs]) if (sub.onReset) call(sub.onReset, ch.cursor, String(m.reason ?? ""));
      return ch.cursor !== was;
    }
    case "close": {
      // The server ends the stream or poll, saying what a WebSocket's
      // close frame would, and a drain's when to come back.
      if (!Number.isSafeInteger(m.closeCode)) return false;
      to.ended(m.closeCode, String(m.reason ?? ""), m.retry);
      return true;
    }
    case "refresh":
      // The credential the connection was admitted with expires soon
      // (Identity.Expires): fetch a new one and come back with it.
      to.refresh(Number(m.expires));
      return true;
    case "published":
    case "error": {
      if (typeof m.ref === "number") {
        const answered = m.type === "published" ? to.acknowledged(m.ref, String(m.cursor ?? "")) : to.refused(m.ref, String(m.code ?? "error"), m.message ?? m.code);
        if (answered) return true;
      }
      if (m.type === "error") {
        const err = new LiveError(String(m.code ?? "error"), `live: ${m.channel ? m.channel + ": " : ""}${m.message ?? m.code}`, m.channel ? { channel: m.channel } : {});
        // On a stream, a channel refused before it was acknowledged is
        // left out of the streams that follow, until the next reconnection.
        if (ch && to.refuses(ch)) ch.refused = "hub";
        if (ch) for (const sub of [...ch.subs]) to.error(err, sub);
        else to.error(err);
        return true;
      }
      return false;
    }
  }
  return false;
}
