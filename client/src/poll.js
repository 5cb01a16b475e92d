// The long-poll transport: one request after another, each answered with
// the frames that came since the cursors it gave, or nothing after the
// hub's hold.

import { LiveError } from "./errors.js";
import { RequestTransport } from "./request.js";

/** The longest a hub holds a poll (live's maxHold). */
const maxHold = 25000;

/**
 * A poll that brings nothing new is followed by the next no sooner than
 * pollPace ms after it was sent, doubling with each such poll up to
 * maxPollPace: a hub or proxy that answers at once with nothing the client
 * takes cannot make it poll in a loop. A poll that brings news resets it.
 */
const pollPace = 250;
const maxPollPace = 5000;

/**
 * A PollTransport carries frames over one long-poll of every channel after
 * another. A poll leaves out the acknowledgements of the channels it
 * resumes, so those are kept from one poll to the next.
 */
export class PollTransport extends RequestTransport {
  /**
   * @param {import("./link.js").Link} link
   * @param {import("./request.js").RequestOptions} o
   */
  constructor(link, o) {
    super(link, o);
    this.name = "poll";
    this.accept = "application/json";
    this.hold = maxHold;
    this.notOpened = "poll was not answered";
    this.keepAcksOnChange = true;
    this._paced = null; // the next poll, waiting after one that brought nothing new: {timer, names}
    this._pace = 0; // how long that wait is, from the last poll's start
  }

  /**
   * refuses reports whether an error frame for ch keeps it out of later
   * requests, until the next reconnection: always, as a poll does not
   * acknowledge again what it resumes.
   */
  refuses() {
    return true;
  }

  /**
   * _keepsAck: a poll leaves out the acknowledgements of the channels it
   * resumes: those go on as they were. A channel resumed without one (a
   * saved cursor, or one reached over another transport) asks for it, as
   * its data is taken only once it is acknowledged.
   */
  _keepsAck(ch, chans) {
    return chans.includes(ch) && ch.cursor !== null && ch.acked;
  }

  _params(chans) {
    const params = [["poll", ""]];
    const acks = chans.filter((ch) => ch.cursor && !ch.acked).map((ch) => ch.name);
    if (acks.length > 0) params.push(["ack", acks.join(",")]);
    for (const ch of chans) if (ch.presence?.tag) params.push(["presence." + ch.name, ch.presence.tag]);
    return params;
  }

  _started() {}

  _fellBack() {
    return false;
  }

  _waiting() {
    return this._paced?.names ?? null;
  }

  /**
   * _answered handles a poll's answer, a JSON array of frames, and sends
   * the next poll from the cursors they moved: at once after news, paced
   * after a poll that brought nothing new (see pollPace).
   */
  async _answered(s, res, type) {
    if (!/^application\/json\b/i.test(type)) {
      this._streamFailed(s, new LiveError("bad_response", `live: the poll answered ${JSON.stringify(type.slice(0, 60))}, not application/json`, { status: res.status }), true);
      return;
    }
    s.open = true;
    this._alive();
    this.link.status("connected");
    const frames = await res.json();
    if (this._stream !== s) return;
    if (!Array.isArray(frames)) {
      this._streamFailed(s, new LiveError("bad_response", "live: the poll answered something other than an array of frames", { status: res.status }), true);
      return;
    }
    s.framed = true;
    this.link.framed();
    let news = false;
    for (const m of frames) {
      if (this.link.frame(m)) news = true;
      if (this._stream !== s) return;
    }
    // The next poll, keeping the subscriptions acknowledged.
    this._stream = null;
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    this._openTimer = this._pingTimer = null;
    // A poll held as long as the longest pace (the hub had nothing for
    // it) was not hot either.
    const held = Date.now() - s.sent >= maxPollPace;
    this._pace = news || held ? 0 : Math.min(maxPollPace, this._pace > 0 ? this._pace * 2 : pollPace);
    const wait = s.sent + this._pace - Date.now();
    if (wait <= 0) {
      this._openStream(true, true);
      return;
    }
    const paced = { names: s.names, timer: null };
    paced.timer = setTimeout(() => {
      if (this._paced !== paced) return;
      this._paced = null;
      this._openStream(true, true);
    }, wait);
    this._paced = paced;
  }

  /** _unwait forgets the poll waiting for its pace: another replaces it. */
  _unwait() {
    if (!this._paced) return;
    clearTimeout(this._paced.timer);
    this._paced = null;
  }
}
