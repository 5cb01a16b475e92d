// react.js in headless Chromium against the Go test server. The test page
// (test/react/app.jsx, with React, React DOM and React Query) is bundled
// with esbuild when the file starts.
//
// Three checks guard against the seed's defects, and each is also run on
// a port of the seed's own code (test/react/seed.jsx) to show that it
// catches the defect there: a provider that settles after a server
// restart, an unsubscribe while the socket is connecting, and a list that
// never shows an item twice when the broadcast beats the POST's response.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, bundle, openPage } from "./harness.js";

const suite = browserSuite();
let pageOptions;
before(async () => {
  pageOptions = { script: await bundle(new URL("./react/app.jsx", import.meta.url)), ready: "appLoaded" };
});


const open = () => suite.open(pageOptions);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// withPage runs check on a new page: for react.js the suite's, checked for
// uncaught errors after the test; for the seed's port, one the check
// closes, whose errors it returns.
async function withPage(impl, check) {
  if (impl === "ours") return { ...(await check(await suite.open(pageOptions))), problems: [] };
  const { page, problems } = await openPage(suite.browser, suite.server.url, pageOptions);
  try {
    const result = await check(page);
    return { ...result, problems: await problems() };
  } finally {
    await page.close();
  }
}

const mount = (page, opts) => page.evaluate((opts) => window.app.mount(opts), opts);
const status = (page) => page.evaluate(() => document.getElementById("status")?.textContent);

// --- (a) the provider settles after a server restart

function settlesAfterRestart(impl) {
  return withPage(impl, async (page) => {
    await mount(page, { impl, strict: false, scenario: "status", props: { channels: ["ticker"] } });
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected");
    await suite.restart(2500);
    try {
      await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected" && window.rec.sockets.filter((s) => s.readyState === 1).length === 1, undefined, { timeout: 20000 });
    } catch {
      return { why: `not connected with one socket 20 s after the restart: ${await status(page)}` };
    }
    // Settled: for 3 s, no new socket, one open, and the status stays.
    const start = await page.evaluate(() => ({ sockets: window.rec.sockets.length, statuses: window.rec.statuses.length }));
    await sleep(3000);
    const end = await page.evaluate(() => ({
      sockets: window.rec.sockets.length,
      open: window.rec.sockets.filter((s) => s.readyState === 1).length,
      statuses: window.rec.statuses.length,
      status: document.getElementById("status")?.textContent,
    }));
    if (end.sockets !== start.sockets) return { why: `${end.sockets - start.sockets} new sockets in the 3 s after it had connected` };
    if (end.open !== 1) return { why: `${end.open} open sockets` };
    if (end.statuses !== start.statuses || end.status !== "connected") return { why: `the status moved on to ${end.status}` };
    // And the channel is live again.
    await suite.server.post("/test/publish?channel=ticker&n=1");
    try {
      await page.waitForFunction(() => window.rec.got.ticker?.length >= 1, undefined, { timeout: 5000 });
    } catch {
      return { why: "no publication reached the subscriber after the restart" };
    }
    return { why: null, sockets: end.sockets };
  });
}

test("LiveProvider settles after a server restart: connected, one socket, and it stays", async () => {
  const got = await settlesAfterRestart("ours");
  assert.equal(got.why, null);
  // One socket before the restart, and the reconnections while it was down.
  assert.ok(got.sockets <= 6, `${got.sockets} sockets`);
});

test("the restart check fails on the seed's provider", async () => {
  const got = await settlesAfterRestart("seed");
  assert.notEqual(got.why, null, "the seed's provider passed the restart check");
});

// --- (b) unmounting while the socket is connecting

function unmountWhileConnecting(impl, hooks) {
  return withPage(impl, async (page) => {
    const states = await page.evaluate(({ impl, hooks }) => {
      window.app.mount({ impl, strict: false, scenario: "toggle", props: { channel: "toggling", hooks } });
      const states = window.rec.sockets.map((s) => s.readyState);
      window.app.setShow(false); // in the same task: no socket can have opened
      return states;
    }, { impl, hooks });
    // Let the socket open and anything thrown surface.
    await page.waitForFunction(() => window.rec.sockets.some((s) => s.readyState === 1), undefined, { timeout: 5000 }).catch(() => {});
    await sleep(300);
    return { states };
  });
}

test("hooks mounted and unmounted while the socket is connecting: no error", async () => {
  const got = await unmountWhileConnecting("ours", true);
  assert.deepStrictEqual(got.states, [0], "the socket was not connecting when the hooks unmounted");
  // The suite checks the page for uncaught errors and InvalidStateErrors.
});

test("the connecting check fails on the seed's provider", async () => {
  const got = await unmountWhileConnecting("seed", false);
  assert.deepStrictEqual(got.states, [0]);
  assert.ok(got.problems.some((p) => /InvalidStateError|CONNECTING/.test(p)), `no error on the seed's provider: ${JSON.stringify(got.problems)}`);
});

// --- (c) a broadcast that beats the POST's response

function addsWhenBroadcastFirst(impl) {
  return withPage(impl, async (page) => {
    await mount(page, { impl, strict: impl === "ours", scenario: "list", props: { postURL: "/api/todos-first?delay=300ms" } });
    await page.waitForFunction(() => window.list && !window.list().isLoading && window.rec.sockets.some((s) => s.readyState === 1));
    await sleep(300); // the seed subscribes once its socket is open; give the hub its frame
    const titles = [];
    for (let i = 0; i < 5; i++) {
      const title = `first ${impl} ${i}`;
      titles.push(title);
      await page.evaluate((title) => window.list().add({ title, done: false }), title);
      try {
        // (Showing it before the response is checked by the test of optimistic mutations.)
        await page.waitForFunction((title) => window.list().items.some((t) => t.title === title), title, { timeout: 2000 });
      } catch {
        return { why: `${title} never shown` };
      }
      try {
        await page.waitForFunction((title) => window.list().items.some((t) => t.title === title && !t._optimistic) && !window.list().isAdding, title, { timeout: 5000 });
      } catch {
        return { why: `${title} never settled` };
      }
      await sleep(100);
    }
    const { problems, items } = await page.evaluate(() => ({ problems: window.rec.problems, items: window.list().items }));
    if (problems.length > 0) return { why: problems[0] };
    for (const title of titles) {
      const n = items.filter((t) => t.title === title).length;
      if (n !== 1) return { why: `${title} is shown ${n} times in the end` };
    }
    return { why: null, items };
  });
}

test("useLiveList: no duplicate when the broadcast beats the POST's response", async () => {
  const got = await addsWhenBroadcastFirst("ours");
  assert.equal(got.why, null);
  for (const t of got.items.filter((t) => t.title.startsWith("first"))) {
    assert.match(t.id, /^t\d+$/);
    assert.equal(t._optimistic, undefined);
  }
});

test("the duplicate check fails on the seed's useLiveList", async (t) => {
  const got = await addsWhenBroadcastFirst("seed");
  assert.notEqual(got.why, null, "the seed's list passed the duplicate check");
  t.diagnostic(`on the seed: ${got.why}`);
  // Shown twice; or, when its query answers before its socket opens, its
  // effect (keyed on a new queryKey array every render) unsubscribes on the
  // connecting socket first, and the error unmounts the list.
  const crashed = got.problems.some((p) => /CONNECTING|InvalidStateError/.test(p));
  assert.ok(/twice/.test(got.why) || crashed, `failed for another reason: ${got.why} ${JSON.stringify(got.problems)}`);
});

// --- the hooks

test("useLiveData: fetches once subscribed, merges publications, refetches after a reset", async () => {
  const page = await open();
  await page.evaluate(() => {
    window.fetcher = async () => {
      // Publications made while the fetch runs end up in its result.
      await fetch("/test/publish?channel=metrics&n=3", { method: "POST" });
      await new Promise((r) => setTimeout(r, 200));
      return { i: 0, source: "fetch" };
    };
  });
  await mount(page, { scenario: "data", props: { channel: "metrics", queryKey: ["metrics"] } });
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 3);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.data.at(-1)), { i: 3, source: "fetch" });
  assert.equal(await page.evaluate(() => window.rec.fetches), 1);

  await suite.server.post("/test/publish?channel=metrics&n=2");
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 2);
  assert.deepStrictEqual(await page.evaluate(() => window.queryClient.getQueryData(["metrics"])), { i: 2, source: "fetch" });

  // Away longer than the history: a reset, so the query is fetched again.
  await page.evaluate(() => {
    window.fetcher = async () => ({ i: -1, source: "refetch" });
  });
  await suite.server.post("/test/pause");
  try {
    await suite.server.post("/test/drop");
    await page.waitForFunction(() => document.getElementById("status")?.textContent !== "connected");
    await suite.server.post("/test/publish?channel=metrics&n=1100");
  } finally {
    await suite.server.post("/test/resume");
  }
  await page.waitForFunction(() => window.rec.data.at(-1)?.source === "refetch", undefined, { timeout: 15000 });
  assert.equal(await page.evaluate(() => window.rec.fetches), 2);
  await suite.server.post("/test/publish?channel=metrics&n=1");
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 1);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.data.at(-1)), { i: 1, source: "refetch" });
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), []);
});

test("useLiveData: a custom merge, and one that throws refetches", async () => {
  const page = await open();
  await page.evaluate(() => {
    window.fetcher = async () => ({ seen: [] });
    window.appendMerge = (current, update) => {
      if (update.i === 2) throw new Error("cannot merge 2");
      return { seen: [...current.seen, update.i] };
    };
  });
  await mount(page, { scenario: "data", props: { channel: "merging", queryKey: ["merging"], merge: "appendMerge" } });
  await page.waitForFunction(() => Array.isArray(window.rec.data.at(-1)?.seen) && document.getElementById("status")?.textContent === "connected");
  await suite.server.post("/test/publish?channel=merging&n=1");
  await page.waitForFunction(() => window.rec.data.at(-1).seen.length === 1);
  await suite.server.post("/test/publish?channel=merging&n=3"); // 1, 2 (throws: refetch), 3
  await page.waitForFunction(() => window.rec.fetches === 2 && window.rec.errors.length === 1);
  assert.match(await page.evaluate(() => window.rec.errors[0]), /cannot merge 2/);
});

test("useDeltaSync: equal to the server's State through PATCHes, a drop, a gap and an invalidation", async () => {
  const page = await open();
  await mount(page, { scenario: "delta" });
  await page.waitForFunction(() => window.rec.delta?.data !== undefined && window.rec.delta.isLive);
  const serverBoard = async () => (await suite.server.request("GET", "/api/state/board")).body;
  const check = async (what) => {
    const want = await serverBoard();
    await page.waitForFunction((v) => window.rec.delta.version === v, want.version, { timeout: 20000 }).catch(() => {});
    const got = await page.evaluate(() => ({ data: window.queryClient.getQueryData(["board"]), version: window.rec.delta.version }));
    assert.deepStrictEqual(got, want, what);
  };
  await check("after the first fetch");
  const patch = (body) => suite.server.request("PATCH", "/api/state/board", body);
  for (let i = 0; i < 60; i++) {
    const ops = [patch({ cards: { [`c${i % 7}`]: { title: `card ${i}`, votes: i } } })];
    if (i === 30) ops.push(suite.server.post("/test/drop"));
    await Promise.all(ops);
  }
  await check("after 60 PATCHes and a drop");
  assert.equal(await page.evaluate(() => window.rec.fetches), 1, "refetched: the deltas should have sufficed");

  // Away longer than the history: the State's in-band reset, so a refetch.
  await suite.server.post("/test/pause");
  try {
    await suite.server.post("/test/drop");
    await page.waitForFunction(() => !window.rec.delta.isLive);
    for (let i = 0; i < 1100; i += 20) await Promise.all(Array.from({ length: 20 }, (_, k) => patch({ n: i + k })));
  } finally {
    await suite.server.post("/test/resume");
  }
  await check("after a reset");
  const fetches = await page.evaluate(() => window.rec.fetches);
  assert.ok(fetches >= 2, "no refetch after the reset");

  await page.evaluate(() => window.queryClient.invalidateQueries({ queryKey: ["board"] }));
  await page.waitForFunction((n) => window.rec.fetches === n + 1, fetches);
  await check("after invalidateQueries");
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), []);
});

test("useLiveList: optimistic add, update and remove; rollback on an error, a conflict and a timeout", async () => {
  const page = await open();
  await mount(page, { scenario: "list", props: { timeout: 2000 } });
  await page.waitForFunction(() => window.list && !window.list().isLoading);
  const items = () => page.evaluate(() => window.list().items);
  const settled = (pred, arg) => page.waitForFunction(pred, arg);

  // The server answers each mutation 0.6 s late: what shows before is optimistic.
  const slowly = () => page.evaluate(() => {
    window.nextHeaders = { "X-Test-Delay": "600ms" };
  });
  const shownBeforeAnswer = (pred, arg) => page.waitForFunction(pred, arg, { timeout: 500 });

  // add: shown at once, then the server's item, once.
  await slowly();
  await page.evaluate(() => window.list().add({ title: "milk", done: false }));
  await shownBeforeAnswer(() => window.list().items[0]?.title === "milk" && window.list().items[0]._optimistic === true);
  await settled(() => window.list().items.some((t) => t.title === "milk" && !t._optimistic));
  const milk = (await items()).find((t) => t.title === "milk");
  assert.match(milk.id, /^t\d+$/);

  // update: shown at once, then settled.
  await slowly();
  await page.evaluate((id) => window.list().update({ id, done: true }), milk.id);
  await shownBeforeAnswer((id) => window.list().items.some((t) => t.id === id && t.done && t._optimistic), milk.id);
  await settled(() => window.list().items.some((t) => t.title === "milk" && t.done && !t._optimistic));

  // Failures roll back, without unhandled rejections, and reach onError.
  for (const [headers, want] of [
    [{ "X-Test-Delay": "600ms", "X-Test-Status": "500" }, { code: "injected", status: 500 }],
    [{ "X-Test-Delay": "600ms", "X-Test-Status": "412" }, { code: "conflict", status: 412 }],
    [{ "X-Test-Delay": "3s" }, { code: "timeout" }],
  ]) {
    const before = await items();
    await page.evaluate((headers) => {
      window.rec.errors = [];
      window.nextHeaders = headers;
      window.list().add({ title: "doomed", done: false });
    }, headers);
    await shownBeforeAnswer((n) => window.list().items.length === n && window.list().items[0]._optimistic, before.length + 1);
    await settled(() => window.rec.errors.length === 1 && !window.list().isAdding);
    assert.deepStrictEqual(await page.evaluate(() => window.rec.errors[0]), { ...want, ...(want.status ? {} : { status: undefined }) });
    assert.deepStrictEqual((await items()).map((t) => t.id), before.map((t) => t.id), `not rolled back after ${JSON.stringify(headers)}`);
  }
  const rejected = await page.evaluate(() => {
    window.nextHeaders = { "X-Test-Status": "409" };
    return window.list().removeAsync(window.list().items[0].id).then(() => null, (e) => e.code);
  });
  assert.equal(rejected, "conflict");

  await slowly();
  await page.evaluate((id) => window.list().remove(id), milk.id);
  await shownBeforeAnswer((id) => !window.list().items.some((t) => t.id === id) && window.list().isRemoving, milk.id);
  await settled(() => !window.list().isRemoving);
  const server = (await suite.server.request("GET", "/api/todos")).body;
  await settled((n) => window.list().items.length === n, server.length);
  assert.deepStrictEqual((await items()).map((t) => t.id), server.map((t) => t.id));
  assert.deepStrictEqual(await page.evaluate(() => window.rec.problems), []);
});

test("over SSE, every hook of the page shares one stream", async () => {
  const page = await open();
  const streams = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/api/live" && r.method() === "GET") streams.push(u.searchParams.get("channels"));
  });
  await page.evaluate(() => {
    window.fetcher = async () => ({ i: 0 });
  });
  await mount(page, { scenario: "data", props: { channel: "sse:data", queryKey: ["sse"] }, provider: { transport: "sse" } });
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 0 && document.getElementById("status")?.textContent === "connected");
  await suite.server.post("/test/publish?channel=sse:data&n=4");
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 4);
  assert.equal(streams.length, 1, `streams: ${streams}`);
  assert.equal(await page.evaluate(() => window.rec.sockets.length), 0);
});

test("useLive: a refused publish reaches onError, not an unhandled rejection", async () => {
  const page = await open();
  await mount(page, { scenario: "status" });
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected");
  // publish used as the seed's was, ignoring what it returns.
  await page.evaluate(() => {
    window.liveContext.publish("board", { x: 1 });
  });
  await page.waitForFunction(() => window.rec.errors.length === 1);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), ["provider: state_channel"]);
  const cursor = await page.evaluate(() => window.liveContext.publish("chat", { x: 1 }));
  assert.match(cursor, /^\d+\.[A-Za-z0-9_-]+$/);
  assert.equal(await page.evaluate(() => window.liveContext.transport), "websocket");
});
