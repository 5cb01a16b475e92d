// The WebSocket transport: every channel and publish over one socket.

import { LiveError } from "./errors.js";

const OPEN = 1;

/**
 * A SocketTransport carries frames over a WebSocket: each channel is
 * subscribed by a frame on it, and publishes are frames too.
 */
export class SocketTransport {
  /**
   * @param {import("./link.js").Link} link
   * @param {{url: string, WebSocket: typeof WebSocket, connectTimeout: number, pingInterval: number, pongTimeout: number}} o
   */
  constructor(link, o) {
    this.link = link;
    this._o = o;
    this.name = "websocket";
    this._url = wsURL(o.url);
    /** @type {WebSocket|null} */
    this._ws = null;
    this._openTimer = null; // gives up a connection that does not open
    this._pingTimer = null;
    this._pongTimer = null;
    this._lastSeen = 0;
  }

  /** close forgets the socket and closes it: its events are ignored from now on. */
  close(reason) {
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1000, reason);
  }

  /** added subscribes a channel the Live gained. */
  added(ch) {
    this._sendSubscribe(ch);
  }

  /** removed unsubscribes a channel the Live dropped. */
  removed(ch) {
    this._send({ type: "unsubscribe", channel: ch.name });
  }

  /** publish sends a publish if the socket is open; when it opens, those not sent go. */
  publish(ref, p) {
    p.sent = this._send(p.frame);
  }

  /** refuses reports whether an error frame for ch keeps it out of later requests: never here. */
  refuses() {
    return false;
  }

  /** open opens a WebSocket, unless one is open or opening. */
  open() {
    if (this._ws) return;
    this.link.status("connecting");
    let ws;
    try {
      ws = new this._o.WebSocket(this._url);
    } catch (e) {
      this.link.status("error");
      this.link.error(new LiveError("network", `live: cannot open ${this._url}: ${e.message}`));
      this.link.lost();
      return;
    }
    this._ws = ws;
    this._opened = false;
    if (this._o.connectTimeout > 0) {
      this._openTimer = setTimeout(() => {
        this._openTimer = null;
        if (this._ws !== ws || ws.readyState === OPEN) return;
        ws.onclose = null;
        ws.close();
        this._wsFailed(ws);
      }, this._o.connectTimeout);
    }
    ws.onopen = () => {
      if (this._ws !== ws) return;
      clearTimeout(this._openTimer);
      this._openTimer = null;
      this._opened = true;
      for (const ch of this.link.channels()) this._sendSubscribe(ch);
      this.link.opened();
      this._alive();
      this.link.status("connected");
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._alive();
      this.link.message(ev.data);
    };
    ws.onerror = () => {
      if (this._ws !== ws || this.link.willFallBack()) return;
      this.link.status("error");
    };
    ws.onclose = (ev) => this._wsFailed(ws, ev);
  }

  /**
   * _wsFailed handles the end of ws: an ending the server decided (a
   * close frame; 1005 and 1006 say there was none), then a fall back to
   * SSE or a reconnection, unless the ending was final. A socket that did
   * not open may have been refused who the page is: the client asks why.
   */
  _wsFailed(ws, ev) {
    if (this._ws !== ws) return;
    const fallBack = this.link.willFallBack();
    const opened = this._opened;
    this._detach();
    if (this.link.closed()) return;
    if (ev && ev.code !== 1005 && ev.code !== 1006 && this.link.ended(ev.code, String(ev.reason ?? ""))) return;
    if (!fallBack) {
      this.link.lost();
      if (!opened) this.link.whyRefused();
      return;
    }
    // The WebSocket never opened: blocked on the way, or refused. SSE from
    // now on, at once; publishes not yet sent go as POSTs.
    this.link.moveTo("sse");
  }

  /** _send sends a frame if the socket is open and reports whether it did. */
  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  _sendSubscribe(ch) {
    ch.acked = false;
    const frame = { type: "subscribe", channel: ch.name };
    if (ch.cursor) frame.cursor = ch.cursor;
    this._send(frame);
  }

  /** _detach forgets the socket: its events are ignored from now on. */
  _detach() {
    const ws = this._ws;
    this._ws = null;
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._openTimer = this._pingTimer = this._pongTimer = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    for (const ch of this.link.channels()) ch.acked = false;
    // A publish sent on the lost socket may or may not have been made:
    // say so rather than resend it twice.
    this.link.sentLost((channel) => new LiveError("disconnected", "live: the connection was lost before the publish was acknowledged; it may or may not have been published", { channel }));
  }

  /**
   * _alive notes that the connection works. A timer checks every
   * pingInterval that something arrived; if nothing did, it pings, and
   * gives the connection up if nothing answers within pongTimeout.
   */
  _alive() {
    this._lastSeen = Date.now();
    if (this._pongTimer !== null) {
      clearTimeout(this._pongTimer);
      this._pongTimer = null;
    }
    if (this._pingTimer !== null || this._o.pingInterval <= 0) return;
    this._schedulePing(this._o.pingInterval);
  }

  _schedulePing(delay) {
    const ws = this._ws;
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      if (this._ws !== ws) return;
      const idle = Date.now() - this._lastSeen;
      if (idle < this._o.pingInterval) {
        this._schedulePing(this._o.pingInterval - idle);
        return;
      }
      if (!this._send({ type: "ping" })) return;
      this._pongTimer = setTimeout(() => {
        // Nothing came back: the connection died without saying so.
        if (this._ws !== ws) return;
        this._detach();
        ws.close(4000, "no pong");
        this.link.lost();
      }, this._o.pongTimeout);
    }, delay);
  }
}

/** wsURL resolves url against the page and gives it a WebSocket scheme. */
export function wsURL(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}
