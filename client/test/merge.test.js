// The merge strategies against the shared vectors in testdata/merge, the
// same files the Go tests read: every case of every file runs here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import {
  MergeError, MAX_DEPTH, parseJSON, mergeReplace, mergeShallow, mergePatch, mergeList, applyDelta, diff, parseCursor,
} from "../live.js";

const dir = fileURLToPath(new URL("../../testdata/merge/", import.meta.url));
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

function readVectors(file) {
  const cases = JSON.parse(readFileSync(join(dir, file), "utf8"));
  assert.ok(Array.isArray(cases) && cases.length > 0, `${file}: no cases`);
  return cases;
}

// input returns a case's input as the client would hold it: parsed from
// its exact text when the case gives text, undefined when absent.
function input(v, name) {
  if (has(v, name + "Text")) return parseJSON(v[name + "Text"]);
  return has(v, name) ? v[name] : undefined;
}

function expectError(kind, fn) {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof MergeError, `want a MergeError of kind ${kind}, got ${err}`);
    assert.equal(err.kind, kind, `error ${JSON.stringify(err.message)} is of kind ${err.kind}, want ${kind}`);
    assert.match(err.message, /^live: /);
    return true;
  });
}

// run checks one case: the result, or the error kind, and that the
// inputs were left as they were.
function run(v, apply) {
  if (v.error) {
    expectError(v.error, () => apply());
    return;
  }
  assert.deepStrictEqual(apply(), v.want);
}

function untouched(value, fn) {
  const before = JSON.stringify(value);
  const out = fn();
  assert.equal(JSON.stringify(value), before, "the merge modified its input");
  return out;
}

const strategies = {
  "replace.json": () => mergeReplace,
  "shallow.json": () => mergeShallow,
  "patch.json": () => mergePatch,
  "list.json": (v) => mergeList(v.idField),
};

test("every vector file has a runner", () => {
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  assert.deepStrictEqual(files, [...Object.keys(strategies), "delta.json", "diff.json"].sort());
});

for (const [file, strategy] of Object.entries(strategies)) {
  test(file, async (t) => {
    for (const v of readVectors(file)) {
      await t.test(v.name, () =>
        run(v, () => {
          const current = input(v, "current");
          const update = input(v, "update");
          return untouched(current, () => untouched(update, () => strategy(v)(current, update)));
        }));
    }
  });
}

test("delta.json", async (t) => {
  for (const v of readVectors("delta.json")) {
    await t.test(v.name, () =>
      run(v, () => {
        const current = input(v, "current");
        return untouched(current, () => applyDelta(current, v.version, v.update));
      }));
  }
});

// equal reports whether two values are the same as JavaScript reads them.
const equal = (a, b) => JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

test("diff.json", async (t) => {
  for (const v of readVectors("diff.json")) {
    await t.test(v.name, () => {
      if (v.error) {
        expectError(v.error, () => diff(input(v, "old"), input(v, "new")));
        return;
      }
      const old = input(v, "old");
      const next = input(v, "new");
      const got = untouched(old, () => diff(old, next));
      assert.equal(got.ok, v.expressible, `diff ok = ${got.ok}, changes ${JSON.stringify(got.changes)}`);
      if (!got.ok) {
        assert.equal(got.changes, null);
        return;
      }
      if (v.changes) {
        // Go keeps a number's spelling (1 vs 1.0); JavaScript cannot see
        // it, so values equal here have no changes here.
        assert.deepStrictEqual(got.changes, equal(old, next) ? [] : v.changes);
        // The client applies what the Go server sends.
        assert.deepStrictEqual(applyDelta(old, 7, { version: 8, changes: v.changes }), next);
      }
      assert.deepStrictEqual(applyDelta(old, 7, { version: 8, changes: got.changes }), next);
      for (const c of got.changes) {
        if (c.op === "remove") assert.ok(!namesElement(old, c.path), `diff removes array element ${c.path}`);
      }
    });
  }
});

function namesElement(old, path) {
  let cur = old ?? {};
  const parts = path.split(".");
  for (const p of parts.slice(0, -1)) {
    if (cur === null || typeof cur !== "object") return false;
    cur = cur[p];
  }
  return Array.isArray(cur);
}

// Inputs no vector holds, as in Go's TestMergeLimits.
const nested = (n) => "[".repeat(n) + "]".repeat(n);
const nestedObject = (n) => '{"a":'.repeat(n - 1) + "{}" + "}".repeat(n - 1);
function deepArray(n) {
  let v = [];
  for (let i = 1; i < n; i++) v = [v];
  return v;
}
function deepObject(n) {
  let v = {};
  for (let i = 1; i < n; i++) v = { a: v };
  return v;
}

test("limits", async (t) => {
  const list = mergeList();
  const delta = (current, update) => applyDelta(current, 0, { version: 1, changes: [{ op: "add", path: "a", value: update }] });
  const cases = [
    ["replace at the limit", mergeReplace, undefined, () => parseJSON(nested(512)), ""],
    ["replace beyond the limit", mergeReplace, undefined, () => parseJSON(nested(513)), "depth"],
    ["replace text 100000 deep", mergeReplace, undefined, () => parseJSON(nested(100000)), "depth"],
    ["replace value 100000 deep", mergeReplace, undefined, () => deepArray(100000), "depth"],
    ["replace current 10000 deep", mergeReplace, deepArray(10000), () => null, "depth"],
    ["shallow current 513 deep", mergeShallow, deepObject(513), () => ({}), "depth"],
    ["shallow update 10000 deep", mergeShallow, undefined, () => deepObject(10000), "depth"],
    ["shallow at the limit", mergeShallow, parseJSON(nestedObject(512)), () => parseJSON(nestedObject(512)), ""],
    ["patch at the limit", mergePatch, parseJSON(nestedObject(512)), () => parseJSON(nestedObject(512)), ""],
    ["patch 10000 deep", mergePatch, {}, () => ({ a: deepArray(10000) }), "depth"],
    ["list 10000 deep", list, undefined, () => ({ type: "add", item: { id: 1, x: deepArray(10000) } }), "depth"],
    ["list item at the limit", list, undefined, () => ({ type: "add", item: { id: 1, x: deepArray(510) } }), ""],
    ["delta value 10000 deep", delta, undefined, () => deepArray(10000), "depth"],
    ["delta result beyond the limit", delta, undefined, () => deepArray(512), "depth"],
    ["delta result at the limit", delta, undefined, () => deepArray(511), ""],
    ["quoted brackets do not count", mergeReplace, undefined, () => parseJSON('"' + "[".repeat(10000) + '"'), ""],
    ["escaped quotes in strings", mergeReplace, undefined, () => parseJSON('["\\"[[", "\\\\", [[]]]'), ""],
    ["absent update", mergePatch, {}, () => undefined, "invalid"],
    ["not JSON: undefined member", mergeShallow, {}, () => ({ a: undefined }), "invalid"],
    ["not JSON: NaN", mergePatch, {}, () => ({ a: NaN }), "invalid"],
    ["not JSON: a Date", mergeReplace, undefined, () => new Date(0), "invalid"],
  ];
  for (const [name, merge, current, update, want] of cases) {
    await t.test(name, () => {
      if (want) expectError(want, () => merge(current, update()));
      else merge(current, update());
    });
  }
  assert.equal(MAX_DEPTH, 512);
});

test("__proto__ is an ordinary member", () => {
  const update = JSON.parse('{"__proto__": {"admin": true}, "a": 1}');
  for (const merge of [mergeShallow, mergePatch]) {
    const got = merge({}, update);
    assert.equal(Object.getPrototypeOf(got), Object.prototype);
    assert.equal(got.admin, undefined);
    assert.deepStrictEqual(Object.keys(got), ["__proto__", "a"]);
    assert.equal(JSON.stringify(got), '{"__proto__":{"admin":true},"a":1}');
  }
  const got = applyDelta({}, 0, { version: 1, changes: [{ op: "add", path: "__proto__", value: { admin: true } }] });
  assert.equal(got.admin, undefined);
  assert.equal(JSON.stringify(got), '{"__proto__":{"admin":true}}');
  assert.equal({}.admin, undefined);
});

test("results share nothing they change with their inputs", () => {
  const current = { a: { b: [1, { c: 2 }] }, d: { e: 1 } };
  const before = JSON.stringify(current);
  const got = applyDelta(current, 1, { version: 2, changes: [{ op: "update", path: "a.b.1.c", value: 3 }, { op: "add", path: "a.b.2", value: 4 }] });
  assert.equal(JSON.stringify(current), before);
  assert.deepStrictEqual(got, { a: { b: [1, { c: 3 }, 4] }, d: { e: 1 } });
  assert.equal(got.d, current.d, "unchanged members are shared");
  const items = [{ id: 1 }, { id: 2 }];
  assert.equal(mergeList()(items, { type: "add", item: { id: 1 } }), items, "a merge that changes nothing returns its input");
});

test("keeps member order, new members last", () => {
  assert.equal(JSON.stringify(mergeShallow({ z: 1, a: 2, m: 3 }, { b: 0, a: 9 })), '{"z":1,"a":9,"m":3,"b":0}');
  assert.equal(JSON.stringify(mergePatch({ z: 1, a: { y: 1, x: 2 }, m: 3 }, { a: { w: 0, y: null }, z: null })), '{"a":{"x":2,"w":0},"m":3}');
});

test("parseCursor", () => {
  assert.deepStrictEqual(parseCursor("12.abc-_Z"), { seq: 12, epoch: "abc-_Z" });
  assert.deepStrictEqual(parseCursor("0.e"), { seq: 0, epoch: "e" });
  for (const bad of ["", "12", ".e", "01.e", "-1.e", "1.", "1.a.b", "1.é", "1." + "x".repeat(65), "99999999999999999999.e", null, 3]) {
    assert.equal(parseCursor(bad), null, JSON.stringify(bad));
  }
});
