// The probe: with "auto", below WebSocket, the client tries the
// transports above the one in use every probeInterval, and moves up when
// one works (see createLive).

import { wsURL } from "./ws.js";

/**
 * A Prober plans and makes the tries of the transports above the one in
 * use. It reaches the Live through the callbacks it is given: mode (the
 * transport in use), usable (not closed, ended for good, or offline),
 * opened (a WebSocket opened here) and moveTo (use another transport).
 */
export class Prober {
  /**
   * @param {{transport: string, probeInterval: number, connectTimeout: number, url: string|URL, WebSocket: any}} o
   * @param {{mode: () => "websocket"|"sse"|"poll", usable: () => boolean, opened: () => void, moveTo: (mode: "websocket"|"sse") => void}} to
   */
  constructor(o, to) {
    this._o = o;
    this._to = to;
    this._timer = null; // the next try
    this._ws = null; // the WebSocket a try opened
  }

  /**
   * schedule plans the next try: after delay, probeInterval by default.
   * The first after a move down comes sooner, since the move may have
   * been caused by a server that was down rather than by a proxy.
   */
  schedule(delay = this._o.probeInterval) {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._o.transport !== "auto" || this._to.mode() === "websocket" || this._o.probeInterval <= 0 || !this._to.usable()) return;
    this._timer = setTimeout(() => {
      this._timer = null;
      this._probe();
    }, delay);
  }

  /** now tries at once (the browser is back online), unless nothing is to be tried or a try is under way. */
  now() {
    if (this._o.transport !== "auto" || this._to.mode() === "websocket" || this._o.probeInterval <= 0 || this._ws) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._probe();
  }

  /** stop gives up the next try, and a try's WebSocket if one is open. */
  stop() {
    clearTimeout(this._timer);
    this._timer = null;
    if (!this._ws) return;
    this._ws.onopen = this._ws.onclose = this._ws.onerror = null;
    this._ws.close();
    this._ws = null;
  }

  /**
   * _probe tries a WebSocket beside the transport in use, and moves to it
   * if it opens. Polling without one tries the stream next: moving to it
   * is the test, since a buffering proxy in the way sends it back to
   * polling after firstFrameTimeout, and cursors keep every channel whole.
   */
  _probe() {
    if (!this._to.usable() || this._to.mode() === "websocket") return;
    const fallBack = () => {
      if (!this._to.usable()) return;
      if (this._to.mode() === "poll") this._to.moveTo("sse");
      else this.schedule();
    };
    if (typeof this._o.WebSocket !== "function") {
      fallBack();
      return;
    }
    let ws;
    try {
      ws = new this._o.WebSocket(wsURL(this._o.url));
    } catch {
      fallBack();
      return;
    }
    this._ws = ws;
    const timer = setTimeout(() => done(false), this._o.connectTimeout > 0 ? this._o.connectTimeout : 10000);
    const done = (opened) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearTimeout(timer);
      ws.onopen = ws.onclose = ws.onerror = null;
      ws.close(1000, "probe");
      if (opened) {
        this._to.opened();
        this._to.moveTo("websocket");
      } else {
        fallBack();
      }
    };
    ws.onopen = () => done(true);
    ws.onclose = () => done(false);
    ws.onerror = () => done(false);
  }
}
