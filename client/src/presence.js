// Presence: who is subscribed to a presence channel (Options.Presence on
// the hub), as its "presence" frames tell it, and what the channel's
// presence listeners get.

import { call } from "./errors.js";
import { isObject } from "./merge.js";

/**
 * A Presence is a channel's presence as last received: the members by
 * user ({user, info, conns}), how many are here (users plus anonymous
 * connections), and the tag of the hub's last snapshot, which polls send
 * back so that the hub does not send an unchanged one again.
 */
export class Presence {
  constructor() {
    /** @type {Map<string, any>} members by user: {user, info, conns} */
    this.members = new Map();
    this.count = 0;
    /** @type {string|null} */
    this.tag = null;
  }

  /**
   * apply takes in a "presence" frame: a snapshot of the members (whose
   * difference from the members held is what changed), members who
   * joined or whose info or connections changed, users who left, and the
   * count. It returns who joined and who left.
   */
  apply(m) {
    if (typeof m.tag === "string") this.tag = m.tag;
    const joined = [];
    const left = [];
    if (Array.isArray(m.members)) {
      const next = new Map();
      for (const mb of m.members) if (isObject(mb) && typeof mb.user === "string") next.set(mb.user, mb);
      for (const [user, mb] of next) if (!sameMember(this.members.get(user), mb)) joined.push(mb);
      for (const user of this.members.keys()) if (!next.has(user)) left.push(user);
      this.members = next;
    }
    if (Array.isArray(m.join)) {
      for (const mb of m.join) {
        if (!isObject(mb) || typeof mb.user !== "string") continue;
        this.members.set(mb.user, mb);
        joined.push(mb);
      }
    }
    if (Array.isArray(m.leave)) {
      for (const user of m.leave) if (this.members.delete(user)) left.push(user);
    }
    if (Number.isSafeInteger(m.count)) this.count = m.count;
    return { joined, left };
  }

  /** view is what presence listeners get: the members sorted by user, the count, and who joined and left. */
  view(joined, left) {
    const members = [...this.members.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
    return { members, count: this.count, joined, left };
  }
}

/**
 * presenceFrame applies a "presence" frame to an acknowledged channel and
 * calls its presence listeners with the result.
 * @param {import("./link.js").Channel} ch
 */
export function presenceFrame(ch, m) {
  const p = ch.presence ?? (ch.presence = new Presence());
  const { joined, left } = p.apply(m);
  const view = p.view(joined, left);
  for (const sub of [...ch.subs]) if (sub.onPresence) call(sub.onPresence, view);
}

/**
 * followPresence gives a new subscriber with a presence listener the
 * channel's presence as it stands, if one was received, once the caller
 * has returned, unless the subscriber has left by then.
 * @param {import("./link.js").Channel} ch
 * @param {import("./link.js").Subscriber} sub
 */
export function followPresence(ch, sub) {
  if (!ch.presence || !sub.onPresence) return;
  queueMicrotask(() => ch.subs.has(sub) && ch.presence && call(sub.onPresence, ch.presence.view([], [])));
}

/** membersOf returns a channel's presence as last received ({members, count}), or null. */
export function membersOf(ch) {
  const p = ch?.presence;
  return p ? { members: [...p.members.values()], count: p.count } : null;
}

function sameMember(a, b) {
  return a !== undefined && a.conns === b.conns && JSON.stringify(a.info) === JSON.stringify(b.info);
}
