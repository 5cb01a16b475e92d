// The browser's own network events, in headless Chromium (playwright's
// context.setOffline): offline, the page leaves "connected" at once and
// sends nothing, writes included; online, it reconnects and sends the
// writes that waited at once, and moves back up to the best transport.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.js";

const suite = browserSuite();
let proxied = null;

afterEach(async () => {
  await suite.browser.context.setOffline(false);
  await suite.server.post("/test/proxy?mode=");
  if (proxied) {
    const problems = await proxied.problems();
    await proxied.page.evaluate(() => window.l?.close());
    await proxied.page.close();
    proxied = null;
    assert.deepStrictEqual(problems, [], "the page had uncaught errors");
  }
});

test("offline: status leaves connected within 2 s, nothing is sent or retried; online: reconnected, and the waiting writes sent at once", async () => {
  const page = await suite.open();
  await page.evaluate(() => {
    // Before the client's own listeners, so that the times taken here
    // come first within each event.
    addEventListener("offline", () => (window.offlineAt = performance.now()));
    addEventListener("online", () => (window.onlineAt = performance.now()));
    window.l = window.live.createLive({ url: "/ws", minBackoff: 100, maxBackoff: 200 });
    window.statuses = [];
    window.l.onStatus((c) => window.statuses.push({ status: c.status, at: performance.now() }));
    // Every request the list makes, and when.
    window.requests = [];
    const counting = (url, init) => {
      window.requests.push({ method: init?.method ?? "GET", at: performance.now() });
      return fetch(url, init);
    };
    window.list = window.live.liveList(window.l, { channel: "todos", url: "/api/todos", fetch: counting, persist: false });
    return window.list.ready;
  });
  await page.waitForFunction(() => window.l.connection.status === "connected");

  await suite.browser.context.setOffline(true);
  await page.waitForFunction(() => window.offlineAt !== undefined);
  await page.waitForFunction(() => window.l.connection.status !== "connected", undefined, { timeout: 2000 });
  const left = await page.evaluate(() => window.statuses.find((s) => s.at >= window.offlineAt && s.status !== "connected"));
  assert.equal(left.status, "offline");
  assert.ok(left.at - (await page.evaluate(() => window.offlineAt)) < 2000, "left connected within 2 s");

  const stamp = Date.now().toString(36);
  await page.evaluate((stamp) => {
    window.failures = [];
    for (let i = 0; i < 3; i++) window.list.add({ title: `${stamp} offline ${i}`, done: false }).catch((e) => window.failures.push(e.code));
  }, stamp);
  assert.equal(await page.evaluate(() => window.list.pending), 3);
  // A while offline, with backoffs that would retry several times a second.
  await new Promise((r) => setTimeout(r, 2500));
  const offline = await page.evaluate(() => ({
    writes: window.requests.filter((r) => r.method !== "GET" && r.at >= window.offlineAt).length,
    status: window.l.connection.status,
    statuses: window.statuses.filter((s) => s.at >= window.offlineAt).map((s) => s.status),
  }));
  assert.equal(offline.writes, 0, "no write is sent, or retried, while offline");
  assert.equal(offline.status, "offline");
  assert.deepStrictEqual([...new Set(offline.statuses)], ["offline"], "no reconnection is tried while offline");

  await suite.browser.context.setOffline(false);
  await page.waitForFunction(() => window.list.pending === 0, undefined, { timeout: 5000 });
  const online = await page.evaluate(() => {
    const writes = window.requests.filter((r) => r.method !== "GET" && r.at >= window.onlineAt);
    const connected = window.statuses.find((s) => s.at >= window.onlineAt && s.status === "connected");
    return { writes: writes.length, first: writes[0].at - window.onlineAt, connected: connected && connected.at - window.onlineAt, failures: window.failures };
  });
  assert.equal(online.writes, 3, "each waiting write once");
  assert.ok(online.first < 200, `the first waiting write went ${online.first} ms after online`);
  assert.ok(online.connected < 1000, `connected ${online.connected} ms after online`);
  assert.deepStrictEqual(online.failures, []);
  const server = (await suite.server.request("GET", "/api/todos")).body.map((t) => t.title).filter((t) => t.startsWith(stamp)).sort();
  assert.deepStrictEqual(server, [0, 1, 2].map((i) => `${stamp} offline ${i}`));
});

test("online: a page moved down to long-polling tries the transports above at once", async () => {
  await suite.server.post("/test/proxy?mode=refuse-upgrade,buffer");
  proxied = await openPage(suite.browser, suite.server.proxyURL);
  const page = proxied.page;
  await page.evaluate(() => {
    window.l = window.live.createLive({ url: "/ws", firstFrameTimeout: 1000 });
    window.l.subscribe("network:up", () => {});
  });
  await page.waitForFunction(() => window.l.connection.status === "connected" && window.l.transport === "poll", undefined, { timeout: 15000 });
  // The way is clear now, but the next probe is 30 s away.
  await suite.server.post("/test/proxy?mode=");
  await suite.browser.context.setOffline(true);
  await page.waitForFunction(() => window.l.connection.status === "offline");
  await suite.browser.context.setOffline(false);
  const start = Date.now();
  await page.waitForFunction(() => window.l.transport === "websocket" && window.l.connection.status === "connected", undefined, { timeout: 5000 });
  assert.ok(Date.now() - start < 5000);
});
