// Credentials that expire, in headless Chromium against the Go test
// server, on each transport: the hub asks the page to refresh before its
// credential (the "expires" cookie) expires; the refresh option renews it
// and the client reconnects from its cursors, keeping its subscription
// and losing nothing. Without the option the expiry ends the connection
// with 4003, and the reconnection, still expired, is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite } from "./harness.js";

const suite = browserSuite();

const transports = ["websocket", "sse", "poll"];

// open opens a page as user whose credential expires in ms, subscribed to
// channel as window.l (with the refresh option when refresh), recording
// endings, statuses and errors; it resolves once the channel is
// acknowledged.
async function open(user, transport, channel, ms, refresh) {
  const page = await suite.open();
  await page.evaluate(({ user, transport, channel, ms, refresh }) => {
    document.cookie = `user=${user}; path=/`;
    document.cookie = `expires=${Date.now() + ms}; path=/`;
    window.refreshes = 0;
    const options = { url: "/ws", transport, minBackoff: 100, maxBackoff: 200 };
    if (refresh) {
      options.refresh = async () => {
        window.refreshes++;
        document.cookie = `expires=${Date.now() + 3600000}; path=/`; // as a session refresh would
      };
    }
    window.l = window.live.createLive(options);
    window.ends = [];
    window.statuses = [];
    window.errors = [];
    window.got = [];
    window.l.onEnd((e) => window.ends.push(e));
    window.l.onStatus((c) => window.statuses.push(c.status));
    window.l.onError((e) => window.errors.push(e.code));
    window.cleanup = () => {
      document.cookie = "user=; path=/; max-age=0";
      document.cookie = "expires=; path=/; max-age=0";
    };
    return new Promise((resolve) => window.l.subscribe(channel, (data) => window.got.push(data.i), { onSubscribed: resolve }));
  }, { user, transport, channel, ms, refresh });
  await page.waitForFunction(() => window.l.connection.status === "connected");
  return page;
}

test("refresh: the page renews its credential before it expires and keeps its subscription, losing nothing", async (t) => {
  for (const transport of transports) {
    const channel = `creds:${transport}-${Date.now().toString(36)}`;
    const page = await open(`gia-${transport}-${Date.now().toString(36)}`, transport, channel, 1500, true);
    await suite.server.post(`/test/publish?channel=${channel}&n=3`);
    await page.waitForFunction(() => window.got.length >= 3, undefined, { timeout: 5000 });
    // The refresh frame comes half way, before the expiry.
    await page.waitForFunction(() => window.refreshes >= 1, undefined, { timeout: 5000 });
    await page.waitForFunction(() => window.l.connection.status === "connected", undefined, { timeout: 5000 });
    await suite.server.post(`/test/publish?channel=${channel}&n=3&from=3`);
    await page.waitForFunction(() => window.got.length >= 6, undefined, { timeout: 5000 });
    // Past the old credential's expiry: nothing ended the connection.
    await new Promise((r) => setTimeout(r, 1000));
    const { got, ends, statuses, errors, refreshes } = await page.evaluate(() => ({ got: window.got, ends: window.ends, statuses: window.statuses, errors: window.errors, refreshes: window.refreshes }));
    assert.deepStrictEqual(got, [1, 2, 3, 4, 5, 6], `${transport}: everything once, in order`);
    assert.deepStrictEqual(ends, [], `${transport}: no ending`);
    assert.deepStrictEqual(errors, [], `${transport}: no error`);
    assert.ok(!statuses.includes("error") && !statuses.includes("disconnected") && !statuses.includes("signed-out"), `${transport}: statuses ${statuses}`);
    assert.equal(await page.evaluate(() => window.l.connection.status), "connected");
    t.diagnostic(`${transport}: ${refreshes} refresh, statuses ${statuses.join(" ")}`);
  }
});

test("without refresh: the expiry ends the connection with 4003, then the page is signed out", async () => {
  for (const transport of transports) {
    const channel = `creds:${transport}-${Date.now().toString(36)}`;
    const page = await open(`hal-${transport}-${Date.now().toString(36)}`, transport, channel, 1000, false);
    await page.waitForFunction(() => window.l.connection.status === "signed-out", undefined, { timeout: 5000 });
    const ends = await page.evaluate(() => window.ends);
    if (transport !== "poll") {
      // A poller between polls may meet the expiry as the 401 of its next poll.
      assert.deepStrictEqual(ends[0], { code: 4003, reason: "credentials expired", retry: true, transport }, transport);
    }
    assert.equal(ends.at(-1).code, 401, `${transport}: the reconnection is refused`);
  }
});
