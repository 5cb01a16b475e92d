// Offline writes in headless Chromium: a page behind the test server's
// proxy goes offline (every request fails on the way, as with no
// network), makes 20 adds, 5 edits and 5 removes, reloads while offline,
// and comes back: every change reaches the server exactly once, and two
// other pages end with the same list.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.js";

const suite = browserSuite();
let proxied = null;

afterEach(async () => {
  await suite.server.post("/test/proxy?mode=");
  if (proxied) {
    const problems = await proxied.problems();
    await proxied.page.evaluate(() => window.l?.close());
    await proxied.page.close();
    proxied = null;
    assert.deepStrictEqual(problems, [], "the page had uncaught errors");
  }
});

// follow makes window.l and window.list, the todos, in page, and waits
// until the list is loaded unless offline.
async function follow(page, offline = false) {
  await page.evaluate((offline) => {
    window.l = window.live.createLive({ url: "/ws", minBackoff: 200, maxBackoff: 1000 });
    window.list = window.live.liveList(window.l, { channel: "todos", url: "/api/todos" });
    window.board = window.live.liveState(window.l, { channel: "board", url: "/api/state/board" });
    return offline ? undefined : Promise.all([window.list.ready, window.board.ready]);
  }, offline);
}

const titles = (page) => page.evaluate(() => window.list.items.map((t) => `${t.title}${t.done ? " ✓" : ""}`).sort());

test("offline: 20 adds, 5 edits, 5 removes and a reload, then online: each change once, everywhere", async () => {
  const stamp = Date.now().toString(36);
  // Ten todos to edit and remove.
  const existing = [];
  for (let i = 0; i < 10; i++) {
    const r = await suite.server.request("POST", "/api/todos", { title: `${stamp} old ${i}`, done: false });
    existing.push(r.body.id);
  }
  proxied = await openPage(suite.browser, suite.server.proxyURL);
  const page = proxied.page;
  await page.evaluate(() => localStorage.clear());
  await follow(page);
  const b = await suite.open();
  const c = await suite.open();
  await follow(b);
  await follow(c);

  await suite.server.post("/test/proxy?mode=offline");
  await page.waitForFunction(() => window.l.connection.status !== "connected");
  await page.evaluate(({ stamp, existing }) => {
    window.failures = [];
    const keep = (p) => p.catch((e) => window.failures.push(e.code));
    for (let i = 0; i < 20; i++) keep(window.list.add({ title: `${stamp} new ${i}`, done: false }));
    for (const id of existing.slice(0, 5)) keep(window.list.update(id, { done: true }));
    for (const id of existing.slice(5)) keep(window.list.remove(id));
    for (let i = 0; i < 3; i++) keep(window.board.patch({ cards: { [`${stamp}-${i}`]: { title: `offline card ${i}` } } }));
  }, { stamp, existing });
  assert.equal(await page.evaluate(() => window.list.pending), 30);
  assert.equal(await page.evaluate(() => window.board.pending), 3);
  assert.equal(await page.evaluate((k) => window.board.value.cards[k]?.title, `${stamp}-2`), "offline card 2", "a patch shows at once");

  // A reload while offline: the page comes back (the proxy lets the page
  // through), and so do its writes, from storage.
  await page.reload();
  await follow(page, true); // the list cannot load while offline
  await page.waitForFunction(() => window.list?.pending === 30 && window.board?.pending === 3);

  await suite.server.post("/test/proxy?mode=");
  await page.waitForFunction(() => window.list.loaded && window.list.pending === 0 && window.board.pending === 0, undefined, { timeout: 30000 });

  const server = (await suite.server.request("GET", "/api/todos")).body.map((t) => `${t.title}${t.done ? " ✓" : ""}`).sort();
  const mine = server.filter((t) => t.startsWith(stamp));
  const want = [
    ...Array.from({ length: 20 }, (_, i) => `${stamp} new ${i}`),
    ...Array.from({ length: 5 }, (_, i) => `${stamp} old ${i} ✓`),
  ].sort();
  assert.deepStrictEqual(mine, want, "each change reached the server once");
  for (const p of [page, b, c]) {
    await p.waitForFunction((n) => window.list.items.length === n, server.length);
    assert.deepStrictEqual(await titles(p), server);
  }
  const board = (await suite.server.request("GET", "/api/state/board")).body;
  for (let i = 0; i < 3; i++) assert.equal(board.data.cards[`${stamp}-${i}`]?.title, `offline card ${i}`);
  for (const p of [page, b, c]) {
    await p.waitForFunction((v) => window.board.version >= v, board.version);
    assert.deepStrictEqual(await p.evaluate(() => window.board.value), board.data);
  }
  assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing is left in storage");
});
