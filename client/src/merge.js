// Merges and deltas: the JSON values the hub sends, the merge strategies
// of the Go package (checked against the same vectors, testdata/merge),
// State deltas and cursors.

import { MergeError } from "./errors.js";

/** Arrays and objects nest at most this deep in merged values, as in Go. */
export const MAX_DEPTH = 512;

// ---------------------------------------------------------------------------
// JSON values

export const hasOwn = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

/** @returns {v is Record<string, any>} */
export function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Sets a member, as JSON.parse would, even one named "__proto__". */
function setOwn(o, k, v) {
  if (k === "__proto__") {
    Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
  } else {
    o[k] = v;
  }
}

/** Returns a member only if the object has it itself. */
function getOwn(o, k) {
  return hasOwn(o, k) ? o[k] : undefined;
}

/** Copies an object's members into a new plain object, in order. */
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

/**
 * check throws unless v is a JSON value (null, boolean, finite number,
 * string, array or plain object, all the way down) nesting at most
 * MAX_DEPTH levels, and returns how deep it nests. It does not recurse.
 * what names v in the error ("update", "current value").
 */
export function check(v, op, what) {
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
      throw new MergeError("invalid", `live: ${op}: ${what} is not valid JSON: it holds ${x === undefined ? "undefined" : "a " + typeof x}`);
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

/** checkPresent is check for a value that must be given. */
function checkPresent(v, op, what) {
  if (v === undefined) throw new MergeError("invalid", `live: ${op}: ${what} is not valid JSON: absent`);
  return check(v, op, what);
}

/** checkOptional is check for a value that may be absent (undefined). */
function checkOptional(v, op, what) {
  return v === undefined ? 0 : check(v, op, what);
}

/** depthOfText returns how deeply arrays and objects nest in JSON text. */
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

/**
 * parseJSON parses JSON text as the merges expect their inputs: it throws a
 * MergeError of kind "invalid" for text that is not one JSON value, and of
 * kind "depth" for text nesting deeper than MAX_DEPTH.
 * @param {string} text
 * @returns {any}
 */
export function parseJSON(text) {
  if (typeof text !== "string") throw new MergeError("invalid", `live: parse: ${typeName(text)} is not JSON text`);
  if (depthOfText(text) > MAX_DEPTH) throw new MergeError("depth", `live: parse: JSON nests deeper than ${MAX_DEPTH} levels`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MergeError("invalid", `live: parse: is not valid JSON: ${e.message}`);
  }
}

/** equal reports whether a and b are the same JSON value. */
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

// ---------------------------------------------------------------------------
// Merge strategies: the Go package's, with the same vectors. None modifies
// its arguments; results share unchanged parts with them, so treat merged
// values as immutable. An absent current value is undefined.

/**
 * mergeReplace makes each update the new value, for channels whose
 * publications are whole snapshots.
 * @param {any} current
 * @param {any} update
 */
export function mergeReplace(current, update) {
  checkOptional(current, "replace merge", "current value");
  checkPresent(update, "replace merge", "update");
  return update;
}

/**
 * mergeShallow lays the update's members over the current value's,
 * {...current, ...update}: useLiveData's default in the React LiveProvider pattern. Both must be objects; a null
 * or absent current value counts as {}.
 * @param {any} current
 * @param {any} update
 */
export function mergeShallow(current, update) {
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

/** rootObject returns a current value that must be an object, null or absent. */
function rootObject(current, op) {
  if (current === undefined || current === null) return {};
  if (!isObject(current)) throw new MergeError("type", `live: ${op}: current value must be an object, not ${typeName(current)}`);
  return current;
}

/**
 * mergePatch applies the update as an RFC 7386 JSON Merge Patch: objects
 * merge recursively, a null member deletes, anything else replaces.
 * @param {any} current
 * @param {any} update
 */
export function mergePatch(current, update) {
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

/**
 * mergeList returns the useLiveList merge of the React LiveProvider pattern for an array of items
 * identified by their idField member ("id" by default): {"type":"add",
 * "item"} prepends unless the id is present, {"type":"update","item"} lays
 * the item over every item with its id, {"type":"remove","id"} drops them.
 * Ids compare with ===. An unknown type is an error, not ignored.
 * @param {string} [idField]
 * @returns {(current: any, update: any) => any[]}
 */
export function mergeList(idField = "id") {
  if (!idField) idField = "id";
  return (current, update) => {
    checkOptional(current, "list merge", "current value");
    checkPresent(update, "list merge", "update");
    return listMerge(idField, current, update);
  };
}

export function listMerge(idField, current, update) {
  const op = "list merge";
  let items;
  if (current === undefined || current === null) items = [];
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
      return items.map((it) => (matches(it) ? shallow(it, item) : it));
    default:
      return items.filter((it) => !matches(it));
  }
}

/**
 * applyDelta applies a useDeltaSync delta (of the React LiveProvider pattern) {version, changes} to
 * current, the value at version, and returns the value at delta.version.
 * It throws a MergeError of kind "gap" unless delta.version is version+1:
 * deltas were missed, so refetch. current must be an object (null or
 * absent counts as {}); "add" and "update" set the member or element at a
 * dotted path, "remove" deletes it (an array element becomes null). An
 * index equal to the array's length appends. If any change fails, nothing
 * is applied.
 * @param {any} current
 * @param {number} version
 * @param {{version: number, changes?: Array<{op: string, path: string, value?: any}>}} delta
 */
export function applyDelta(current, version, delta) {
  checkOptional(current, "delta", "current value");
  return deltaApply(current, version, delta);
}

export function deltaApply(current, version, delta) {
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
  const owned = new WeakSet([root]); // containers copied for this delta, safe to modify
  let bound = 0; // how deep the result may nest, at most
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

/** applyChange applies one change and returns how deep it may make the value. */
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
      if (!hasOwn(c, "value") || c.value === undefined) throw new MergeError("type", `"${c.op}" must have a value`);
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

/** arrayIndex parses a canonical array index, or returns -1. */
function arrayIndex(s) {
  if (!/^(0|[1-9][0-9]{0,8})$/.test(s)) return -1;
  return Number(s);
}

/**
 * diff returns the changes that turn old into new, as Go's Diff does, so
 * that applyDelta(old, v, {version: v+1, changes}) equals new. ok is false
 * when a delta cannot express the change (either value is not an object,
 * or a top-level key that must be named is empty, contains a dot or is
 * "__proto__"); then send the whole value. Numbers compare as JavaScript
 * reads them, so 1 and 1.0 are the same here (Go keeps their spelling).
 * @param {any} old
 * @param {any} next
 * @returns {{ok: true, changes: Array<{op: string, path: string, value?: any}>} | {ok: false, changes: null}}
 */
export function diff(old, next) {
  checkOptional(old, "diff", "old value");
  checkPresent(next, "diff", "new value");
  const a = old === undefined || old === null ? {} : old;
  if (!isObject(a) || !isObject(next)) return { ok: false, changes: null };
  const changes = diffObject("", a, next);
  if (changes === null) return { ok: false, changes: null };
  return { ok: true, changes };
}

const addressable = (k) => k !== "" && !k.includes(".") && k !== "__proto__";
const joinPath = (prefix, part) => (prefix === "" ? part : prefix + "." + part);

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

/** changeSize approximates the encoded length of a change, as Go's does. */
function changeSize(c, n) {
  let size = '{"op":"","path":""},'.length + c.op.length + utf8Length(c.path);
  if (n > 0) size += ',"value":'.length + n;
  return size;
}

const encoder = new TextEncoder();
function utf8Length(s) {
  return encoder.encode(s).length;
}

function encodedLength(v) {
  return utf8Length(JSON.stringify(v));
}

// ---------------------------------------------------------------------------
// Cursors

/**
 * parseCursor splits a cursor "<seq>.<epoch>" into its parts, or returns
 * null for anything else.
 * @param {unknown} cursor
 * @returns {{seq: number, epoch: string} | null}
 */
export function parseCursor(cursor) {
  if (typeof cursor !== "string") return null;
  const m = /^(0|[1-9][0-9]*)\.([A-Za-z0-9_-]{1,64})$/.exec(cursor);
  if (!m) return null;
  const seq = Number(m[1]);
  return Number.isSafeInteger(seq) ? { seq, epoch: m[2] } : null;
}

/** advances reports whether next is past prev: later in the same epoch, or in another epoch. */
export function advances(prev, next) {
  const p = parseCursor(prev);
  const n = parseCursor(next);
  if (!p || !n) return true;
  return p.epoch !== n.epoch || n.seq > p.seq;
}

/** isStateReset reports whether data is a State channel's in-band reset. */
export function isStateReset(data) {
  return isObject(data) && data.reset === true && data.version === 0;
}
