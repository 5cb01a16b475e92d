// react.js in headless Chromium against the Go test server. The test page
// (test/react/app.jsx, with React, React DOM and React Query) is bundled
// with esbuild when the file starts.
//
// Three checks guard against the original LiveProvider code's defects, and each is also run on
// a port of the original code (test/react/seed.jsx) to show that it
// catches the defect there: a provider that settles after a server
// restart, an unsubscribe while the socket is connecting, and a list that
// never shows an item twice when the broadcast beats the POST's response.
// The last tests check a small page built from the hooks as a user sees
// it, as demo.test.js checks the demo's page.
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
// uncaught errors after the test; for the port of the original, one the check
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

test("the restart check fails on the original provider", async () => {
  const got = await settlesAfterRestart("seed");
  assert.notEqual(got.why, null, "the original provider passed the restart check");
});

// --- (b) unmounting while the socket is connecting

function unmountWhileConnecting(impl, hooks) {
  return withPage(impl, async (page) => {
    const states = await page.evaluate(async ({ impl, hooks }) => {
      window.app.mount({ impl, strict: false, scenario: "toggle", props: { channel: "toggling", hooks } });
      await null; // react.js's provider connects a microtask after it mounts
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

test("the connecting check fails on the original provider", async () => {
  const got = await unmountWhileConnecting("seed", false);
  assert.deepStrictEqual(got.states, [0]);
  assert.ok(got.problems.some((p) => /InvalidStateError|CONNECTING/.test(p)), `no error on the original provider: ${JSON.stringify(got.problems)}`);
});

// --- (c) a broadcast that beats the POST's response

function addsWhenBroadcastFirst(impl) {
  return withPage(impl, async (page) => {
    await mount(page, { impl, strict: impl === "ours", scenario: "list", props: { postURL: "/api/todos-first?delay=300ms" } });
    await page.waitForFunction(() => window.list && !window.list().isLoading && window.rec.sockets.some((s) => s.readyState === 1));
    await sleep(300); // the original subscribes once its socket is open; give the hub its frame
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

test("the duplicate check fails on the original useLiveList", async (t) => {
  const got = await addsWhenBroadcastFirst("seed");
  assert.notEqual(got.why, null, "the original list passed the duplicate check");
  t.diagnostic(`on the original: ${got.why}`);
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

test("a provider moved to long-polling resumes each hook's channel from its cursor, and data keeps coming", async () => {
  const page = await open();
  const polls = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/api/live" && u.searchParams.has("poll")) polls.push(u.searchParams);
  });
  await page.evaluate(() => {
    window.fetcher = async () => ({ i: 0 });
  });
  await mount(page, { scenario: "data", props: { channel: "react:poll", queryKey: ["react-poll"] }, provider: { transport: "sse" } });
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 0 && document.getElementById("status")?.textContent === "connected");
  await suite.server.post("/test/publish?channel=react:poll&n=3");
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 3);

  // Another connection, polling, takes the hook's cursor over.
  await page.evaluate(() => window.app.setProvider({ transport: "poll" }));
  await page.waitForFunction(() => window.liveContext.transport === "poll" && document.getElementById("status")?.textContent === "connected");
  await suite.server.post("/test/publish?channel=react:poll&n=7");
  await page.waitForFunction(() => window.rec.data.at(-1)?.i === 7, undefined, { timeout: 10000 })
    .catch(async (e) => assert.fail(`${e.message}: last ${JSON.stringify(await page.evaluate(() => window.rec.data.at(-1)))}`));
  assert.ok(polls[0]?.get("cursor.react:poll"), "the first poll resumes from the hook's cursor");
  assert.equal(polls[0].get("ack"), "react:poll");
  assert.equal(await page.evaluate(() => window.rec.fetches), 1, "no refetch: the cursor carried the channel over");
});

test("useLive: a refused publish reaches onError, not an unhandled rejection", async () => {
  const page = await open();
  await mount(page, { scenario: "status" });
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected");
  // publish used as the original's was, ignoring what it returns.
  await page.evaluate(() => {
    window.liveContext.publish("board", { x: 1 });
  });
  await page.waitForFunction(() => window.rec.errors.length === 1);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), ["provider: state_channel"]);
  const cursor = await page.evaluate(() => window.liveContext.publish("chat", { x: 1 }));
  assert.match(cursor, /^\d+\.[A-Za-z0-9_-]+$/);
  assert.equal(await page.evaluate(() => window.liveContext.transport), "websocket");
});

test("useLive: a user the server removes sees connection.ending and status removed, and connect() after a new login", async () => {
  const page = await open();
  const user = `gail-${Date.now().toString(36)}`;
  await page.evaluate((user) => {
    document.cookie = `user=${user}; path=/`;
    window.cleanup = () => {
      document.cookie = "user=; path=/; max-age=0";
    };
  }, user);
  await mount(page, { scenario: "status", props: { channels: ["react:removed"] } });
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected");
  await suite.server.post(`/test/revoke?user=${user}`);
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "removed", undefined, { timeout: 5000 });
  assert.deepStrictEqual(await page.evaluate(() => window.liveContext.connection.ending), { code: 4001, reason: "disconnected by the server", retry: false, transport: "websocket" });
  await suite.server.post(`/test/login?user=${user}`);
  await page.evaluate(() => window.liveContext.connect());
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected", undefined, { timeout: 5000 });
  assert.equal(await page.evaluate(() => window.liveContext.connection.ending), null);
});

// --- a small page built from the hooks (test/react/app.jsx, scenario
// "page"): the connection indicator (useLive), a live value (useLiveData),
// a todo list (useLiveList) and the board (useDeltaSync), checked as a user
// sees them, as test/demo.test.js checks the demo's page.

/** stamp returns a string no other test uses, for titles and channels. */
const stamp = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

const waitLive = (page, timeout = 15000) =>
  page.waitForFunction(() => document.getElementById("indicator")?.dataset.status === "connected", undefined, { timeout });

/** openApp opens a page showing the app, and waits until it is live and its list and board are loaded. */
async function openApp(props = {}) {
  const page = await open();
  await mount(page, { scenario: "page", props });
  await waitLive(page);
  await page.waitForFunction(() => document.getElementById("todos").dataset.loaded === "true" && document.getElementById("boardVersion").textContent !== "");
  return page;
}

/** shown waits until the list shows a todo titled title, settled (not pending), and returns its id. */
const shown = (page, title, timeout = 10000) =>
  page
    .waitForFunction(
      (title) => [...document.querySelectorAll("#todos li")].find((li) => li.querySelector(".title").textContent === title && !li.classList.contains("pending"))?.dataset.id,
      title,
      { timeout },
    )
    .then((h) => h.jsonValue());

/** gone waits until the list no longer shows a todo titled title. */
const gone = (page, title) =>
  page.waitForFunction((title) => ![...document.querySelectorAll("#todos li .title")].some((e) => e.textContent === title), title);

/** shownIDs returns the ids of the todos the page shows, in order. */
const shownIDs = (page) => page.$$eval("#todos li", (els) => els.map((e) => e.dataset.id));

/** sameListAsServer waits until the page shows the server's todos (in any order). */
async function sameListAsServer(page) {
  const want = (await suite.server.request("GET", "/api/todos")).body.map((t) => t.id).sort();
  await page.waitForFunction((want) => JSON.stringify([...document.querySelectorAll("#todos li")].map((e) => e.dataset.id).sort()) === JSON.stringify(want), want).catch(() => {});
  assert.deepStrictEqual((await shownIDs(page)).sort(), want, "the page's list differs from the server's");
}

/** problemsOf returns the uncaught errors of a page the suite opened. */
const problemsOf = (page) => suite.pages.find((p) => p.page === page).problems();

/** dedupe drops repeats of the same status in a row (StrictMode runs a mount's effects twice). */
const dedupe = (statuses) => statuses.filter((s, i) => i === 0 || s.status !== statuses[i - 1].status || s.reconnectAttempt !== statuses[i - 1].reconnectAttempt);

test("the app connects: the indicator goes from connecting to connected, and counts attempts while down", async () => {
  const page = await open();
  await mount(page, { scenario: "page" });
  await waitLive(page);
  assert.equal(await page.textContent("#indicator"), "Live");
  const first = dedupe(await page.evaluate(() => window.rec.statuses)).map(({ status, reconnectAttempt, text }) => ({ status, reconnectAttempt, text }));
  assert.deepStrictEqual(first, [
    { status: "connecting", reconnectAttempt: 0, text: "Connecting…" },
    { status: "connected", reconnectAttempt: 0, text: "Live" },
  ]);

  // Connections refused and the socket dropped: the indicator counts the attempts.
  const from = await page.evaluate(() => window.rec.statuses.length);
  await suite.server.post("/test/pause");
  try {
    await suite.server.post("/test/drop");
    await page.waitForFunction(() => {
      const el = document.getElementById("indicator");
      return el.dataset.status !== "connected" && Number(el.dataset.attempt) >= 2;
    });
    const text = await page.textContent("#indicator");
    assert.match(text, /^(Disconnected, retrying|Reconnecting|Connection error) \(attempt [2-9]\d*\)$/, text);
  } finally {
    await suite.server.post("/test/resume");
  }
  await waitLive(page);
  const down = (await page.evaluate(() => window.rec.statuses)).slice(from);
  const attempts = down.filter((s) => s.status !== "connected").map((s) => s.reconnectAttempt);
  assert.deepStrictEqual(attempts, [...attempts].sort((a, b) => a - b), "the attempt count went down before reconnecting");
  assert.ok(down.some((s) => s.status === "disconnected" && s.reconnectAttempt === 1), `no "disconnected (attempt 1)": ${JSON.stringify(down)}`);
  assert.deepStrictEqual({ ...down.at(-1), at: 0 }, { status: "connected", reconnectAttempt: 0, transport: "websocket", delayed: false, ending: null, text: "Live", at: 0 });
  assert.equal(await page.getAttribute("#indicator", "data-attempt"), "0");
});

test("the app shows a value published on a channel (useLiveData)", async () => {
  const s = stamp();
  const channel = `ticker:${s}`;
  const page = await openApp({ tickerChannel: channel });
  const ticker = (text) => page.waitForFunction((text) => document.getElementById("ticker").textContent === text, text);
  await ticker("waiting #0");

  // Published over HTTP by anyone: shown, merged into the fetched value.
  const res = await suite.server.request("POST", `/api/live/${channel}`, { label: `hello ${s}` });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await ticker(`hello ${s} #0`);

  // Published by the server, many in a row: the last one stays.
  await suite.server.post(`/test/publish?channel=${channel}&n=50`);
  await ticker(`hello ${s} #50`);

  // Published by the page itself through useLive().publish.
  const cursor = await page.evaluate((channel) => window.liveContext.publish(channel, { label: "from the page", i: 51 }), channel);
  assert.match(cursor, /^\d+\.[A-Za-z0-9_-]+$/);
  await ticker("from the page #51");
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), []);
});

test("the app: 20 optimistic adds in a row, each shown pending at once, then the server's items, once each", async () => {
  const page = await openApp();
  const s = stamp();
  const titles = Array.from({ length: 20 }, (_, i) => `burst ${i + 1} ${s}`);
  // Submit the form 20 times in one task. The server answers each add
  // 300 ms late, so what shows before is optimistic.
  await page.evaluate((titles) => {
    window.rec.answers = [];
    window.mutationHeaders = { "X-Test-Delay": "300ms" };
    const input = document.getElementById("title");
    const form = document.getElementById("add");
    for (const t of titles) {
      input.value = t;
      form.requestSubmit();
    }
  }, titles);
  await page.waitForFunction((n) => document.querySelectorAll("#todos li.pending").length === n, titles.length, { timeout: 5000 });
  const { firstShown, answers } = await page.evaluate((titles) => ({ firstShown: titles.map((t) => window.rec.firstShown[t]), answers: window.rec.answers }), titles);
  const firstAnswer = Math.min(...answers);
  for (const [i, f] of firstShown.entries()) {
    assert.equal(f?.pending, true, `${titles[i]} was not shown pending first`);
    assert.ok(f.at < firstAnswer, `${titles[i]} was shown only after a response had come`);
  }

  // All settle: none pending, no temporary id, each once, as the server has them.
  await page.waitForFunction(
    (titles) => {
      const lis = [...document.querySelectorAll("#todos li")];
      return lis.every((li) => !li.classList.contains("pending")) && titles.every((t) => lis.some((li) => li.querySelector(".title").textContent === t));
    },
    titles,
    { timeout: 15000 },
  );
  await page.evaluate(() => {
    window.mutationHeaders = undefined;
  });
  const ids = await shownIDs(page);
  assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids}`);
  assert.ok(ids.every((id) => /^t\d+$/.test(id)), `a temporary id is left: ${ids}`);
  const shownTitles = await page.$$eval("#todos li .title", (els) => els.map((e) => e.textContent));
  for (const t of titles) assert.equal(shownTitles.filter((x) => x === t).length, 1, `${t} shown ${shownTitles.filter((x) => x === t).length} times`);
  const server = (await suite.server.request("GET", "/api/todos")).body;
  for (const t of titles) assert.equal(server.filter((x) => x.title === t).length, 1, `${t} on the server`);
  await sameListAsServer(page);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.problems), []);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), []);
});

test("the app: two pages, each with its own provider, see each other's changes", async () => {
  const a = await openApp();
  const b = await openApp();
  const s = stamp();
  const row = (title) => `#todos li:has(.title:text-is("${title}"))`;
  // Each page is brought to the front before it is used, as a user would
  // switch windows (Chromium paces the frames of the others).
  const add = async (p, title) => {
    await p.bringToFront();
    await p.fill("#title", title);
    await p.press("#title", "Enter");
  };
  const click = async (p, selector) => {
    await p.bringToFront();
    await p.click(selector);
  };

  // A adds; B sees it.
  await add(a, `from A ${s}`);
  const id = await shown(b, `from A ${s}`);
  assert.equal(await shown(a, `from A ${s}`), id);

  // B ticks it; A sees it done.
  await click(b, `${row(`from A ${s}`)} .toggle`);
  await a.waitForFunction((id) => document.querySelector(`#todos li[data-id="${id}"]`)?.className === "done", id);

  // B adds; A sees it. A removes B's; B sees it go.
  await add(b, `from B ${s}`);
  await shown(a, `from B ${s}`);
  await click(a, `${row(`from B ${s}`)} .remove`);
  await gone(b, `from B ${s}`);

  // B removes A's; A sees it go.
  await click(b, `${row(`from A ${s}`)} .remove`);
  await gone(a, `from A ${s}`);
  for (const p of [a, b]) {
    await sameListAsServer(p);
    assert.deepStrictEqual(await p.evaluate(() => window.rec.problems), []);
    assert.deepStrictEqual(await p.evaluate(() => window.rec.errors), []);
  }
});

test("the app: plain HTTP POST, PATCH and DELETE from outside reach useLiveList", async () => {
  const page = await openApp();
  const s = stamp();
  const created = await suite.server.request("POST", "/api/todos", { title: `curl ${s}`, done: false });
  assert.equal(created.status, 201);
  assert.equal(await shown(page, `curl ${s}`), created.body.id);

  const edited = await suite.server.request("PATCH", `/api/todos/${created.body.id}`, { title: `curl ${s}, edited`, done: true });
  assert.equal(edited.status, 200);
  await page.waitForFunction(
    ([id, title]) => {
      const li = document.querySelector(`#todos li[data-id="${id}"]`);
      return li?.className === "done" && li.querySelector(".title").textContent === title;
    },
    [created.body.id, `curl ${s}, edited`],
  );

  const removed = await suite.server.request("DELETE", `/api/todos/${created.body.id}`);
  assert.equal(removed.status, 204);
  await page.waitForFunction((id) => !document.querySelector(`#todos li[data-id="${id}"]`), created.body.id);
  await sameListAsServer(page);
  assert.deepStrictEqual(await page.evaluate(() => window.rec.problems), []);
});

test("the app: board deltas are applied in order (useDeltaSync), the version advancing one by one", async () => {
  const page = await openApp();
  const board = async () => (await suite.server.request("GET", "/api/state/board")).body;
  const start = (await board()).version;
  await page.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, start);
  // Each PATCH adds a card of its own: the number of this run's cards in a
  // value says which version it is. Record each value the hook puts in
  // the cache, and each version the page renders.
  const run = `d${stamp()}-`;
  const fetches = await page.evaluate((run) => {
    window.rec.counts = [];
    window.rec.versions = [];
    window.queryClient.getQueryCache().subscribe((e) => {
      if (e.type !== "updated" || e.action.type !== "success" || JSON.stringify(e.query.queryKey) !== '["page","board"]') return;
      window.rec.counts.push(Object.keys(e.query.state.data?.cards ?? {}).filter((k) => k.startsWith(run)).length);
    });
    return window.rec.fetches;
  }, run);

  // 30 PATCHes, ten at a time concurrently.
  const n = 30;
  for (let i = 0; i < n; i += 10) {
    const batch = Array.from({ length: 10 }, (_, k) =>
      suite.server.request("PATCH", "/api/state/board", { cards: { [`${run}${i + k}`]: { title: `card ${i + k}`, votes: i + k } } }));
    for (const r of await Promise.all(batch)) assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  const want = await board();
  assert.equal(want.version, start + n);
  await page.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, want.version, { timeout: 10000 });

  const got = await page.evaluate(() => ({ counts: window.rec.counts, versions: window.rec.versions, fetches: window.rec.fetches, data: window.queryClient.getQueryData(["page", "board"]) }));
  assert.deepStrictEqual(got.counts, Array.from({ length: n }, (_, k) => k + 1), "the values the hook gave, one per version");
  assert.ok(got.versions.every((v, i) => v > start && (i === 0 || v > got.versions[i - 1])), `rendered versions: ${got.versions}`);
  assert.equal(got.versions.at(-1), want.version);
  assert.equal(got.fetches, fetches, "refetched: the deltas should have sufficed");
  assert.deepStrictEqual(got.data, want.data);
  assert.equal(await page.textContent("#cards"), String(Object.keys(want.data.cards).length));
  assert.deepStrictEqual(await page.evaluate(() => window.rec.errors), []);
});

test("the app after a server restart: disconnected, then connected within the backoff cap, and live again", async () => {
  const s = stamp();
  const channel = `ticker:${s}`;
  const page = await openApp({ tickerChannel: channel });
  await page.fill("#title", `before the restart ${s}`);
  await page.press("#title", "Enter");
  await shown(page, `before the restart ${s}`);
  const from = await page.evaluate(() => window.rec.statuses.length);

  // Killed, as a crash would, and started again on the same port 1.5 s later.
  await suite.restart(1500);
  const back = Date.now();
  await waitLive(page, 35000);

  const after = (await page.evaluate(() => window.rec.statuses)).slice(from);
  assert.notEqual(after[0]?.status, "connected", "the indicator never left connected");
  assert.ok(after.some((s) => s.status === "disconnected" && s.reconnectAttempt >= 1), `never shown disconnected: ${JSON.stringify(after)}`);
  assert.ok(after.some((s) => /\(attempt [1-9]\d*\)$/.test(s.text)), `the attempt count was never shown: ${JSON.stringify(after)}`);
  assert.deepStrictEqual({ ...after.at(-1), at: 0 }, { status: "connected", reconnectAttempt: 0, transport: "websocket", delayed: false, ending: null, text: "Live", at: 0 });
  // The last wait began before the server was back and lasted at most the
  // ceiling of its attempt (1 s doubling, 30 s cap).
  const lastAttempt = Math.max(...after.filter((s) => s.status !== "connected").map((s) => s.reconnectAttempt));
  const ceiling = Math.min(30000, 1000 * 2 ** (lastAttempt - 1));
  const took = after.at(-1).at - back;
  assert.ok(took <= ceiling + 1000, `connected ${took} ms after the server was back; attempt ${lastAttempt} waits at most ${ceiling} ms`);

  // The new process starts afresh (in memory): the list and the board were
  // fetched again, and every hook is live again.
  await gone(page, `before the restart ${s}`);
  await sameListAsServer(page);
  const created = await suite.server.request("POST", "/api/todos", { title: `after the restart ${s}`, done: false });
  assert.equal(created.status, 201);
  assert.equal(await shown(page, `after the restart ${s}`), created.body.id);
  await page.fill("#title", `added after the restart ${s}`);
  await page.press("#title", "Enter");
  await shown(page, `added after the restart ${s}`);
  await sameListAsServer(page);

  const patched = await suite.server.request("PATCH", "/api/state/board", { cards: { [`after-${s}`]: { title: "after the restart" } } });
  assert.equal(patched.status, 200);
  await page.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, patched.body.version);
  assert.deepStrictEqual(await page.evaluate(() => window.queryClient.getQueryData(["page", "board"])), patched.body.data);

  await suite.server.post(`/test/publish?channel=${channel}&n=3`);
  await page.waitForFunction(() => document.getElementById("ticker").textContent === "waiting #3");

  assert.deepStrictEqual(await problemsOf(page), [], "uncaught errors on the page");
  assert.deepStrictEqual(await page.evaluate(() => window.rec.problems), []);
});

test("usePresence: the members and the count render, and a second page shows up and leaves", async () => {
  const page = await open();
  await mount(page, { scenario: "presence", props: { channel: "room:react" }, provider: { url: "/ws?as=ann" } });
  await page.waitForFunction(() => document.getElementById("members")?.textContent === "ann");
  const other = await openPage(suite.browser, suite.server.url);
  await other.page.evaluate(() => {
    window.l = window.live.createLive({ url: "/ws?as=ben" });
    window.l.presence("room:react", () => {});
  });
  await page.waitForFunction(() => document.getElementById("members").textContent === "annben");
  assert.equal(await page.evaluate(() => document.getElementById("watching").textContent), "2 watching");
  await other.page.close();
  await page.waitForFunction(() => document.getElementById("watching").textContent === "1 watching", undefined, { timeout: 10000 });
  assert.deepStrictEqual(await page.evaluate(() => window.rec.presence), [
    { joined: [], left: [] }, // the snapshot: nobody yet
    { joined: ["ann"], left: [] },
    { joined: ["ben"], left: [] },
    { joined: [], left: ["ben"] },
  ]);
});
