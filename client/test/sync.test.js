// liveState and liveList in headless Chromium against the Go test server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite } from "./harness.js";

const suite = browserSuite();
const open = () => suite.open();

const serverBoard = async () => (await suite.server.request("GET", "/api/state/board")).body;

test("liveState stays equal to the server's value through many PATCHes, a drop and resets", async () => {
  const page = await open();
  await page.evaluate(async () => {
    window.l = window.live.createLive({ url: "/ws" });
    window.errors = [];
    window.fetches = 0;
    const fetch = (url, init) => {
      window.fetches++;
      return globalThis.fetch(url, init);
    };
    window.s = window.live.liveState(window.l, {
      channel: "board",
      url: "/api/state/board",
      fetch,
      onError: (e) => window.errors.push(String(e)),
    });
    await window.s.ready;
  });
  const check = async (what) => {
    const want = await serverBoard();
    // Up to 20 s: after the pause the reconnection may wait out a few backoffs.
    await page.waitForFunction((v) => window.s.version === v, want.version, { timeout: 20000 }).catch(() => {});
    const got = await page.evaluate(() => ({ data: window.s.value, version: window.s.version }));
    assert.deepStrictEqual(got, want, what);
  };
  await check("after the first fetch");

  // 150 PATCHes, some concurrent, touching nested members, with a drop.
  const patch = (body) => suite.server.request("PATCH", "/api/state/board", body);
  for (let i = 0; i < 150; i++) {
    const card = `c${i % 17}`;
    const ops = [patch({ cards: { [card]: { title: `card ${i}`, votes: i, tags: i % 3 ? ["a", String(i)] : null } } })];
    if (i % 10 === 0) ops.push(patch({ counter: i, cards: { [`c${(i + 5) % 17}`]: null } }));
    if (i === 75) ops.push(suite.server.post("/test/drop"));
    await Promise.all(ops);
  }
  await check("after 150 PATCHes and a drop");
  const fetchesBefore = await page.evaluate(() => window.fetches);
  assert.equal(fetchesBefore, 1, "refetched: the deltas (and the resume after the drop) should have sufficed");

  // A change no delta expresses (a key with a dot) is published whole:
  // adopted without a fetch.
  await suite.server.request("PUT", "/api/state/board", { "a.b": 1, cards: {} });
  await check("after a value published whole");
  assert.equal(await page.evaluate(() => window.fetches), fetchesBefore, "refetched a value the stream carried");

  // Away longer than the history: an in-band reset without the value, so a refetch.
  await suite.server.post("/test/pause");
  await suite.server.post("/test/drop");
  await page.waitForFunction(() => window.l.connection.status !== "connected");
  for (let i = 0; i < 1100; i += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, k) => patch({ n: i + k }))); // beyond the history of 1024
  }
  await suite.server.post("/test/resume");
  await check("after a reset");
  assert.ok((await page.evaluate(() => window.fetches)) > fetchesBefore, "no refetch after the reset");
  assert.deepStrictEqual(await page.evaluate(() => window.errors), []);
});

// setupList makes window.list in the page, recording every version of its
// items in window.views. postTo, if set, replaces the URL of POSTs.
async function setupList(page, { postTo } = {}) {
  await page.evaluate(async (postTo) => {
    window.l = window.live.createLive({ url: "/ws" });
    window.views = [];
    window.errors = [];
    window.responded = {}; // title -> when its POST's response arrived
    window.settled = {}; // title -> when the server's item first showed
    const fetch = async (url, init = {}) => {
      if (init.method !== "POST") return globalThis.fetch(url, init);
      const res = await globalThis.fetch(postTo ?? url, init);
      window.responded[JSON.parse(init.body).title] = performance.now();
      return res;
    };
    window.list = window.live.liveList(window.l, {
      channel: "todos",
      url: "/api/todos",
      fetch,
      onChange: (items) => {
        window.views.push(items.map((t) => ({ ...t })));
        for (const t of items) if (!t._optimistic) window.settled[t.title] ??= performance.now();
      },
      onError: (e) => window.errors.push(String(e)),
    });
    await window.list.ready;
  }, postTo);
}

// addMany adds n todos in a row without waiting, checking that each shows
// at once, and resolves with the titles and what the adds resolved with.
function addMany(page, prefix, n) {
  return page.evaluate(async ({ prefix, n }) => {
    const titles = [];
    const promises = [];
    for (let i = 0; i < n; i++) {
      const title = `${prefix} ${i}`;
      titles.push(title);
      promises.push(window.list.add({ title, done: false }));
      const shown = window.list.items.find((t) => t.title === title);
      if (!shown || shown._optimistic !== true) throw new Error(`${title} is not shown at once`);
    }
    const results = await Promise.all(promises);
    return { titles, results };
  }, { prefix, n });
}

// settledBy reports, for each title, whether the server's item showed
// before the response to its POST arrived ("broadcast") or after ("response").
async function settledBy(page, titles) {
  const { responded, settled } = await page.evaluate(() => ({ responded: window.responded, settled: window.settled }));
  return titles.map((t) => (settled[t] < responded[t] ? "broadcast" : "response"));
}

// checkViews fails if any version of the list showed a title twice.
async function checkViews(page, titles) {
  const views = await page.evaluate(() => window.views);
  for (const [k, view] of views.entries()) {
    const seen = new Set();
    for (const t of view) {
      assert.ok(!seen.has(t.title), `view ${k} shows ${t.title} twice: ${JSON.stringify(view)}`);
      seen.add(t.title);
    }
  }
  const final = await page.evaluate(() => window.list.items);
  for (const title of titles) {
    const items = final.filter((t) => t.title === title);
    assert.equal(items.length, 1, `${title} appears ${items.length} times`);
    assert.equal(items[0]._optimistic, undefined);
    assert.match(items[0].id, /^t\d+$/);
  }
}

test("20 optimistic adds: each shown at once, replaced once by the server's item", async (t) => {
  const page = await open();
  await setupList(page);
  const { titles, results } = await addMany(page, "hook", 20);
  assert.deepStrictEqual(results.map((r) => r.title), titles);
  // Every broadcast in too: the list equals the server's.
  const want = (await suite.server.request("GET", "/api/todos")).body;
  await page.waitForFunction((n) => window.list.items.length === n && window.list.items.every((t) => !t._optimistic), want.length);
  await checkViews(page, titles);
  // Hub.Hook answers before it publishes, but the browser may still see
  // the broadcast first: either way, one item each.
  const by = await settledBy(page, titles);
  t.diagnostic(`settled by: ${by.filter((b) => b === "response").length} responses, ${by.filter((b) => b === "broadcast").length} broadcasts`);
  const got = await page.evaluate(() => window.list.items);
  assert.deepStrictEqual(new Set(got.map((t) => t.id)), new Set(want.map((t) => t.id)));
  assert.deepStrictEqual(await page.evaluate(() => window.errors), []);

  // Another page sees the same list, built from the broadcasts alone.
  const other = await open();
  await setupList(other);
  assert.deepStrictEqual(await other.evaluate(() => window.list.items), want);
});

test("20 optimistic adds when the broadcast beats the response", async () => {
  const page = await open();
  await setupList(page, { postTo: "/api/todos-first?delay=400ms" });
  const adding = addMany(page, "first", 20);
  // The broadcasts settle every add while the responses are still delayed.
  await page.waitForFunction(() => {
    const mine = window.list.items.filter((t) => t.title.startsWith("first "));
    return mine.length === 20 && mine.every((t) => !t._optimistic);
  });
  const { titles, results } = await adding;
  assert.deepStrictEqual(results.map((r) => r.title), titles);
  await new Promise((r) => setTimeout(r, 100));
  await checkViews(page, titles);
  assert.deepStrictEqual(await settledBy(page, titles), titles.map(() => "broadcast"));
});

test("failed, conflicting and timed-out mutations roll back", async () => {
  const page = await open();
  await setupList(page);
  const outcome = await page.evaluate(async () => {
    const list = window.list;
    const before = list.items.length;
    const out = {};
    const attempt = async (name, p, check) => {
      check(); // shown at once
      try {
        await p;
        out[name] = "resolved";
      } catch (e) {
        out[name] = { code: e.code, status: e.status, rolledBack: list.items.length === before };
      }
    };
    // The test server honours these headers before the handler runs.
    const liveList = window.live.liveList;
    const failing = (status, delay) => liveList(window.l, {
      channel: "todos",
      url: "/api/todos",
      headers: { ...(status ? { "X-Test-Status": String(status) } : {}), ...(delay ? { "X-Test-Delay": delay } : {}) },
      timeout: 300,
    });
    for (const [name, status, delay] of [["500", 500], ["409", 409], ["412", 412], ["timeout", 0, "2s"]]) {
      const l = failing(status, delay);
      await l.ready;
      const n = l.items.length;
      await attempt(name, l.add({ title: `fails ${name}` }), () => {
        if (l.items.length !== n + 1 || !l.items[0]._optimistic) throw new Error("not shown");
      });
      out[name].rolledBack = l.items.length === n && !l.items.some((t) => t.title === `fails ${name}`);
      l.close();
    }
    return out;
  });
  assert.deepStrictEqual(outcome, {
    500: { code: "injected", status: 500, rolledBack: true },
    409: { code: "conflict", status: 409, rolledBack: true },
    412: { code: "conflict", status: 412, rolledBack: true },
    timeout: { code: "timeout", status: undefined, rolledBack: true },
  });
  // Nothing of it reached the server.
  const todos = (await suite.server.request("GET", "/api/todos")).body;
  assert.ok(!todos.some((t) => t.title.startsWith("fails ")));
});

test("optimistic update and remove", async () => {
  const page = await open();
  await setupList(page);
  const result = await page.evaluate(async () => {
    const list = window.list;
    const item = await list.add({ title: "to edit", done: false });
    const updating = list.update(item.id, { done: true });
    const shown = list.items.find((t) => t.id === item.id);
    const optimistic = { done: shown.done, pending: shown._optimistic };
    const updated = await updating;
    const afterUpdate = list.items.find((t) => t.id === item.id);
    const removing = list.remove(item.id);
    const hidden = !list.items.some((t) => t.id === item.id);
    await removing;
    return { optimistic, updated, afterUpdate, hidden, gone: !list.items.some((t) => t.id === item.id) };
  });
  assert.deepStrictEqual(result.optimistic, { done: true, pending: true });
  assert.equal(result.updated.done, true);
  assert.deepStrictEqual(result.afterUpdate, result.updated);
  assert.equal(result.hidden, true);
  assert.equal(result.gone, true);
  await new Promise((r) => setTimeout(r, 100)); // the broadcasts change nothing
  const id = result.updated.id;
  assert.ok(!(await page.evaluate((id) => window.list.items.some((t) => t.id === id), id)));
});
