// A server restart in headless Chromium: the connection shows it is
// reconnecting, comes back within the backoff cap on the same port, and
// the channel is reset (the new server's numbering is not the old one).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, openPage, cleanupBuild } from "./harness.js";

let browser;
let server;

after(async () => {
  await browser?.close();
  await server?.stop();
  await cleanupBuild();
});

test("after a server restart: reconnecting, then connected within the backoff cap", async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  const { page, problems } = await openPage(browser, server.url);
  await page.evaluate(() =>
    new Promise((resolve) => {
      window.l = window.live.createLive({ url: "/ws" });
      window.statuses = [];
      window.l.onStatus((c) => window.statuses.push({ ...c, at: Date.now() }));
      window.got = [];
      window.resets = [];
      window.l.subscribe("ticker", (d) => window.got.push(d), {
        onReset: (cursor, reason) => window.resets.push({ cursor, reason }),
        onSubscribed: resolve,
      });
    }));
  await server.post("/test/publish?channel=ticker&n=3");
  await page.waitForFunction(() => window.got.length === 3);

  // Crash the server; come back on the same port 2.5 s later.
  const addr = server.addr;
  await server.kill();
  await page.waitForFunction(() => window.l.connection.status === "disconnected");
  await new Promise((r) => setTimeout(r, 2500));
  server = await startServer(addr);
  const back = Date.now();

  await page.waitForFunction(() => window.l.connection.status === "connected", undefined, { timeout: 35000 });
  const statuses = await page.evaluate(() => window.statuses);
  const i = statuses.findIndex((s) => s.status === "disconnected");
  const after = statuses.slice(i);
  assert.ok(after.some((s) => s.status === "connecting" && s.reconnectAttempt >= 1), `no reconnecting state: ${JSON.stringify(after)}`);
  assert.equal(after.at(-1).status, "connected");
  assert.equal(after.at(-1).reconnectAttempt, 0);
  // The last wait began before the server was back, and lasted at most
  // the ceiling of its attempt.
  const lastAttempt = after.filter((s) => s.status === "disconnected").at(-1).reconnectAttempt;
  const ceiling = Math.min(30000, 1000 * 2 ** (lastAttempt - 1));
  const took = after.at(-1).at - back;
  assert.ok(took <= ceiling + 1000, `connected ${took} ms after the server was back; attempt ${lastAttempt} waits at most ${ceiling} ms`);
  // Attempts while the server was down were spaced by the backoff, not a storm.
  const attempts = after.filter((s) => s.status === "connecting").length;
  assert.ok(attempts <= 5, `${attempts} attempts in about 3 s: ${JSON.stringify(after)}`);

  // A new server, a new numbering: the channel is reset, then live.
  await page.waitForFunction(() => window.resets.length === 1);
  const [reset] = await page.evaluate(() => window.resets);
  assert.equal(reset.reason, "epoch");
  await server.post("/test/publish?channel=ticker&n=1");
  await page.waitForFunction(() => window.got.length === 4);
  assert.deepStrictEqual(await page.evaluate(() => window.got), [{ i: 1 }, { i: 2 }, { i: 3 }, { i: 1 }]);

  await page.evaluate(() => window.l.close());
  assert.deepStrictEqual(await problems(), [], "the page had uncaught errors");
});
