// A node drained for a deploy (Hub.Drain), in headless Chromium against
// the Go test server's front (/d/…), which stands for a load balancer in
// front of nodes sharing a broker: live.js, on each transport, and a plain
// EventSource come back on the next node after the delay they were told,
// from their cursors, losing and repeating nothing while publications go
// on; a connection the draining node turns away (503, Retry-After) is
// tried again after that long, not at the backoff's pace.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, range } from "./harness.js";

const suite = browserSuite();

const front = () => suite.server.request("GET", "/test/front").then((r) => r.body);

// publishDuring publishes total numbered publications on channel, 10 every
// 40 ms, while during() runs.
async function publishDuring(channel, total, during) {
  const publishing = (async () => {
    for (let k = 0; k < total; k += 10) {
      await suite.server.post(`/test/publish?channel=${channel}&n=10&from=${k}`);
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  await during();
  await publishing;
}

for (const transport of ["websocket", "sse", "poll"]) {
  test(`${transport}: a drain moves the page to the next node, losing nothing`, async () => {
    const channel = `drain-${transport}`;
    const page = await suite.open();
    // A backoff this short would show at once if the drain's delay were ignored.
    await page.evaluate(({ transport, channel }) => new Promise((resolve) => {
      window.l = window.live.createLive({ url: "/d/ws", sseURL: "/d/api/live", transport, minBackoff: 50, maxBackoff: 100 });
      window.got = [];
      window.ends = [];
      window.statuses = [];
      window.acks = 0;
      window.l.onEnd((e) => window.ends.push({ ...e, at: Date.now() }));
      window.l.onStatus((c) => window.statuses.push({ status: c.status, at: Date.now() }));
      window.l.subscribe(channel, (d) => window.got.push(d.i), { onSubscribed: () => window.acks++ || resolve() });
    }), { transport, channel });
    await page.waitForFunction(() => window.l.connection.status === "connected");
    const before = (await front()).node;

    const total = 200;
    await publishDuring(channel, total, async () => {
      await page.waitForFunction(() => window.got.length >= 20);
      await suite.server.post("/test/drain?window=400");
    });
    await page.waitForFunction((n) => window.got.length >= n, total, { timeout: 15000 })
      .catch(async (e) => assert.fail(`${e.message}: ${await page.evaluate(() => JSON.stringify({ got: window.got.length, ends: window.ends, statuses: window.statuses }))}`));
    assert.deepStrictEqual(await page.evaluate(() => window.got), range(1, total), "every publication once, in order");
    assert.equal((await front()).node, before + 1);

    const { ends, statuses, acks } = await page.evaluate(() => ({ ends: window.ends, statuses: window.statuses, acks: window.acks }));
    // A poller whose poll was not held on the drained node just polls the
    // next one, as the front sends each request to the node in front.
    if (transport === "poll" && ends.length === 0) return;
    assert.equal(ends.length, 1, JSON.stringify(ends));
    const [end] = ends;
    assert.equal(end.code, 1012);
    assert.equal(end.retry, true);
    const delay = Number(/retry in (\d+) ms/.exec(end.reason)?.[1]);
    assert.ok(delay >= 100 && delay < 1000, end.reason);
    assert.ok(acks >= 2, "subscribed again on the next node");
    // No error or offline flash: connecting while it waits, then connected,
    // not before the delay it was told.
    const after = statuses.filter((s) => s.at >= end.at);
    assert.ok(after.every((s) => s.status === "connecting" || s.status === "connected"), JSON.stringify(after));
    const back = after.find((s) => s.status === "connected");
    assert.ok(back && back.at - end.at >= delay - 50, `connected ${back?.at - end.at} ms after the ending, told ${delay} ms`);
  });
}

// (A poller is served until its turn in the window, then told to go: it
// meets no 503. After a WebSocket that did not open, live.js learns of the
// 503 by asking the stream URL, which races its backoff: not tested here.)
for (const transport of ["sse"]) {
  test(`${transport}: a draining node's 503 and Retry-After are honoured`, async () => {
    const channel = `retry-after-${transport}`;
    const page = await suite.open();
    await page.evaluate(({ transport, channel }) => new Promise((resolve) => {
      window.l = window.live.createLive({ url: "/d/ws", sseURL: "/d/api/live", transport, minBackoff: 50, maxBackoff: 100 });
      window.got = [];
      window.errors = [];
      window.l.onError((e) => window.errors.push(e.code));
      window.l.subscribe(channel, (d) => window.got.push(d.i), { onSubscribed: resolve });
    }), { transport, channel });
    await page.waitForFunction(() => window.l.connection.status === "connected");

    // The node drains but stays in front: the page's next attempts meet its 503s.
    await suite.server.post("/test/drain?window=200&switch=0");
    await new Promise((r) => setTimeout(r, 3500));
    const { attempts } = await front();
    await suite.server.post("/test/switch");
    await suite.server.post(`/test/publish?channel=${channel}&n=3`);
    await page.waitForFunction(() => window.got.length === 3, undefined, { timeout: 10000 });

    // The drain's delay (0.1–1 s), then attempts at least a second apart
    // (Retry-After 1 s), where the backoff alone would try every 100 ms.
    assert.ok(attempts.length >= 1 && attempts.length <= 4, `attempts at ${attempts} ms`);
    assert.ok(attempts[0] >= 90, `first attempt ${attempts[0]} ms after the drain began`);
    for (let k = 1; k < attempts.length; k++) {
      assert.ok(attempts[k] - attempts[k - 1] >= 950, `attempts at ${attempts} ms`);
    }
    assert.deepStrictEqual(await page.evaluate(() => window.errors), [], "a drain is no error");
  });
}

test("poll: a poller is served until its turn in the drain, then told to go", async () => {
  const channel = "drain-poller";
  const page = await suite.open();
  await page.evaluate((channel) => new Promise((resolve) => {
    window.l = window.live.createLive({ url: "/d/ws", sseURL: "/d/api/live", transport: "poll", minBackoff: 50, maxBackoff: 100 });
    window.got = [];
    window.ends = [];
    window.errors = [];
    window.l.onEnd((e) => window.ends.push(e));
    window.l.onError((e) => window.errors.push(e.code));
    window.l.subscribe(channel, (d) => window.got.push(d.i), { onSubscribed: resolve });
  }), channel);
  // The node drains but stays in front: the poller meets its turn there.
  await suite.server.post("/test/drain?window=300&switch=0");
  await publishDuring(channel, 50, async () => {
    await page.waitForFunction(() => window.ends.length >= 1, undefined, { timeout: 5000 });
    await suite.server.post("/test/switch");
  });
  await page.waitForFunction(() => window.got.length >= 50, undefined, { timeout: 10000 });
  assert.deepStrictEqual(await page.evaluate(() => window.got), range(1, 50), "every publication once, in order");
  const { ends, errors } = await page.evaluate(() => ({ ends: window.ends, errors: window.errors }));
  assert.ok(ends.every((e) => e.code === 1012 && /^restart; retry in \d+ ms$/.test(e.reason)), JSON.stringify(ends));
  assert.deepStrictEqual(errors, [], "a drain is no error");
});

test("a plain EventSource follows the drain's retry and resumes with Last-Event-ID", async () => {
  const channel = "drain-eventsource";
  const page = await suite.open();
  await page.evaluate((channel) => new Promise((resolve) => {
    window.got = [];
    window.opens = 0;
    window.es = new EventSource(`/d/api/live/${channel}`);
    window.es.onopen = () => window.opens++ || resolve();
    window.es.onmessage = (e) => window.got.push(JSON.parse(e.data).i);
    window.cleanup = () => window.es.close();
  }), channel);
  const total = 200;
  await publishDuring(channel, total, async () => {
    await page.waitForFunction(() => window.got.length >= 20);
    await suite.server.post("/test/drain?window=400");
  });
  await page.waitForFunction((n) => window.got.length >= n, total, { timeout: 15000 });
  assert.deepStrictEqual(await page.evaluate(() => window.got), range(1, total), "every publication once, in order");
  assert.ok(await page.evaluate(() => window.opens) >= 2, "reconnected");
});
