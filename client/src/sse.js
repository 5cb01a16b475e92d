// The SSE transport: one multiplexed stream of Server-Sent Events of every
// channel.

import { LiveError } from "./errors.js";
import { RequestTransport } from "./request.js";

/** The longest line a stream may send; past it the stream is given up. */
const maxLine = 16 << 20;

/**
 * An SSETransport carries frames over one multiplexed SSE stream of every
 * channel.
 */
export class SSETransport extends RequestTransport {
  /**
   * @param {import("./link.js").Link} link
   * @param {import("./request.js").RequestOptions} o
   */
  constructor(link, o) {
    super(link, o);
    this.name = "sse";
    this.accept = "text/event-stream";
    this.hold = 0;
    this.notOpened = "stream did not open";
    this.keepAcksOnChange = false;
  }

  /**
   * refuses reports whether an error frame for ch keeps it out of later
   * requests: a channel refused before its acknowledgement, until the
   * next reconnection.
   */
  refuses(ch) {
    return !ch.acked;
  }

  /** _keepsAck: the hub acknowledges every channel of a new stream again. */
  _keepsAck() {
    return false;
  }

  _params() {
    return [];
  }

  /**
   * _started watches for the first frame: with "auto", as the hub
   * acknowledges every channel at once, a stream that brings nothing is
   * held up on the way, by a proxy that buffers it, and polling is tried.
   */
  _started(s) {
    if (!this._o.auto || this._o.firstFrameTimeout <= 0) return;
    s.firstTimer = setTimeout(() => {
      if (this._stream === s && !s.framed) this.link.moveTo("poll");
    }, this._o.firstFrameTimeout);
  }

  /** _answered reads the stream that answered s. */
  async _answered(s, res, type) {
    if (!/^text\/event-stream\b/i.test(type) || !res.body) {
      this._streamFailed(s, new LiveError("bad_response", `live: the stream answered ${JSON.stringify(type.slice(0, 60))}, not text/event-stream`, { status: res.status }), true);
      return;
    }
    s.open = true;
    this._alive();
    this.link.status("connected");
    await this._read(s, res.body);
  }

  /** _fellBack moves to polling if no stream has ever brought a frame here. */
  _fellBack() {
    if (!this._o.auto || this.link.everFramed()) return false;
    this.link.moveTo("poll");
    return true;
  }

  _waiting() {
    return null;
  }

  _unwait() {}

  /** _read parses the stream's events and handles each one's data as a frame. */
  async _read(s, body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = null; // the data lines of the event being read
    for (;;) {
      const { done, value } = await reader.read();
      if (this._stream !== s) {
        reader.cancel().catch(() => {});
        return;
      }
      if (done) break;
      this._alive();
      buf += decoder.decode(value, { stream: true });
      let pos = 0;
      while (pos < buf.length) {
        const lf = buf.indexOf("\n", pos);
        const cr = buf.indexOf("\r", pos);
        let end;
        let next;
        if (cr >= 0 && (lf < 0 || cr < lf)) {
          if (cr === buf.length - 1) break; // a CR LF may be split across chunks
          end = cr;
          next = buf[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else if (lf >= 0) {
          end = lf;
          next = lf + 1;
        } else {
          break;
        }
        const line = buf.slice(pos, end);
        pos = next;
        if (line === "") {
          if (data !== null) {
            const frame = data;
            data = null;
            if (!s.framed) {
              s.framed = true;
              this.link.framed();
              clearTimeout(s.firstTimer);
            }
            this.link.message(frame);
            if (this._stream !== s) {
              reader.cancel().catch(() => {});
              return;
            }
          }
          continue;
        }
        if (line[0] === ":") continue; // a comment: the hub's heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v[0] === " ") v = v.slice(1);
        if (field === "retry" && /^\d+$/.test(v)) s.retry = Number(v); // when to come back once it ends
        if (field !== "data") continue; // no id or event is sent
        data = data === null ? v : data + "\n" + v;
      }
      buf = buf.slice(pos);
      if (buf.length + (data?.length ?? 0) > maxLine) {
        this._streamFailed(s, new LiveError("bad_frame", `live: the stream sent an event longer than ${maxLine} bytes`), true);
        reader.cancel().catch(() => {});
        return;
      }
    }
    this._streamFailed(s, new LiveError("disconnected", "live: the stream ended"), false, s.retry);
  }
}
