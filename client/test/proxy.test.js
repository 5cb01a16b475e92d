// live.js behind the proxies users sit behind, in headless Chromium: the
// test server's proxy refuses upgrades, buffers whole responses, or drops
// every connection every few seconds. The page, loaded through it, stays
// live on the best transport that works, with nothing lost or repeated
// over 500 publications.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage, range } from "./harness.js";

const suite = browserSuite();
let opened = [];

afterEach(async () => {
  await suite.server.post("/test/proxy?mode=");
  for (const p of opened.splice(0)) {
    const problems = await p.problems();
    await p.page.evaluate(() => window.l?.close());
    await p.page.close();
    assert.deepStrictEqual(problems, [], "the page had uncaught errors");
  }
});

// throughProxy opens the test page through the proxy, with a connection
// as window.l following channel into window.got.
async function throughProxy(channel, options = {}) {
  const p = await openPage(suite.browser, suite.server.proxyURL);
  opened.push(p);
  await p.page.evaluate(({ channel, options }) => {
    window.l = window.live.createLive({ url: "/ws", firstFrameTimeout: 2000, ...options });
    window.got = [];
    window.transports = [];
    window.l.onStatus((c) => window.transports.at(-1) !== c.transport && window.transports.push(c.transport));
    window.l.subscribe(channel, (data, meta) => window.got.push(Number(meta.cursor.split(".")[0])));
  }, { channel, options });
  return p.page;
}

// publish500 publishes 500 messages on channel, straight to the server, 10
// at a time, about 200 a second, and waits until the page has them all.
async function publish500(page, channel) {
  for (let k = 0; k < 50; k++) {
    await suite.server.post(`/test/publish?channel=${channel}&n=10`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await page.waitForFunction(() => window.got.length >= 500, undefined, { timeout: 60000 })
    .catch(async (e) => assert.fail(`${e.message}: got ${await page.evaluate(() => window.got.length)}, transports ${await page.evaluate(() => window.transports)}`));
  const got = await page.evaluate(() => window.got);
  assert.deepStrictEqual(got, range(1, 500), "every publication once, in order, by its position");
}

test("a proxy that refuses upgrades: the multiplexed stream", async () => {
  await suite.server.post("/test/proxy?mode=refuse-upgrade");
  const page = await throughProxy("proxy:refuse");
  await page.waitForFunction(() => window.l.connection.status === "connected" && window.l.transport === "sse");
  await publish500(page, "proxy:refuse");
  assert.deepStrictEqual(await page.evaluate(() => window.transports), ["websocket", "sse"]);
});

test("a proxy that refuses upgrades and buffers whole responses: long-polling", async () => {
  await suite.server.post("/test/proxy?mode=refuse-upgrade,buffer");
  const page = await throughProxy("proxy:buffer");
  await page.waitForFunction(() => window.l.connection.status === "connected" && window.l.transport === "poll", undefined, { timeout: 15000 });
  await publish500(page, "proxy:buffer");
  assert.deepStrictEqual(await page.evaluate(() => window.transports), ["websocket", "sse", "poll"]);
});

test("a proxy that drops every connection every 2 s: WebSocket, resumed each time", async () => {
  await suite.server.post("/test/proxy?mode=drop=2s");
  const page = await throughProxy("proxy:drop", { minBackoff: 200, maxBackoff: 1000 });
  await page.waitForFunction(() => window.l.connection.status === "connected");
  await publish500(page, "proxy:drop");
  assert.equal(await page.evaluate(() => window.l.transport), "websocket");
});

test("once the proxy lets WebSockets through, a probe moves the page back up", async () => {
  await suite.server.post("/test/proxy?mode=refuse-upgrade,buffer");
  const page = await throughProxy("proxy:probe", { probeInterval: 3000 });
  await page.waitForFunction(() => window.l.transport === "poll", undefined, { timeout: 15000 });
  await suite.server.post("/test/proxy?mode=");
  await page.waitForFunction(() => window.l.transport === "websocket" && window.l.connection.status === "connected", undefined, { timeout: 15000 });
  await publish500(page, "proxy:probe");
});
