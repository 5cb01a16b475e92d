// live.js: the browser client of github.com/go-live/live, served by
// live.ClientHandler. Built by client/build.js from client/live.js and
// client/src/ (npm run build); edit those, not this file.

// src/errors.js
var MergeError = class extends Error {
  /**
   * @param {"invalid"|"type"|"op"|"path"|"gap"|"depth"} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = "MergeError";
    this.kind = kind;
  }
};
var LiveError = class extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{channel?: string, status?: number, body?: any}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "LiveError";
    this.code = code;
    if (extra.channel !== void 0) this.channel = extra.channel;
    if (extra.status !== void 0) this.status = extra.status;
    if (extra.body !== void 0) this.body = extra.body;
  }
};
function report(err) {
  if (typeof reportError === "function") {
    reportError(err);
  } else {
    setTimeout(() => {
      throw err;
    });
  }
}
function call(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    report(e);
  }
}

// src/merge.js
var MAX_DEPTH = 512;
var hasOwn = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
function setOwn(o, k, v) {
  if (k === "__proto__") {
    Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
  } else {
    o[k] = v;
  }
}
function getOwn(o, k) {
  return hasOwn(o, k) ? o[k] : void 0;
}
function copyObject(o) {
  const c = {};
  for (const k of Object.keys(o)) setOwn(c, k, o[k]);
  return c;
}
function typeName(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  switch (typeof v) {
    case "boolean":
      return "a boolean";
    case "number":
      return "a number";
    case "string":
      return "a string";
    case "object":
      return "an object";
  }
  return typeof v;
}
function check(v, op, what) {
  let deepest = 0;
  const stack = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop();
    if (x === null || typeof x === "string" || typeof x === "boolean") continue;
    if (typeof x === "number") {
      if (!Number.isFinite(x)) throw new MergeError("invalid", `live: ${op}: ${what} is not valid JSON: ${x}`);
      continue;
    }
    if (typeof x !== "object") {
      throw new MergeError("invalid", `live: ${op}: ${what} is not valid JSON: it holds ${x === void 0 ? "undefined" : "a " + typeof x}`);
    }
    const nd = d + 1;
    if (nd > MAX_DEPTH) throw new MergeError("depth", `live: ${op}: ${what} nests deeper than ${MAX_DEPTH} levels`);
    if (nd > deepest) deepest = nd;
    if (Array.isArray(x)) {
      for (let i = 0; i < x.length; i++) stack.push([x[i], nd]);
      continue;
    }
    const proto = Object.getPrototypeOf(x);
    if (proto !== Object.prototype && proto !== null) {
      throw new MergeError("invalid", `live: ${op}: ${what} is not valid JSON: it holds a ${x.constructor?.name ?? "non-plain object"}`);
    }
    for (const k of Object.keys(x)) stack.push([x[k], nd]);
  }
  return deepest;
}
function checkPresent(v, op, what) {
  if (v === void 0) throw new MergeError("invalid", `live: ${op}: ${what} is not valid JSON: absent`);
  return check(v, op, what);
}
function checkOptional(v, op, what) {
  return v === void 0 ? 0 : check(v, op, what);
}
function depthOfText(text) {
  let d = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === "[" || c === "{") {
      d++;
      if (d > deepest) deepest = d;
    } else if (c === "]" || c === "}") d--;
  }
  return deepest;
}
function parseJSON(text) {
  if (typeof text !== "string") throw new MergeError("invalid", `live: parse: ${typeName(text)} is not JSON text`);
  if (depthOfText(text) > MAX_DEPTH) throw new MergeError("depth", `live: parse: JSON nests deeper than ${MAX_DEPTH} levels`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MergeError("invalid", `live: parse: is not valid JSON: ${e.message}`);
  }
}
function equal(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!equal(a[i], b[i])) return false;
    return true;
  }
  if (isObject(a)) {
    if (!isObject(b)) return false;
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    for (const k of ka) if (!hasOwn(b, k) || !equal(a[k], b[k])) return false;
    return true;
  }
  return false;
}
function mergeReplace(current, update) {
  checkOptional(current, "replace merge", "current value");
  checkPresent(update, "replace merge", "update");
  return update;
}
function mergeShallow(current, update) {
  const op = "shallow merge";
  checkOptional(current, op, "current value");
  checkPresent(update, op, "update");
  return shallow(rootObject(current, op), update);
}
function shallow(cur, update) {
  if (!isObject(update)) throw new MergeError("type", `live: shallow merge: update must be an object, not ${typeName(update)}`);
  const out = copyObject(cur);
  for (const k of Object.keys(update)) setOwn(out, k, update[k]);
  return out;
}
function rootObject(current, op) {
  if (current === void 0 || current === null) return {};
  if (!isObject(current)) throw new MergeError("type", `live: ${op}: current value must be an object, not ${typeName(current)}`);
  return current;
}
function mergePatch(current, update) {
  checkOptional(current, "merge patch", "current value");
  checkPresent(update, "merge patch", "update");
  return applyPatch(current, update);
}
function applyPatch(target, patch) {
  if (!isObject(patch)) return patch;
  const t = isObject(target) ? copyObject(target) : {};
  for (const k of Object.keys(patch)) {
    const v = patch[k];
    if (v === null) {
      delete t[k];
    } else {
      setOwn(t, k, applyPatch(getOwn(t, k), v));
    }
  }
  return t;
}
function mergeList(idField = "id") {
  if (!idField) idField = "id";
  return (current, update) => {
    checkOptional(current, "list merge", "current value");
    checkPresent(update, "list merge", "update");
    return listMerge(idField, current, update);
  };
}
function listMerge(idField, current, update) {
  const op = "list merge";
  let items;
  if (current === void 0 || current === null) items = [];
  else if (Array.isArray(current)) items = current;
  else throw new MergeError("type", `live: ${op}: current value must be an array, not ${typeName(current)}`);
  if (!isObject(update)) throw new MergeError("type", `live: ${op}: update must be an object, not ${typeName(update)}`);
  const type = getOwn(update, "type");
  if (typeof type !== "string") throw new MergeError("type", `live: ${op}: update must have a string "type"`);
  let item;
  let id;
  switch (type) {
    case "add":
    case "update":
      item = getOwn(update, "item");
      if (!isObject(item)) throw new MergeError("type", `live: ${op}: an update of type "${type}" must have an object "item"`);
      if (!hasOwn(item, idField)) throw new MergeError("type", `live: ${op}: item must have the id member "${idField}"`);
      id = item[idField];
      break;
    case "remove":
      if (!hasOwn(update, "id")) throw new MergeError("type", `live: ${op}: an update of type "remove" must have an "id"`);
      id = update.id;
      break;
    default:
      throw new MergeError("op", `live: ${op}: unknown update type ${JSON.stringify(type.slice(0, 40))}`);
  }
  if (id !== null && typeof id === "object") {
    throw new MergeError("type", `live: ${op}: id must be a string, number, boolean or null, not ${typeName(id)}`);
  }
  const matches = (it) => isObject(it) && hasOwn(it, idField) && it[idField] === id;
  switch (type) {
    case "add":
      return items.some(matches) ? items : [item, ...items];
    case "update":
      return items.map((it) => matches(it) ? shallow(it, item) : it);
    default:
      return items.filter((it) => !matches(it));
  }
}
function applyDelta(current, version, delta) {
  checkOptional(current, "delta", "current value");
  return deltaApply(current, version, delta);
}
function deltaApply(current, version, delta) {
  const op = "delta";
  if (!isObject(delta)) throw new MergeError("type", `live: ${op}: the delta must be an object, not ${typeName(delta)}`);
  const next = delta.version;
  if (!Number.isSafeInteger(version) || !Number.isSafeInteger(next) || next !== version + 1) {
    throw new MergeError("gap", `live: delta version gap: version ${next} cannot follow ${version}`);
  }
  const src = rootObject(current, op);
  const changes = delta.changes ?? [];
  if (!Array.isArray(changes)) throw new MergeError("type", `live: ${op}: changes must be an array, not ${typeName(changes)}`);
  const root = copyObject(src);
  const owned = new WeakSet([root]);
  let bound = 0;
  for (let i = 0; i < changes.length; i++) {
    try {
      bound = Math.max(bound, applyChange(root, owned, changes[i]));
    } catch (e) {
      if (e instanceof MergeError) throw new MergeError(e.kind, `live: delta: change ${i}: ${e.message}`);
      throw e;
    }
  }
  if (bound > MAX_DEPTH && check(root, op, "result") > MAX_DEPTH) {
    throw new MergeError("depth", `live: ${op}: result nests deeper than ${MAX_DEPTH} levels`);
  }
  return root;
}
function applyChange(root, owned, c) {
  if (!isObject(c)) throw new MergeError("type", `a change must be an object, not ${typeName(c)}`);
  const path = c.path;
  if (typeof path !== "string") throw new MergeError("type", `"path" must be a string, not ${typeName(path)}`);
  if (path === "") throw new MergeError("path", `path "" is empty`);
  let value;
  let valueDepth = 0;
  switch (c.op) {
    case "add":
    case "update":
      if (!hasOwn(c, "value") || c.value === void 0) throw new MergeError("type", `"${c.op}" must have a value`);
      value = c.value;
      valueDepth = check(value, "delta", "value");
      break;
    case "remove":
      break;
    default:
      throw new MergeError("op", `unknown op ${JSON.stringify(String(c.op).slice(0, 40))}`);
  }
  const q = JSON.stringify(path.slice(0, 200));
  const parts = path.split(".");
  let target = root;
  for (let i = 0; i < parts.length - 1; i++) {
    const p = parts[i];
    let next;
    if (Array.isArray(target)) {
      const idx = arrayIndex(p);
      if (idx < 0 || idx >= target.length) {
        throw new MergeError("path", `path ${q}: ${JSON.stringify(parts.slice(0, i + 1).join("."))} does not exist in an array of ${target.length}`);
      }
      next = target[idx];
      if (next !== null && typeof next === "object" && !owned.has(next)) {
        next = Array.isArray(next) ? next.slice() : copyObject(next);
        owned.add(next);
        target[idx] = next;
      }
    } else if (isObject(target)) {
      if (!hasOwn(target, p)) throw new MergeError("path", `path ${q}: ${JSON.stringify(parts.slice(0, i + 1).join("."))} does not exist`);
      next = target[p];
      if (next !== null && typeof next === "object" && !owned.has(next)) {
        next = Array.isArray(next) ? next.slice() : copyObject(next);
        owned.add(next);
        setOwn(target, p, next);
      }
    } else {
      throw new MergeError("path", `path ${q}: ${JSON.stringify(parts.slice(0, i + 1).join("."))} does not exist in ${typeName(target)}`);
    }
    target = next;
  }
  const last = parts[parts.length - 1];
  if (Array.isArray(target)) {
    const idx = arrayIndex(last);
    if (idx < 0) throw new MergeError("path", `path ${q}: ${JSON.stringify(last.slice(0, 40))} is not an array index`);
    if (c.op === "remove") {
      if (idx < target.length) target[idx] = null;
    } else if (idx <= target.length) {
      target[idx] = value;
    } else {
      throw new MergeError("path", `path ${q}: index ${idx} is beyond the end of an array of ${target.length}`);
    }
  } else if (isObject(target)) {
    if (c.op === "remove") delete target[last];
    else setOwn(target, last, value);
  } else {
    throw new MergeError("path", `path ${q}: ${JSON.stringify(parts.slice(0, -1).join("."))} is ${typeName(target)}, not an object or array`);
  }
  return parts.length + valueDepth;
}
function arrayIndex(s) {
  if (!/^(0|[1-9][0-9]{0,8})$/.test(s)) return -1;
  return Number(s);
}
function diff(old, next) {
  checkOptional(old, "diff", "old value");
  checkPresent(next, "diff", "new value");
  const a = old === void 0 || old === null ? {} : old;
  if (!isObject(a) || !isObject(next)) return { ok: false, changes: null };
  const changes = diffObject("", a, next);
  if (changes === null) return { ok: false, changes: null };
  return { ok: true, changes };
}
var addressable = (k) => k !== "" && !k.includes(".") && k !== "__proto__";
var joinPath = (prefix, part) => prefix === "" ? part : prefix + "." + part;
function diffObject(prefix, a, b) {
  const changes = [];
  for (const k of Object.keys(a)) {
    const inB = hasOwn(b, k);
    if (inB && equal(a[k], b[k])) continue;
    if (!addressable(k)) return null;
    if (!inB) changes.push({ op: "remove", path: joinPath(prefix, k) });
    else changes.push(...diffValue(joinPath(prefix, k), a[k], b[k]));
  }
  for (const k of Object.keys(b)) {
    if (hasOwn(a, k)) continue;
    if (!addressable(k)) return null;
    changes.push({ op: "add", path: joinPath(prefix, k), value: b[k] });
  }
  return changes;
}
function diffValue(path, a, b) {
  let inner = null;
  if (isObject(a) && isObject(b)) {
    inner = diffObject(path, a, b);
  } else if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) {
    inner = [];
    for (let i = 0; i < a.length; i++) {
      if (!equal(a[i], b[i])) inner.push(...diffValue(joinPath(path, String(i)), a[i], b[i]));
    }
  }
  const whole = { op: "update", path, value: b };
  if (inner !== null) {
    let n = 0;
    for (const c of inner) n += changeSize(c, c.op === "remove" ? 0 : encodedLength(c.value));
    if (n < changeSize(whole, encodedLength(b))) return inner;
  }
  return [whole];
}
function changeSize(c, n) {
  let size = '{"op":"","path":""},'.length + c.op.length + utf8Length(c.path);
  if (n > 0) size += ',"value":'.length + n;
  return size;
}
var encoder = new TextEncoder();
function utf8Length(s) {
  return encoder.encode(s).length;
}
function encodedLength(v) {
  return utf8Length(JSON.stringify(v));
}
function parseCursor(cursor) {
  if (typeof cursor !== "string") return null;
  const m = /^(0|[1-9][0-9]*)\.([A-Za-z0-9_-]{1,64})$/.exec(cursor);
  if (!m) return null;
  const seq = Number(m[1]);
  return Number.isSafeInteger(seq) ? { seq, epoch: m[2] } : null;
}
function advances(prev, next) {
  const p = parseCursor(prev);
  const n = parseCursor(next);
  if (!p || !n) return true;
  return p.epoch !== n.epoch || n.seq > p.seq;
}
function isStateReset(data) {
  return isObject(data) && data.reset === true && data.version === 0;
}

// src/presence.js
var Presence = class {
  constructor() {
    this.members = /* @__PURE__ */ new Map();
    this.count = 0;
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
      const next = /* @__PURE__ */ new Map();
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
    const members = [...this.members.values()].sort((a, b) => a.user < b.user ? -1 : a.user > b.user ? 1 : 0);
    return { members, count: this.count, joined, left };
  }
};
function presenceFrame(ch, m) {
  const p = ch.presence ?? (ch.presence = new Presence());
  const { joined, left } = p.apply(m);
  const view = p.view(joined, left);
  for (const sub of [...ch.subs]) if (sub.onPresence) call(sub.onPresence, view);
}
function followPresence(ch, sub) {
  if (!ch.presence || !sub.onPresence) return;
  queueMicrotask(() => ch.subs.has(sub) && ch.presence && call(sub.onPresence, ch.presence.view([], [])));
}
function membersOf(ch) {
  const p = ch?.presence;
  return p ? { members: [...p.members.values()], count: p.count } : null;
}
function sameMember(a, b) {
  return a !== void 0 && a.conns === b.conns && JSON.stringify(a.info) === JSON.stringify(b.info);
}

// src/channels.js
var Channels = class {
  /**
   * @param {{closed: () => boolean, added: (ch: import("./link.js").Channel) => void, removed: (ch: import("./link.js").Channel) => void}} to
   */
  constructor(to) {
    this._to = to;
    this._byName = /* @__PURE__ */ new Map();
  }
  /** get returns the channel named name, or undefined. */
  get(name) {
    return this._byName.get(name);
  }
  /** values returns the channels subscribed. */
  values() {
    return this._byName.values();
  }
  /** cursor returns the cursor the channel resumes from, or null. */
  cursor(name) {
    return this._byName.get(name)?.cursor ?? null;
  }
  /** members returns the channel's presence as last received ({members, count}), or null. */
  members(name) {
    return membersOf(this._byName.get(name));
  }
  /**
   * subscribe calls callback(data, meta) for every publication on channel,
   * in order, each once, and returns a function that unsubscribes.
   * Callers of one channel share its subscription. opts.cursor resumes
   * from a saved cursor (only for the channel's first subscriber);
   * opts.onReset(cursor, reason) is called when the hub could not replay
   * what was missed: refetch the channel's state. opts.onSubscribed(cursor)
   * is called whenever the hub acknowledges the subscription, after which
   * publications reach the callback; opts.onError(err) on a refusal;
   * opts.onPresence(presence) on a presence channel (see Live.presence).
   */
  subscribe(channel, callback, opts = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("live: subscribe: channel must be a non-empty string");
    if (typeof callback !== "function") throw new TypeError("live: subscribe: callback must be a function");
    if (this._to.closed()) throw new LiveError("closed", "live: subscribe after close");
    let ch = this._byName.get(channel);
    if (!ch) {
      ch = { name: channel, cursor: typeof opts.cursor === "string" && opts.cursor ? opts.cursor : null, acked: false, refused: false, subs: /* @__PURE__ */ new Set() };
      this._byName.set(channel, ch);
      this._to.added(ch);
    }
    const sub = { callback, onReset: opts.onReset, onSubscribed: opts.onSubscribed, onError: opts.onError, onPresence: opts.onPresence };
    ch.subs.add(sub);
    if (ch.acked && sub.onSubscribed) {
      const cursor = ch.cursor;
      queueMicrotask(() => ch.subs.has(sub) && call(sub.onSubscribed, cursor));
    }
    followPresence(ch, sub);
    return () => {
      if (!ch.subs.delete(sub) || ch.subs.size > 0 || this._byName.get(channel) !== ch) return;
      this._byName.delete(channel);
      this._to.removed(ch);
    };
  }
};

// src/http.js
var MUTATION_ID_HEADER = "Live-Mutation-Id";
var CONNECTION_HEADER = "Live-Connection";
async function httpError(res, what) {
  let body;
  try {
    body = await res.json();
  } catch {
    body = void 0;
  }
  const conflict = res.status === 409 || res.status === 412;
  const code = conflict ? "conflict" : isObject(body) && typeof body.error === "string" ? body.error : "http";
  const detail = isObject(body) && typeof body.message === "string" ? `: ${body.message}` : "";
  return new LiveError(code, `live: ${what}: ${res.status}${detail}`, { status: res.status, body });
}
async function request(fetchFn, url, init, timeout, what) {
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
    if (text === "") return void 0;
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
function retryAfter(res) {
  const v = res.headers?.get?.("Retry-After")?.trim();
  if (!v) return void 0;
  if (/^\d+$/.test(v)) return Number(v) * 1e3;
  const at = Date.parse(v);
  return Number.isNaN(at) ? void 0 : Math.max(0, at - Date.now());
}
function defaultFetch() {
  if (typeof fetch !== "function") throw new TypeError("live: no fetch function: pass options.fetch");
  return (url, init) => fetch(url, init);
}
function validChannel(name) {
  return name.length <= 128 && name !== "." && name !== ".." && /^[A-Za-z0-9_\-:.@=+]+$/.test(name);
}

// src/endings.js
var finalEndings = /* @__PURE__ */ new Map([
  [4001, "removed"],
  [401, "signed-out"]
]);
function finalStatus(code) {
  return finalEndings.get(code);
}
var restart = 1012;
function restartDelay(code, reason, retry) {
  if (code !== restart) return void 0;
  return Number.isSafeInteger(retry) ? Number(retry) : Number(/retry in (\d+) ms/.exec(reason)?.[1]);
}
function refusal(err) {
  return [err.code === "disconnected" ? 4001 : 401, String(err.body?.message ?? err.code)];
}
function whyRefused(fetch2, sseURL, o, wanted, refused, later) {
  let url;
  try {
    const base = sseURL() + (/\/$/.test(o.sseURL) ? "/" : "");
    url = `${base}${base.includes("?") ? "&" : "?"}channels=`;
  } catch {
    return;
  }
  Promise.resolve().then(() => fetch2()(url, { headers: { Accept: "application/json", ...o.headers }, credentials: o.credentials, cache: "no-store" })).then(async (res) => {
    if (!wanted()) return;
    const after = res.status === 503 ? retryAfter(res) : void 0;
    if (after !== void 0) later(after);
    if (res.status !== 401) return;
    refused(await httpError(res, "connecting"));
  }).catch(() => {
  });
}

// src/frames.js
function handleText(text, to) {
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
function handleFrame(m, to) {
  if (!isObject(m)) return false;
  const ch = typeof m.channel === "string" ? to.channel(m.channel) : void 0;
  switch (m.type) {
    case "data": {
      if (!ch || !ch.acked) return false;
      if (typeof m.cursor === "string") {
        if (!isStateReset(m.data) && ch.cursor && !advances(ch.cursor, m.cursor)) return false;
        ch.cursor = m.cursor;
      }
      const meta = { channel: m.channel, cursor: m.cursor ?? null };
      if (m.queryKey !== void 0) meta.queryKey = m.queryKey;
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
      return to.delayed(m.status === "delayed");
    case "reset": {
      if (!ch) return false;
      const was = ch.cursor;
      if (typeof m.cursor === "string") ch.cursor = m.cursor;
      for (const sub of [...ch.subs]) if (sub.onReset) call(sub.onReset, ch.cursor, String(m.reason ?? ""));
      return ch.cursor !== was;
    }
    case "close": {
      if (!Number.isSafeInteger(m.closeCode)) return false;
      to.ended(m.closeCode, String(m.reason ?? ""), m.retry);
      return true;
    }
    case "refresh":
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

// src/options.js
var transports = ["auto", "websocket", "sse", "poll"];
function liveOptions(options) {
  const o = {
    url: "/ws",
    sseURL: "/api/live",
    transport: "auto",
    minBackoff: 1e3,
    maxBackoff: 3e4,
    connectTimeout: 1e4,
    publishTimeout: 1e4,
    maxQueue: 1e3,
    pingInterval: 25e3,
    pongTimeout: 1e4,
    firstFrameTimeout: 5e3,
    probeInterval: 3e5,
    headers: {},
    credentials: "same-origin",
    random: Math.random,
    WebSocket: globalThis.WebSocket,
    fetch: void 0,
    ...given(options)
  };
  if (!transports.includes(o.transport)) throw new TypeError(`live: transport must be "auto", "websocket", "sse" or "poll", not ${JSON.stringify(String(o.transport))}`);
  if (typeof o.WebSocket !== "function" && o.transport === "websocket") throw new TypeError("live: no WebSocket constructor: pass options.WebSocket");
  return o;
}
function given(options) {
  const o = {};
  for (const [k, v] of Object.entries(options ?? {})) if (v !== void 0) o[k] = v;
  return o;
}

// src/request.js
var RequestTransport = class {
  /**
   * @param {import("./link.js").Link} link
   * @param {RequestOptions} o
   */
  constructor(link, o) {
    this.link = link;
    this._o = o;
    this._stream = null;
    this._openTimer = null;
    this._reopenTimer = null;
    this._pingTimer = null;
    this._lastSeen = 0;
  }
  /** open opens the stream, unless one is open or a reconnection waits. */
  open() {
    this._openStream(false);
  }
  /** close drops the stream: its events are ignored from now on. */
  close() {
    clearTimeout(this._reopenTimer);
    this._reopenTimer = null;
    this._unwait();
    this._dropStream();
  }
  /** added makes the next stream carry a channel the Live gained. */
  added() {
    this._channelsChanged();
  }
  /** removed makes the next stream leave out a channel the Live dropped. */
  removed() {
    this._channelsChanged();
  }
  /** publish sends a publish as a POST to sseURL/channel. */
  publish(ref, p) {
    p.sent = true;
    p.ctl = new AbortController();
    const { channel, data } = p.frame;
    let url;
    try {
      url = `${this.link.sseURL()}/${encodeURIComponent(channel)}`;
    } catch (e) {
      this.link.publishFailed(ref, p, new LiveError("network", `live: publish on ${channel}: ${e.message}`, { channel }));
      return;
    }
    request(this.link.fetch(), url, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json", ...this._o.headers },
      credentials: this._o.credentials,
      body: JSON.stringify(data),
      signal: p.ctl.signal
    }, 0, `publish on ${channel}`).then(
      (body) => this.link.published(ref, p, isObject(body) && typeof body.cursor === "string" ? body.cursor : ""),
      (e) => {
        if (e instanceof LiveError && e.channel === void 0) e.channel = channel;
        this.link.publishFailed(ref, p, e);
      }
    );
  }
  /**
   * _streamable returns the channels a stream should carry: all but those
   * the hub refused. Names the hub would refuse, which would make it refuse
   * the whole stream, are reported to their subscribers here instead.
   */
  _streamable() {
    const out = [];
    for (const ch of this.link.channels()) {
      if (!ch.refused && !validChannel(ch.name)) {
        ch.refused = "invalid";
        const err = new LiveError("bad_channel", `live: ${ch.name.slice(0, 140)}: a channel name is 1 to 128 of A-Z a-z 0-9 _ - : . @ = +, and not "." or ".."`, { channel: ch.name });
        this.link.channelError(ch, err);
      }
      if (!ch.refused) out.push(ch);
    }
    return out;
  }
  /** _channelsChanged opens a stream for the new set of channels once the current task is done. */
  _channelsChanged() {
    if (this.link.closed() || this._reopenTimer !== null) return;
    this._reopenTimer = setTimeout(() => {
      this._reopenTimer = null;
      if (!this.link.mayOpen() || !this.link.current()) return;
      const want = this._streamable().map((ch) => ch.name);
      const have = this._stream?.names ?? this._waiting() ?? [];
      if (want.length === 0 && !this._stream) {
        this.link.status("connected");
        return;
      }
      if (want.length === have.length && want.every((n) => have.includes(n))) return;
      this._dropStream(this.keepAcksOnChange);
      this._openStream(true, have.length > 0);
    }, 0);
  }
  /**
   * _openStream opens the stream of every streamable channel, each from
   * its cursor. planned is true when only the set of channels changed;
   * then, if it replaces a stream (replacing), a client that is connected
   * stays so while the new stream opens.
   */
  _openStream(planned, replacing = false) {
    if (!this.link.mayOpen() || this._stream) return;
    clearTimeout(this._reopenTimer);
    this._reopenTimer = null;
    this._unwait();
    if (!planned) {
      for (const ch of this.link.channels()) if (ch.refused === "hub") ch.refused = false;
    }
    const chans = this._streamable();
    if (chans.length === 0) {
      if (planned) this.link.status("connected");
      else this._channelsChanged();
      return;
    }
    const s = { ctl: new AbortController(), names: chans.map((ch) => ch.name), open: false, framed: false, firstTimer: null, sent: Date.now() };
    this._stream = s;
    for (const ch of this.link.channels()) ch.acked = this._keepsAck(ch, chans);
    const params = this._params(chans);
    if (!replacing || !this.link.connected()) this.link.status("connecting");
    let url;
    try {
      const q = new URLSearchParams();
      q.set("channels", s.names.join(","));
      for (const ch of chans) if (ch.cursor) q.set("cursor." + ch.name, ch.cursor);
      for (const [k, v] of params) q.set(k, v);
      const base = this.link.sseURL() + (/\/$/.test(this._o.sseURL) ? "/" : "");
      url = `${base}${base.includes("?") ? "&" : "?"}${q}`;
    } catch (e) {
      this._streamFailed(s, new LiveError("network", `live: cannot open the stream: ${e.message}`), true);
      return;
    }
    if (this._o.connectTimeout > 0) {
      const limit = this._o.connectTimeout + this.hold;
      this._openTimer = setTimeout(() => {
        this._openTimer = null;
        if (this._stream === s && !s.open) this._streamFailed(s, new LiveError("timeout", `live: the ${this.notOpened} within ${limit} ms`), false);
      }, limit);
    }
    this._started(s);
    Promise.resolve().then(() => this.link.fetch()(url, {
      headers: { Accept: this.accept, ...this._o.headers },
      credentials: this._o.credentials,
      cache: "no-store",
      signal: s.ctl.signal
    })).then(async (res) => {
      if (this._stream !== s) return;
      clearTimeout(this._openTimer);
      this._openTimer = null;
      if (!res.ok) {
        const err = await httpError(res, "opening the stream");
        err.retryAfter = retryAfter(res);
        if (this._stream === s) this._streamRefused(s, err);
        return;
      }
      await this._answered(s, res, res.headers.get("Content-Type") ?? "");
    }).catch((e) => {
      if (this._stream !== s) return;
      this._streamFailed(s, e instanceof LiveError ? e : new LiveError("network", `live: the stream failed: ${e?.message ?? e}`), false);
    });
  }
  /**
   * _streamRefused handles an HTTP error answering the stream. 400, 403
   * and 404 refuse its channels (each subscriber hears why), which are
   * not asked for again until the next reconnection; a 503 with
   * Retry-After is retried after that; anything else is a failed
   * connection, retried after the backoff.
   */
  _streamRefused(s, err) {
    if (err.status === 401) {
      this._dropStream();
      this.link.error(err);
      this.link.refused(err);
      return;
    }
    if (err.status === 503 && err.retryAfter !== void 0) {
      this._dropStream();
      this.link.lost(err.retryAfter);
      return;
    }
    if (err.status !== 400 && err.status !== 403 && err.status !== 404) {
      this._streamFailed(s, err, true);
      return;
    }
    this._dropStream();
    for (const name of s.names) {
      const ch = this.link.channel(name);
      if (!ch) continue;
      ch.refused = "hub";
      const e = new LiveError(err.code, err.message, { channel: name, status: err.status, body: err.body });
      this.link.channelError(ch, e);
    }
    this._openStream(true, false);
  }
  /**
   * _streamFailed gives up the stream s and schedules a reconnection, after
   * the backoff, or after about after ms (a retry line).
   */
  _streamFailed(s, err, report2, after) {
    if (this._stream !== s) return;
    if (this._fellBack(s)) return;
    this._dropStream();
    this.link.status("error");
    if (report2) this.link.error(err);
    this.link.lost(after);
  }
  /**
   * _dropStream forgets the stream and aborts its request: its events are
   * ignored from now on. keepAcks keeps the channels acknowledged, for a
   * poll replaced by one with more channels.
   */
  _dropStream(keepAcks = false) {
    const s = this._stream;
    if (!s) return;
    this._stream = null;
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(s.firstTimer);
    this._openTimer = this._pingTimer = null;
    s.ctl.abort();
    if (!keepAcks) for (const ch of this.link.channels()) ch.acked = false;
  }
  /**
   * _alive notes that the stream works. A stream cannot be pinged: the
   * hub's heartbeat comments keep it alive, and it is given up after
   * pingInterval + pongTimeout of silence.
   */
  _alive() {
    this._lastSeen = Date.now();
    if (this._pingTimer !== null || this._o.pingInterval <= 0) return;
    this._watchStream(this._o.pingInterval + this._o.pongTimeout);
  }
  _watchStream(delay) {
    const s = this._stream;
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      if (this._stream !== s) return;
      const limit = this._o.pingInterval + this._o.pongTimeout;
      const idle = Date.now() - this._lastSeen;
      if (idle < limit) {
        this._watchStream(limit - idle);
        return;
      }
      this._streamFailed(s, new LiveError("timeout", `live: the stream was silent for ${idle} ms`), false);
    }, delay);
  }
};

// src/poll.js
var maxHold = 25e3;
var pollPace = 250;
var maxPollPace = 5e3;
var PollTransport = class extends RequestTransport {
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
    this._paced = null;
    this._pace = 0;
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
  _started() {
  }
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
    this._stream = null;
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    this._openTimer = this._pingTimer = null;
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
};

// src/ws.js
var OPEN = 1;
var SocketTransport = class {
  /**
   * @param {import("./link.js").Link} link
   * @param {{url: string, WebSocket: typeof WebSocket, connectTimeout: number, pingInterval: number, pongTimeout: number}} o
   */
  constructor(link, o) {
    this.link = link;
    this._o = o;
    this.name = "websocket";
    this._url = wsURL(o.url);
    this._ws = null;
    this._openTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._lastSeen = 0;
  }
  /** close forgets the socket and closes it: its events are ignored from now on. */
  close(reason) {
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1e3, reason);
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
        if (this._ws !== ws) return;
        this._detach();
        ws.close(4e3, "no pong");
        this.link.lost();
      }, this._o.pongTimeout);
    }, delay);
  }
};
function wsURL(url) {
  const base = typeof location !== "undefined" ? location.href : void 0;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

// src/probe.js
var Prober = class {
  /**
   * @param {{transport: string, probeInterval: number, connectTimeout: number, url: string|URL, WebSocket: any}} o
   * @param {{mode: () => "websocket"|"sse"|"poll", usable: () => boolean, opened: () => void, moveTo: (mode: "websocket"|"sse") => void}} to
   */
  constructor(o, to) {
    this._o = o;
    this._to = to;
    this._timer = null;
    this._ws = null;
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
    const timer = setTimeout(() => done(false), this._o.connectTimeout > 0 ? this._o.connectTimeout : 1e4);
    const done = (opened) => {
      if (this._ws !== ws) return;
      this._ws = null;
      clearTimeout(timer);
      ws.onopen = ws.onclose = ws.onerror = null;
      ws.close(1e3, "probe");
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
};

// src/publish.js
var Publishes = class {
  /**
   * @param {number} maxQueue how many may wait at once
   * @param {(ref: number, p: import("./link.js").Publish) => void} send sends one by the transport in use
   */
  constructor(maxQueue, send) {
    this._maxQueue = maxQueue;
    this._send = send;
    this._waiting = /* @__PURE__ */ new Map();
    this._ref = 0;
  }
  /**
   * publish sends data on channel and resolves with its cursor once the
   * hub acknowledges it; it rejects after timeout ms (0: never) without an
   * answer.
   * @returns {Promise<string>}
   */
  publish(channel, data, timeout) {
    try {
      if (JSON.stringify(data) === void 0) throw new TypeError("data is undefined");
    } catch (e) {
      return Promise.reject(new TypeError(`live: publish: data must be a JSON value: ${e.message}`));
    }
    if (this._waiting.size >= this._maxQueue) {
      return Promise.reject(new LiveError("queue_full", `live: publish: ${this._maxQueue} publishes are already waiting`, { channel }));
    }
    const ref = ++this._ref;
    const frame = { type: "publish", channel, data, ref };
    return new Promise((resolve, reject) => {
      const p = { frame, sent: false, resolve, reject, timer: null, ctl: null };
      if (timeout > 0) {
        p.timer = setTimeout(() => {
          this._waiting.delete(ref);
          p.ctl?.abort();
          reject(new LiveError("timeout", `live: publish on ${channel}: no acknowledgement within ${timeout} ms`, { channel }));
        }, timeout);
      }
      this._waiting.set(ref, p);
      this._send(ref, p);
    });
  }
  /** sendUnsent sends again, by the transport in use now, those not sent yet. */
  sendUnsent() {
    for (const [ref, p] of this._waiting) if (!p.sent) this._send(ref, p);
  }
  /** published resolves p, the publish ref, with cursor, if it still waits. */
  published(ref, p, cursor) {
    if (this._waiting.get(ref) !== p) return;
    this._waiting.delete(ref);
    clearTimeout(p.timer);
    p.resolve(cursor);
  }
  /** failed rejects p, the publish ref, with err, if it still waits. */
  failed(ref, p, err) {
    if (this._waiting.get(ref) === p) this._fail(ref, p, err);
  }
  /** acknowledged resolves the publish ref with cursor; it reports whether one waited. */
  acknowledged(ref, cursor) {
    const p = this._waiting.get(ref);
    if (p) this.published(ref, p, cursor);
    return p !== void 0;
  }
  /**
   * refused rejects the publish ref with the hub's error code and detail
   * (its message, or the code); it reports whether one waited.
   */
  refused(ref, code, detail) {
    const p = this._waiting.get(ref);
    if (!p) return false;
    this._waiting.delete(ref);
    clearTimeout(p.timer);
    p.reject(new LiveError(code, `live: publish on ${p.frame.channel}: ${detail}`, { channel: p.frame.channel }));
    return true;
  }
  /**
   * sentLost rejects the publishes sent on a connection that was lost
   * (those a request carries settle with it) with err(channel): whether
   * the hub made them is unknown.
   */
  sentLost(err) {
    for (const [ref, p] of this._waiting) if (p.sent && !p.ctl) this._fail(ref, p, err(p.frame.channel));
  }
  /** failAll rejects every publish waiting with err(channel). */
  failAll(err) {
    for (const [ref, p] of this._waiting) this._fail(ref, p, err(p.frame.channel));
  }
  _fail(ref, p, err) {
    this._waiting.delete(ref);
    clearTimeout(p.timer);
    p.ctl?.abort();
    p.reject(err);
  }
};

// src/sse.js
var maxLine = 16 << 20;
var SSETransport = class extends RequestTransport {
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
  _unwait() {
  }
  /** _read parses the stream's events and handles each one's data as a frame. */
  async _read(s, body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = null;
    for (; ; ) {
      const { done, value } = await reader.read();
      if (this._stream !== s) {
        reader.cancel().catch(() => {
        });
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
          if (cr === buf.length - 1) break;
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
              reader.cancel().catch(() => {
              });
              return;
            }
          }
          continue;
        }
        if (line[0] === ":") continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v[0] === " ") v = v.slice(1);
        if (field === "retry" && /^\d+$/.test(v)) s.retry = Number(v);
        if (field !== "data") continue;
        data = data === null ? v : data + "\n" + v;
      }
      buf = buf.slice(pos);
      if (buf.length + (data?.length ?? 0) > maxLine) {
        this._streamFailed(s, new LiveError("bad_frame", `live: the stream sent an event longer than ${maxLine} bytes`), true);
        reader.cancel().catch(() => {
        });
        return;
      }
    }
    this._streamFailed(s, new LiveError("disconnected", "live: the stream ended"), false, s.retry);
  }
};

// src/connection.js
var expired = 4003;
var offline = () => typeof navigator !== "undefined" && navigator.onLine === false;
function createLive(options = {}) {
  return new Live(options);
}
var Live = class {
  constructor(options) {
    const o = liveOptions(options);
    o.headers = { ...o.headers };
    this._o = o;
    this._mode = o.transport === "auto" ? typeof o.WebSocket !== "function" ? "sse" : "websocket" : o.transport;
    this._everStreamed = false;
    this._sseBase = null;
    this._everOpened = false;
    this._closed = false;
    this._timer = null;
    this._ending = null;
    this._final = null;
    this._refreshing = false;
    this._expiredRetried = false;
    this._offline = offline();
    this._conn = { status: this._offline ? "offline" : "connecting", reconnectAttempt: 0, transport: this._mode, delayed: false, ending: null };
    this._statusListeners = /* @__PURE__ */ new Set();
    this._errorListeners = /* @__PURE__ */ new Set();
    this._endListeners = /* @__PURE__ */ new Set();
    this._channels = new Channels({ closed: () => this._closed, added: (ch) => this._t.added(ch), removed: (ch) => this._t.removed(ch) });
    this._connectionID = null;
    this._delayed = false;
    this._publishes = new Publishes(o.maxQueue, (ref, p) => this._t.publish(ref, p));
    this._receiver = this._newReceiver();
    this._t = this._newTransport(this._mode);
    this._prober = new Prober(o, {
      mode: () => this._mode,
      usable: () => !this._closed && this._final === null && !this._offline,
      opened: () => {
        this._everOpened = true;
      },
      moveTo: (mode) => this._moveTo(mode)
    });
    this._onOnline = () => this._online();
    this._onOffline = () => this._goOffline();
    if (typeof addEventListener === "function") {
      addEventListener("online", this._onOnline);
      addEventListener("offline", this._onOffline);
    }
    this._connect();
  }
  /** @returns {Connection} */
  get connection() {
    return { ...this._conn };
  }
  /** The transport in use: "websocket", "sse" or "poll". */
  get transport() {
    return this._mode;
  }
  /**
   * onStatus calls listener with the connection state now and whenever it
   * changes; it returns a function that stops the calls.
   */
  onStatus(listener) {
    this._statusListeners.add(listener);
    const c = this.connection;
    try {
      listener(c);
    } catch (e) {
      report(e);
    }
    return () => this._statusListeners.delete(listener);
  }
  /** onError calls listener with every LiveError the hub reports; it returns a function that stops the calls. */
  onError(listener) {
    this._errorListeners.add(listener);
    return () => this._errorListeners.delete(listener);
  }
  /**
   * onEnd calls listener({code, reason, retry, transport}) whenever the
   * server ends the connection, on any transport (see createLive): retry
   * false for the final endings, after which the status is "removed" or
   * "signed-out" and nothing reconnects until connect(). It returns a
   * function that stops the calls.
   */
  onEnd(listener) {
    this._endListeners.add(listener);
    return () => this._endListeners.delete(listener);
  }
  /**
   * connect connects again after a final ending (once the user has logged
   * in again, say): every channel resumes from its cursor. Otherwise it
   * reconnects at once if a reconnection waits, and does nothing if the
   * connection is open or opening.
   */
  connect() {
    if (this._closed) throw new LiveError("closed", "live: connect after close");
    if (this._final !== null) {
      this._final = null;
      this._setStatus("connecting", 0);
      this._prober.schedule(Math.min(3e4, this._o.probeInterval));
      this._connect();
      return;
    }
    if (this._timer !== null) this._reconnectNow();
  }
  /** The hub's name for the connection (sent as the Live-Connection header of writes), or null before the first acknowledgement. */
  get connectionID() {
    return this._connectionID;
  }
  /**
   * presence follows who is subscribed to channel, on a channel the hub
   * gives presence (Options.Presence): it subscribes (sharing the
   * channel's subscription) and calls listener({members, count, joined,
   * left}) with the members (sorted by user: {user, info, conns}), how
   * many are here (users plus anonymous connections), and who joined or
   * left since the last call (a member whose info or connection count
   * changed is among joined). A page that reloads, or a connection that
   * comes back, within the hub's grace window is neither a leave nor a
   * join. On a channel that shows counts only, members stays empty. It
   * returns a function that stops following; opts.onError gets refusals.
   */
  presence(channel, listener, opts = {}) {
    if (typeof listener !== "function") throw new TypeError("live: presence: listener must be a function");
    return this.subscribe(channel, () => {
    }, { onPresence: listener, onError: opts.onError });
  }
  /** members returns the channel's presence as last received ({members, count}), or null. */
  members(channel) {
    return this._channels.members(channel);
  }
  /** cursor returns the cursor the channel resumes from, or null. */
  cursor(channel) {
    return this._channels.cursor(channel);
  }
  /**
   * subscribe calls callback(data, meta) for every publication on channel,
   * in order, each once, and returns a function that unsubscribes: see
   * Channels.subscribe (channels.js) for its options.
   */
  subscribe(channel, callback, opts = {}) {
    return this._channels.subscribe(channel, callback, opts);
  }
  /**
   * publish sends data on channel (the hub must allow clients to publish
   * there) and resolves with its cursor once the hub acknowledges it. Over
   * a WebSocket it waits while disconnected; over SSE it is a POST to
   * sseURL/channel. Either way it gives up after opts.timeout ms. It
   * rejects with a LiveError: the hub's code, "timeout", "queue_full",
   * "closed", "network", or "disconnected" when the connection was lost
   * after sending, in which case the publication may or may not have been
   * made.
   * @returns {Promise<string>}
   */
  publish(channel, data, opts = {}) {
    if (this._closed) return Promise.reject(new LiveError("closed", "live: publish after close", { channel }));
    return this._publishes.publish(channel, data, opts.timeout ?? this._o.publishTimeout);
  }
  /** close closes the connection for good: no reconnection follows. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (typeof removeEventListener === "function") {
      removeEventListener("online", this._onOnline);
      removeEventListener("offline", this._onOffline);
    }
    clearTimeout(this._timer);
    this._timer = null;
    this._prober.stop();
    this._t.close("closed by the client");
    this._publishes.failAll((channel) => new LiveError("closed", "live: closed before the publish was acknowledged", { channel }));
    this._setStatus("disconnected", this._conn.reconnectAttempt);
  }
  // --- internals
  _setStatus(status, reconnectAttempt) {
    const transport = this._mode;
    const c = this._conn;
    const delayed = status === "connected" && this._delayed === true;
    if (!delayed) this._delayed = false;
    if (status === "connected") {
      this._ending = null;
      this._expiredRetried = false;
    }
    const ending = this._ending;
    if (c.status === status && c.reconnectAttempt === reconnectAttempt && c.transport === transport && c.delayed === delayed && c.ending === ending) return;
    this._conn = { status, reconnectAttempt, transport, delayed, ending };
    for (const l of [...this._statusListeners]) call(l, { ...this._conn });
  }
  /**
   * _ended tells onEnd listeners that the server ended the connection with
   * code and reason, and, for a final ending, stops: the transport is
   * closed, no reconnection or probe is pending, publishes waiting fail,
   * and the status stays what the ending left until connect(). A restart
   * (1012) is followed by its reconnection (_restart). It reports whether
   * it took care of what follows: a final ending, or a restart.
   */
  _ended(code, reason, retry) {
    if (this._closed || this._final !== null) return true;
    const status = finalStatus(code);
    const ending = { code, reason, retry: status === void 0, transport: this._mode };
    this._ending = ending;
    for (const l of [...this._endListeners]) call(l, { ...ending });
    if (code === expired && this._o.refresh) {
      this._refresh();
      return true;
    }
    const delay = restartDelay(code, reason, retry);
    if (delay !== void 0) {
      this._restart(delay);
      return true;
    }
    if (status === void 0) return false;
    this._final = status;
    clearTimeout(this._timer);
    this._timer = null;
    this._prober.stop();
    this._t.close("ended by the server");
    const failed = status === "removed" ? "disconnected" : "unauthenticated";
    this._publishes.failAll((channel) => new LiveError(failed, `live: publish on ${channel}: the server ended the connection (${code} ${reason})`, { channel }));
    this._setStatus(status, this._conn.reconnectAttempt);
    return true;
  }
  /**
   * _restart follows a server that restarts: the connection is given up
   * without an error and opened again after delay ms, the server's draw
   * for this client (under a second when it gave none), from the cursors,
   * wherever the load balancer sends it.
   */
  _restart(delay) {
    this._t.close("the server restarts");
    clearTimeout(this._timer);
    this._timer = null;
    this._setStatus("connecting", this._conn.reconnectAttempt);
    this._wait(Number.isFinite(delay) && delay >= 0 ? Math.min(delay, 6e4) : 100 + Math.floor(this._o.random() * 900));
  }
  /**
   * _refused ends the connection for a 401 answer (see refusal), unless
   * the credential expired and the refresh option may renew it: once
   * until a connection opens, so that a refresh that renews nothing ends
   * as "signed-out".
   */
  _refused(err) {
    if (err.code === "credentials_expired" && this._o.refresh && !this._expiredRetried && !this._closed && this._final === null) {
      this._expiredRetried = true;
      this._refresh();
      return;
    }
    this._ended(...refusal(err));
  }
  /**
   * _refresh follows a hub that says the connection's credential expires
   * (a "refresh" frame, the ending 4003, a 401 "credentials_expired"):
   * with the refresh option it awaits a new credential (headers it returns
   * join the headers option), then reconnects at once from every channel's
   * cursor, with the status "connecting" meanwhile and no error. Without
   * it the expiry ends the connection as any ending does. A refresh that
   * fails is reported to onError listeners; the connection goes on until
   * the hub ends it.
   */
  _refresh() {
    const fetchNew = this._o.refresh;
    if (typeof fetchNew !== "function" || this._refreshing || this._closed || this._final !== null) return;
    this._refreshing = true;
    Promise.resolve().then(() => fetchNew()).then(
      (headers) => {
        this._refreshing = false;
        if (headers && typeof headers === "object") Object.assign(this._o.headers, headers);
        if (this._closed || this._final !== null) return;
        this._t.close("refreshing the credential");
        clearTimeout(this._timer);
        this._timer = null;
        this._setStatus("connecting", this._conn.reconnectAttempt);
        this._connect();
      },
      (e) => {
        this._refreshing = false;
        this._emitError(new LiveError("refresh_failed", `live: refreshing the credential failed: ${e?.message ?? e}`));
      }
    );
  }
  /**
   * _goOffline follows the browser offline: the connection is given up at
   * once (it may take a ping's timeout to fail by itself) and nothing is
   * tried until the browser is back online.
   */
  _goOffline() {
    if (this._closed || this._offline) return;
    this._offline = true;
    if (this._final !== null) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._prober.stop();
    this._t.close("offline");
    this._setStatus("offline", this._conn.reconnectAttempt);
  }
  /**
   * _online follows the browser back online: reconnect at once, and, below
   * WebSocket with "auto", try the transports above now, as the move down
   * may have been the network's doing.
   */
  _online() {
    if (!this._offline && this._timer === null) return;
    this._offline = false;
    if (this._closed || this._final !== null) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._connect();
    this._prober.now();
  }
  /**
   * _whyRefused asks why a WebSocket did not open (see whyRefused), unless
   * the connection has moved on meanwhile. A 401 is a final ending; a 503
   * with Retry-After (a draining hub) moves the reconnection _lost
   * scheduled to when it says.
   */
  _whyRefused() {
    const mode = this._mode;
    const wanted = () => !this._closed && this._mode === mode && this._conn.status !== "connected";
    const later = (after) => {
      if (this._timer === null) return;
      clearTimeout(this._timer);
      this._timer = null;
      this._wait(jitter(after, this._o.random));
    };
    whyRefused(() => this._fetch(), () => this._sseURL(), this._o, wanted, (err) => this._refused(err), later);
  }
  _emitError(err, sub) {
    if (sub?.onError) call(sub.onError, err);
    for (const l of [...this._errorListeners]) call(l, err);
  }
  _connect() {
    if (this._closed || this._final !== null) return;
    if (this._offline) {
      this._setStatus("offline", this._conn.reconnectAttempt);
      return;
    }
    this._t.open();
  }
  /**
   * _newTransport returns a transport of the kind mode names. It reaches
   * this Live only through the link and the options it is given.
   */
  _newTransport(mode) {
    const o = this._o;
    let t = null;
    const link = this._link(() => t);
    const timing = { connectTimeout: o.connectTimeout, pingInterval: o.pingInterval, pongTimeout: o.pongTimeout };
    if (mode === "websocket") {
      t = new SocketTransport(link, { ...timing, url: o.url, WebSocket: o.WebSocket });
    } else {
      const opts = { ...timing, sseURL: o.sseURL, headers: o.headers, credentials: o.credentials, auto: o.transport === "auto", firstFrameTimeout: o.firstFrameTimeout };
      t = mode === "poll" ? new PollTransport(link, opts) : new SSETransport(link, opts);
    }
    return t;
  }
  /**
   * _link returns what a transport (the one transport() returns) may ask
   * of this Live and tell it: a Link.
   * @returns {import("./link.js").Link}
   */
  _link(transport) {
    const live = this;
    return {
      channels: () => live._channels.values(),
      channel: (name) => live._channels.get(name),
      channelError(ch, err) {
        for (const sub of [...ch.subs]) live._emitError(err, sub);
      },
      status(status) {
        live._setStatus(status, status === "connected" ? 0 : live._conn.reconnectAttempt);
      },
      connected: () => live._conn.status === "connected",
      closed: () => live._closed,
      mayOpen: () => !live._closed && live._final === null && !live._offline && live._timer === null,
      current: () => live._t === transport(),
      opened() {
        live._everOpened = true;
        live._publishes.sendUnsent();
      },
      framed() {
        live._everStreamed = true;
      },
      everFramed: () => live._everStreamed,
      willFallBack: () => live._willFallBack(),
      message: (text) => handleText(text, live._receiver),
      frame: (m) => handleFrame(m, live._receiver),
      error: (err) => live._emitError(err),
      lost: (after) => live._lost(after),
      ended: (code, reason, retry) => live._ended(code, reason, retry),
      refused: (err) => live._refused(err),
      whyRefused: () => live._whyRefused(),
      moveTo: (mode) => live._moveTo(mode),
      published: (ref, p, cursor) => live._publishes.published(ref, p, cursor),
      publishFailed: (ref, p, err) => live._publishes.failed(ref, p, err),
      sentLost: (err) => live._publishes.sentLost(err),
      fetch: () => live._fetch(),
      sseURL: () => live._sseURL()
    };
  }
  /** _willFallBack reports whether a WebSocket failing now makes the client use SSE. */
  _willFallBack() {
    return this._o.transport === "auto" && !this._everOpened;
  }
  /**
   * _moveTo makes mode the transport, at once: publishes not yet sent go
   * by the new one, and every channel goes on from its cursor. Below
   * WebSocket, a probe of the transports above is scheduled.
   */
  _moveTo(mode) {
    if (this._closed || this._final !== null) return;
    this._t.close("moving to another transport");
    clearTimeout(this._timer);
    this._timer = null;
    this._mode = mode;
    this._t = this._newTransport(mode);
    this._everStreamed = false;
    this._publishes.sendUnsent();
    this._setStatus("connecting", this._conn.reconnectAttempt);
    this._prober.schedule(Math.min(3e4, this._o.probeInterval));
    this._connect();
  }
  /**
   * _lost schedules the next attempt after a failed or lost connection:
   * after the backoff, or after about after ms when the server said when
   * to come back (Retry-After, a retry line).
   */
  _lost(after) {
    if (this._closed || this._final !== null) return;
    const n = this._conn.reconnectAttempt + 1;
    if (this._offline) {
      this._setStatus("offline", n);
      return;
    }
    this._setStatus("disconnected", n);
    if (this._timer !== null) return;
    const ceiling = Math.min(this._o.maxBackoff, this._o.minBackoff * 2 ** Math.min(n - 1, 30));
    this._wait(after >= 0 ? jitter(after, this._o.random) : Math.floor(this._o.random() * ceiling));
  }
  /** _wait sets the reconnect timer: the next attempt comes after delay ms. */
  _wait(delay) {
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }
  _reconnectNow() {
    clearTimeout(this._timer);
    this._timer = null;
    this._connect();
  }
  _fetch() {
    return this._o.fetch ?? defaultFetch();
  }
  /** _sseURL returns sseURL resolved against the page, without a trailing slash. */
  _sseURL() {
    if (this._sseBase === null) {
      const base = typeof location !== "undefined" ? location.href : void 0;
      this._sseBase = new URL(this._o.sseURL, base).href.replace(/\/+$/, "");
    }
    return this._sseBase;
  }
  /**
   * _newReceiver returns what frames act on besides a channel's own state
   * and subscribers: a Receiver.
   * @returns {import("./frames.js").Receiver}
   */
  _newReceiver() {
    return {
      channel: (name) => this._channels.get(name),
      named: (id) => {
        this._connectionID = id;
      },
      delayed: (delayed) => {
        if (delayed === this._delayed) return false;
        this._delayed = delayed;
        this._setStatus(this._conn.status, this._conn.reconnectAttempt);
        return true;
      },
      ended: (code, reason, retry) => this._ended(code, reason, retry),
      refresh: () => this._refresh(),
      acknowledged: (ref, cursor) => this._publishes.acknowledged(ref, cursor),
      refused: (ref, code, detail) => this._publishes.refused(ref, code, detail),
      refuses: (ch) => this._t.refuses(ch),
      error: (err, sub) => this._emitError(err, sub)
    };
  }
};
function jitter(after, random) {
  const ms = Math.min(after, 6e5);
  return ms + Math.floor(random() * ms / 2);
}

// src/follow.js
var maxHeld = 1e4;
var Retrier = class {
  constructor(task, minDelay, maxDelay, random) {
    this._task = task;
    this._min = minDelay;
    this._max = maxDelay;
    this._random = random;
    this._running = false;
    this._again = false;
    this._timer = null;
    this._failures = 0;
    this._stopped = false;
  }
  run() {
    if (this._stopped) return;
    if (this._running) {
      this._again = true;
      return;
    }
    clearTimeout(this._timer);
    this._timer = null;
    this._running = true;
    this._again = false;
    Promise.resolve().then(() => this._task()).then(
      () => {
        this._failures = 0;
        this._running = false;
        if (this._again) this.run();
      },
      () => {
        this._running = false;
        if (this._stopped) return;
        this._failures++;
        const ceiling = Math.min(this._max, this._min * 2 ** Math.min(this._failures - 1, 30));
        this._timer = setTimeout(() => this.run(), Math.floor(this._random() * ceiling));
      }
    );
  }
  get running() {
    return this._running || this._timer !== null;
  }
  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
  }
};
var Follower = class {
  constructor(o, name) {
    if (typeof o.channel !== "string" || !o.channel) throw new TypeError(`live: ${name}: options.channel is required`);
    if (o.url === void 0 && o.load === void 0) throw new TypeError(`live: ${name}: options.url or options.load is required`);
    if (o.load !== void 0 && typeof o.load !== "function") throw new TypeError(`live: ${name}: options.load must be a function`);
    this._o = o;
    this._fetch = o.fetch ?? (o.url === void 0 ? null : defaultFetch());
    this._loaded = false;
    this._waiters = [];
    this._buffer = null;
    this._listeners = /* @__PURE__ */ new Set();
    this._abort = new AbortController();
    this._closed = false;
    this._pending = [];
    let ready;
    this.ready = new Promise((resolve) => ready = resolve);
    this._ready = ready;
    if (o.onChange) this._listeners.add(o.onChange);
  }
  _follow(live) {
    this._live = live;
    this._loader = new Retrier(() => this._load(), 500, 3e4, Math.random);
    this._unsubscribe = live.subscribe(this._o.channel, (data, meta) => this._onFrame(data, meta), {
      onSubscribed: () => {
        if (!this._loaded && !this._loader.running) this._loader.run();
        this._outbox?.connected();
      },
      onReset: () => this._refetch(),
      onError: (err) => this._error(err)
    });
  }
  /** _hold keeps a frame for after the fetch; too many, and the fetch runs again instead. */
  _hold(frame) {
    this._buffer ??= [];
    if (this._buffer.length >= maxHeld) {
      this._buffer = [];
      this._loader.run();
      return;
    }
    this._buffer.push(frame);
  }
  /** onChange calls listener after every change; it returns a function that stops the calls. */
  onChange(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }
  /** Whether a value has been loaded. */
  get loaded() {
    return this._loaded;
  }
  /**
   * refetch loads afresh; a list keeps its pending mutations applied over
   * the new items. It resolves once a load that began after the call has
   * succeeded (failed loads are retried), or the follower is closed.
   * @returns {Promise<void>}
   */
  refetch() {
    if (this._closed) return Promise.resolve();
    const done = new Promise((resolve) => this._waiters.push(resolve));
    this._refetch();
    return done;
  }
  _refetch() {
    if (this._closed) return;
    this._buffer ??= [];
    this._loader.run();
  }
  /** How many writes the server has not settled yet: in flight, or waiting for the network. */
  get pending() {
    return this._pending.length;
  }
  // Writes go through the subclass's outbox (this._outbox) and show at
  // once; _changed shows a change of what is pending (a list renders, a
  // state emits). The outbox calls _rollback, _settle and _restored.
  /** _write shows m and sends it. */
  _write(m) {
    this._pending.push(m);
    this._changed();
    return this._outbox.submit(m);
  }
  _drop(m) {
    const i = this._pending.indexOf(m);
    if (i >= 0) this._pending.splice(i, 1);
  }
  /** _rollback undoes m, which the server refused, unless its broadcast showed it was made after all. */
  _rollback(m, e) {
    if (!m.settled) {
      m.settled = true;
      this._drop(m);
      this._changed();
    }
    if (e.code === "conflict" && !this._closed) this._refetch();
  }
  /** _restored shows m, a write an earlier page left unsettled. */
  _restored(m) {
    this._pending.push(m);
    this._changed();
  }
  /** close stops following the channel and abandons requests in flight. */
  close() {
    this._closed = true;
    this._outbox?.close();
    this._loader.stop();
    this._abort.abort();
    this._unsubscribe();
    for (const resolve of this._waiters.splice(0)) resolve();
  }
  /**
   * _get loads the value: options.load() if given, else GET options.url.
   * It returns what the load answered, after check(body) accepted it,
   * and the refetch() calls the load answers.
   */
  async _get(check2) {
    const waiting = this._waiters.splice(0);
    try {
      let body;
      if (this._o.load) {
        body = await this._o.load();
      } else {
        body = await request(this._fetch, this._o.url, {
          headers: { Accept: "application/json", ...this._o.headers },
          cache: "no-store",
          signal: this._abort.signal
        }, this._o.timeout, `fetching ${this._o.channel}`);
      }
      check2(body);
      return { body, waiting };
    } catch (e) {
      this._waiters.unshift(...waiting);
      if (!this._closed) this._error(e);
      throw e;
    }
  }
  _error(err) {
    if (this._o.onError) call(this._o.onError, err);
  }
};

// src/outbox.js
var mutationCounter = 0;
function retryable(e) {
  return e instanceof LiveError && (e.code === "network" || e.status === 502 || e.status === 503 || e.status === 504);
}
var Outbox = class {
  constructor(f, o, name) {
    this._f = f;
    this._o = o;
    this._queue = [];
    this._flushing = false;
    this._timer = null;
    this._delay = 1e3;
    this._seq = 0;
    this._unsettled = /* @__PURE__ */ new Set();
    let storage = null;
    try {
      if (o.persist !== false && typeof localStorage !== "undefined") storage = localStorage;
    } catch {
      storage = null;
    }
    this._storage = storage;
    this._key = typeof o.persist === "string" ? o.persist : `live:outbox:${name}`;
    this._onOnline = () => {
      this._delay = 1e3;
      this._flushSoon(0);
    };
    if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
  }
  /** submit sends m, or queues it behind writes waiting; it resolves with the server's answer. */
  submit(m) {
    this._track(m);
    if (this._queue.length > 0 || offline()) {
      this._queue.push(m);
      this.save();
      this._flushSoon(0);
    } else {
      this.save();
      this._send(m).then((r) => {
        if (r === "retry") this._hold(m);
      });
    }
    return m.done;
  }
  /** _track numbers m, gives it the promise its writer awaits, and keeps it until it settles. */
  _track(m) {
    m.seq = ++this._seq;
    m.settled = false;
    m.done = new Promise((resolve, reject) => {
      m.resolve = resolve;
      m.reject = reject;
    });
    m.done.catch(() => {
    });
    this._unsettled.add(m);
  }
  /** waiting reports whether m waits for the network, not sent yet. */
  waiting(m) {
    return this._queue.includes(m) && !m.inflight;
  }
  /** cancel drops m, not sent yet, rejecting its promise with err. */
  cancel(m, err) {
    this.forget(m);
    this._f._drop(m);
    m.settled = true;
    m.reject(err);
  }
  /** forget drops m from the outbox: settled by a broadcast, or cancelled. */
  forget(m) {
    const i = this._queue.indexOf(m);
    if (i >= 0) this._queue.splice(i, 1);
    this._unsettled.delete(m);
    this.save();
  }
  /** _hold keeps m, which failed on the way, to send again in order. */
  _hold(m) {
    if (this._f._closed || m.settled) return;
    if (!this._queue.includes(m)) {
      this._queue.push(m);
      this._queue.sort((a, b) => a.seq - b.seq);
    }
    this.save();
    this._flushSoon(this._delay);
    this._delay = Math.min(this._delay * 2, 3e4);
  }
  /** _send makes m's request once: "ok", "failed" (rolled back) or "retry". */
  async _send(m) {
    const f = this._f;
    const headers = { Accept: "application/json", [MUTATION_ID_HEADER]: m.mid, ...this._o.headers };
    const conn = f._live?.connectionID;
    if (typeof conn === "string") headers[CONNECTION_HEADER] = conn;
    if (m.body !== void 0) headers["Content-Type"] = "application/json";
    if (m.ifMatch !== void 0) headers["If-Match"] = m.ifMatch;
    m.inflight = true;
    let result;
    try {
      result = await request(f._fetch, m.url, {
        method: m.method,
        headers,
        body: m.body === void 0 ? void 0 : JSON.stringify(m.body),
        signal: f._abort.signal
      }, m.timeout ?? this._o.timeout, `${m.method} ${m.url}`);
    } catch (e) {
      m.inflight = false;
      if (m.settled) return "ok";
      if (retryable(e) && this._o.offline !== false && !f._closed) return "retry";
      this.forget(m);
      f._rollback(m, e);
      if (m.restored) f._error(e);
      m.reject(e);
      return "failed";
    }
    m.inflight = false;
    this.forget(m);
    f._settle(m, result);
    m.resolve(result);
    return "ok";
  }
  _flushSoon(delay) {
    if (this._f._closed || this._queue.length === 0 || offline()) return;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._flush();
    }, delay);
  }
  /** _flush sends the waiting writes in order, one at a time, until one cannot go. */
  async _flush() {
    if (this._flushing) return;
    this._flushing = true;
    try {
      while (this._queue.length > 0 && !this._f._closed) {
        const m = this._queue[0];
        if (m.settled) {
          this.forget(m);
          continue;
        }
        if (await this._send(m) === "retry") {
          this._hold(m);
          return;
        }
      }
      this._delay = 1e3;
    } finally {
      this._flushing = false;
    }
  }
  /** connected is called when the live connection is back: time to send. */
  connected() {
    this._delay = 1e3;
    this._flushSoon(0);
  }
  /** save writes every write not settled to storage. */
  save() {
    if (!this._storage) return;
    const all = [...this._unsettled].filter((m) => !m.settled).sort((a, b) => a.seq - b.seq);
    try {
      if (all.length === 0) this._storage.removeItem(this._key);
      else this._storage.setItem(this._key, JSON.stringify(all.map((m) => ({ mid: m.mid, type: m.type, id: m.id, item: m.item, method: m.method, url: m.url, body: m.body, ifMatch: m.ifMatch }))));
    } catch {
    }
  }
  /** restore shows the writes a previous page left unsettled as pending, and sends them again. */
  restore() {
    if (!this._storage) return;
    let saved;
    try {
      saved = JSON.parse(this._storage.getItem(this._key) ?? "[]");
    } catch {
      saved = [];
    }
    if (!Array.isArray(saved)) return;
    for (const r of saved) {
      if (!isObject(r) || typeof r.mid !== "string" || typeof r.method !== "string" || typeof r.url !== "string") continue;
      const m = { ...r, restored: true };
      this._track(m);
      this._queue.push(m);
      this._f._restored(m);
    }
    this._flushSoon(0);
  }
  close() {
    clearTimeout(this._timer);
    this._timer = null;
    if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
  }
};
function newMutationID() {
  if (typeof crypto !== "undefined" && typeof crypto.randomUUID === "function") return "m-" + crypto.randomUUID();
  return `m-${Date.now().toString(36)}-${(++mutationCounter).toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// src/list.js
function liveList(live, options) {
  return new LiveList(live, options);
}
var LiveList = class extends Follower {
  constructor(live, options) {
    const o = { idField: "id", headers: {}, timeout: 1e4, ...given(options) };
    if (o.url === void 0) throw new TypeError("live: liveList: options.url is required");
    super(o, "liveList");
    o.itemURL ??= (id) => `${String(o.url).replace(/\/$/, "")}/${encodeURIComponent(String(id))}`;
    this._confirmed = [];
    this._fresh = /* @__PURE__ */ new Set();
    this._placed = /* @__PURE__ */ new Set();
    this._view = [];
    this._outbox = new Outbox(this, o, `list:${o.channel}:${o.url}`);
    this._follow(live);
    this._outbox.restore();
  }
  /** The list as shown: the server's, with pending mutations applied. */
  get items() {
    return this._view;
  }
  /**
   * add shows item at once, with a temporary id and `_optimistic: true`,
   * POSTs it, and resolves with the server's item.
   */
  add(item, opts = {}) {
    if (!isObject(item)) return Promise.reject(new TypeError("live: add: item must be an object"));
    const mid = newMutationID();
    const optimistic = { ...item, [this._o.idField]: mid, _optimistic: true };
    return this._mutate({ mid, type: "add", item: optimistic }, "POST", this._o.url, item, opts);
  }
  /**
   * update lays changes over the item with id at once (marked
   * `_optimistic: true` until settled), PATCHes them, and resolves with
   * the server's item. opts.ifMatch sends If-Match.
   */
  update(id, changes, opts = {}) {
    if (!isObject(changes)) return Promise.reject(new TypeError("live: update: changes must be an object"));
    const add = this._pending.find((m) => m.type === "add" && m.item[this._o.idField] === id);
    if (add && this._outbox.waiting(add)) {
      add.item = { ...add.item, ...changes, [this._o.idField]: id };
      add.body = { ...add.body, ...changes };
      this._outbox.save();
      this._render();
      return add.done;
    }
    if (add) {
      return Promise.reject(new LiveError("pending", "live: update: the item has not been created on the server yet"));
    }
    const mid = newMutationID();
    return this._mutate({ mid, type: "update", id, item: changes }, "PATCH", this._o.itemURL(id), changes, opts);
  }
  /** remove hides the item with id at once, DELETEs it, and resolves when the server has. */
  remove(id, opts = {}) {
    const add = this._pending.find((m) => m.type === "add" && m.item[this._o.idField] === id);
    if (add && this._outbox.waiting(add)) {
      this._outbox.cancel(add, new LiveError("cancelled", "live: add: the item was removed before it was sent"));
      this._render();
      return Promise.resolve(void 0);
    }
    if (add) {
      return Promise.reject(new LiveError("pending", "live: remove: the item has not been created on the server yet"));
    }
    const mid = newMutationID();
    return this._mutate({ mid, type: "remove", id }, "DELETE", this._o.itemURL(id), void 0, opts);
  }
  _mutate(m, method, url, body, opts) {
    if (this._closed) return Promise.reject(new LiveError("closed", "live: the list is closed"));
    Object.assign(m, { method, url, body, ifMatch: opts.ifMatch === void 0 ? void 0 : String(opts.ifMatch), timeout: opts.timeout });
    return this._write(m);
  }
  _changed() {
    this._render();
  }
  _settle(m, result) {
    if (!m.settled) {
      m.settled = true;
      this._drop(m);
      this._confirm(m, result);
      this._render();
    }
  }
  /** _confirm applies what the server answered a mutation to the confirmed list. */
  _confirm(m, result) {
    const idf = this._o.idField;
    let op;
    switch (m.type) {
      case "add":
        if (isObject(result) && hasOwn(result, idf)) op = { type: "add", item: result };
        break;
      // without an id, the broadcast brings the item
      case "update":
        op = { type: "update", item: isObject(result) && hasOwn(result, idf) ? result : { ...m.item, [idf]: m.id } };
        break;
      case "remove":
        op = { type: "remove", id: m.id };
        break;
    }
    if (!op) return;
    const had = op.type === "add" && this._confirmed.some((it) => isObject(it) && it[idf] === op.item[idf]);
    try {
      this._confirmed = listMerge(idf, this._confirmed, op);
    } catch (e) {
      this._error(e);
      return;
    }
    if (op.type === "add" && !had) this._fresh.add(op.item[idf]);
    if (op.type === "remove") this._forgetPlace(op.id);
  }
  async _load() {
    if (this._buffer === null) this._buffer = [];
    const { body: items, waiting } = await this._get((items2) => {
      if (!Array.isArray(items2)) throw new LiveError("bad_response", `live: fetching ${this._o.channel}: the response is not an array`);
    });
    if (this._closed) return;
    const buffered = this._buffer;
    this._buffer = null;
    this._confirmed = items;
    this._fresh.clear();
    this._placed.clear();
    this._loaded = true;
    for (const ev of buffered) this._applyEvent(ev);
    this._render();
    this._ready();
    for (const resolve of waiting) resolve();
  }
  _onFrame(ev) {
    if (this._buffer !== null || !this._loaded) {
      this._hold(ev);
      return;
    }
    this._applyEvent(ev);
    this._render();
  }
  _applyEvent(ev) {
    if (isObject(ev) && ev.type === "refetch") {
      this._refetch();
      return;
    }
    try {
      this._confirmed = listMerge(this._o.idField, this._confirmed, ev);
    } catch (e) {
      this._error(e);
      this._refetch();
      return;
    }
    if (ev.type === "add") this._place(ev.item[this._o.idField]);
    else if (ev.type === "remove") this._forgetPlace(ev.id);
    const mid = isObject(ev) ? ev.mutationId : void 0;
    if (typeof mid === "string") {
      const m = this._pending.find((p) => p.mid === mid);
      if (m && !m.settled) {
        m.settled = true;
        this._drop(m);
        this._outbox.forget(m);
      }
    }
  }
  /**
   * _place puts the item with id, which the stream has just added, where
   * the stream says: after the items the server answered our adds with
   * whose adds the stream has yet to bring (their places in the stream are
   * later), before every other. The stream brings each channel's
   * publications once and in the order of their positions, so placing
   * each add as it comes keeps the list in that order, whatever order the
   * items reached the page in: a response before its broadcast, a replay
   * after a gap bringing older items after newer ones were shown, a fetch
   * listing items whose adds the stream brings after it. An item the
   * stream has placed already keeps its place: an add of an id present is
   * no change (mergeList).
   */
  _place(id) {
    if (this._placed.has(id)) return;
    this._placed.add(id);
    this._fresh.delete(id);
    const idf = this._o.idField;
    const items = this._confirmed;
    const i = items.findIndex((it2) => isObject(it2) && it2[idf] === id);
    const at = this._fresh.size;
    if (i < 0 || i === at) return;
    const next = items.slice();
    const [it] = next.splice(i, 1);
    next.splice(at, 0, it);
    this._confirmed = next;
  }
  /** _forgetPlace forgets where the removed item with id stood. */
  _forgetPlace(id) {
    this._fresh.delete(id);
    this._placed.delete(id);
  }
  /** _render recomputes the list as shown and tells the listeners. */
  _render() {
    const idf = this._o.idField;
    let view = this._confirmed;
    for (const m of this._pending) {
      switch (m.type) {
        case "add":
          view = [m.item, ...view];
          break;
        case "update":
          view = view.map((it) => isObject(it) && it[idf] === m.id ? { ...it, ...m.item, [idf]: m.id, _optimistic: true } : it);
          break;
        case "remove":
          view = view.filter((it) => !(isObject(it) && it[idf] === m.id));
          break;
      }
    }
    if (view === this._view) return;
    this._view = view;
    for (const l of [...this._listeners]) call(l, view);
  }
};

// src/state.js
function liveState(live, options) {
  return new LiveState(live, options);
}
var LiveState = class extends Follower {
  constructor(live, options) {
    const o = { headers: {}, timeout: 1e4, ...given(options) };
    super(o, "liveState");
    this._value = void 0;
    this._version = 0;
    this._outbox = new Outbox(this, o, `state:${o.channel}:${o.url}`);
    this._follow(live);
    this._outbox.restore();
  }
  /**
   * The current value, with the patches not yet settled laid over it;
   * undefined until the first fetch.
   */
  get value() {
    let v = this._value;
    if (v === void 0) return v;
    for (const m of this._pending) v = mergePatch(v, m.body);
    return v;
  }
  /**
   * patch shows changes (a JSON merge patch) at once and PATCHes them to
   * options.url, as Hub.State serves it; it resolves with the server's
   * {data, version}. Like liveList's writes, a patch that cannot reach the
   * server waits and goes again, in order, once back, also after a
   * reload; a refusal (opts.ifMatch sends If-Match: a 412 when the value
   * moved on) rolls it back.
   */
  patch(changes, opts = {}) {
    if (!isObject(changes)) return Promise.reject(new TypeError("live: patch: changes must be an object"));
    if (this._closed) return Promise.reject(new LiveError("closed", "live: the state is closed"));
    if (this._o.url === void 0) return Promise.reject(new TypeError("live: patch: options.url is required"));
    return this._write({ mid: newMutationID(), type: "patch", method: "PATCH", url: String(this._o.url), body: changes, ifMatch: opts.ifMatch === void 0 ? void 0 : String(opts.ifMatch), timeout: opts.timeout });
  }
  _changed() {
    this._emit();
  }
  _settle(m, result) {
    if (m.settled) return;
    m.settled = true;
    this._drop(m);
    if (isObject(result) && hasOwn(result, "data") && Number.isSafeInteger(result.version) && result.version > this._version && this._loaded) {
      this._value = result.data;
      this._version = result.version;
    }
    this._emit();
  }
  /** The version of the value: the position of the publication that made it. */
  get version() {
    return this._version;
  }
  async _load() {
    if (this._buffer === null) this._buffer = [];
    const { body, waiting } = await this._get((body2) => {
      if (!isObject(body2) || !hasOwn(body2, "data") || !Number.isSafeInteger(body2.version)) {
        throw new LiveError("bad_response", `live: fetching ${this._o.channel}: the response is not {"data":\u2026,"version":N}`);
      }
    });
    if (this._closed) return;
    const buffered = this._buffer;
    this._buffer = null;
    this._value = body.data;
    this._version = body.version;
    this._loaded = true;
    for (const [data, meta] of buffered) {
      if (!this._apply(data, meta)) break;
    }
    this._emit();
    this._ready();
    for (const resolve of waiting) resolve();
  }
  _onFrame(data, meta) {
    if (this._buffer !== null || !this._loaded) {
      this._hold([data, meta]);
      return;
    }
    if (this._apply(data, meta)) this._emit();
  }
  /** _apply folds one frame into the value; it returns false when a refetch is needed instead. */
  _apply(data, meta) {
    if (isStateReset(data)) {
      const pos = parseCursor(meta.cursor);
      if (hasOwn(data, "data") && pos) {
        if (pos.seq < this._version) return true;
        this._value = data.data;
        this._version = pos.seq;
        return true;
      }
      this._refetch();
      return false;
    }
    if (isObject(data) && Number.isSafeInteger(data.version) && data.version <= this._version) return true;
    try {
      this._value = deltaApply(this._value, this._version, data);
      this._version = data.version;
      return true;
    } catch (e) {
      if (!(e instanceof MergeError && e.kind === "gap")) this._error(e);
      this._refetch();
      return false;
    }
  }
  _emit() {
    for (const l of [...this._listeners]) call(l, this.value, this._version);
  }
};
export {
  CONNECTION_HEADER,
  LiveError,
  MAX_DEPTH,
  MUTATION_ID_HEADER,
  MergeError,
  applyDelta,
  createLive,
  diff,
  liveList,
  liveState,
  mergeList,
  mergePatch,
  mergeReplace,
  mergeShallow,
  parseCursor,
  parseJSON
};
