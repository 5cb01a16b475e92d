// The SSE transport in headless Chromium against the Go test server: the
// connection's main scenarios with transport "sse" (one stream for every
// channel, resume through drops, resets), the stream reopened when the set
// of channels changes, and the fall back of transport "auto" when the
// WebSocket is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, publishThroughDrops, range, settle } from "./harness.js";

const suite = browserSuite();

// open opens a page that records the many-channel stream requests it makes
// in streams (their URLs), in order. A request naming no channel is not
// one: it asks why a WebSocket was refused.
async function open() {
  const page = await suite.open();
  const streams = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/api/live" && r.method() === "GET" && u.searchParams.get("channels") !== "") streams.push(u);
  });
  return { page, streams };
}

// setup makes a connection in the page as window.l, recording status
// changes in window.statuses and each channel's messages and resets in
// window.got[channel] and window.resets[channel].
async function setup(page, options = {}) {
  await page.evaluate((options) => {
    window.l = window.live.createLive({ transport: "sse", ...options });
    window.statuses = [];
    window.l.onStatus((c) => window.statuses.push({ ...c, at: performance.now() }));
    window.got = {};
    window.resets = {};
    window.acks = {};
    window.errors = {};
    window.stops = {};
    window.follow = (channel, opts = {}) =>
      new Promise((resolve) => {
        window.got[channel] = [];
        window.resets[channel] = [];
        window.errors[channel] = [];
        window.acks[channel] = 0;
        window.stops[channel] = window.l.subscribe(channel, (data, meta) => window.got[channel].push({ data, cursor: meta.cursor }), {
          ...opts,
          onReset: (cursor, reason) => window.resets[channel].push({ cursor, reason }),
          onError: (e) => {
            window.errors[channel].push({ code: e.code, channel: e.channel });
            resolve(null);
          },
          onSubscribed: (cursor) => {
            window.acks[channel]++;
            resolve(cursor);
          },
        });
      });
  }, options);
}

const seq = (cursor) => Number(cursor.split(".")[0]);

test("sse: subscribe, receive and publish on one stream", async () => {
  const { page, streams } = await open();
  await setup(page);
  const cursor = await page.evaluate(() => window.follow("news"));
  assert.match(cursor, /^\d+\.[A-Za-z0-9_-]+$/);
  assert.equal(await page.evaluate(() => window.l.transport), "sse");
  assert.equal(await page.evaluate(() => window.l.connection.status), "connected");
  await suite.server.post("/test/publish?channel=news&n=5");
  await page.waitForFunction(() => window.got.news.length === 5);
  const got = await page.evaluate(() => window.got.news);
  assert.deepStrictEqual(got.map((m) => m.data.i), [1, 2, 3, 4, 5]);
  assert.deepStrictEqual(got.map((m) => seq(m.cursor)), range(seq(cursor) + 1, seq(cursor) + 5));

  // Publishing is a POST; it answers with the cursor, and the stream brings it.
  const published = await page.evaluate(async () => [await window.l.publish("news", { i: 6 }), await window.l.publish("news", { i: 7 })]);
  await page.waitForFunction(() => window.got.news.length === 7);
  assert.deepStrictEqual((await page.evaluate(() => window.got.news)).slice(5).map((m) => m.cursor), published);
  const err = await page.evaluate(() => window.l.publish("board", { x: 1 }).then(() => null, (e) => ({ name: e.name, code: e.code, channel: e.channel, status: e.status })));
  assert.deepStrictEqual(err, { name: "LiveError", code: "state_channel", channel: "board", status: 403 });
  assert.equal(streams.length, 1, `streams: ${streams.join(" ")}`);
});

test("sse: ten channels subscribed together open exactly one stream", async () => {
  const { page, streams } = await open();
  await setup(page);
  const names = Array.from({ length: 10 }, (_, i) => `many:${i}`);
  await page.evaluate((names) => Promise.all(names.map((n) => window.follow(n))), names);
  const statusesBefore = await page.evaluate(() => window.statuses.length);
  for (const n of names) await suite.server.post(`/test/publish?channel=${n}&n=2`);
  await page.waitForFunction((names) => names.every((n) => window.got[n].length === 2), names);
  assert.equal(streams.length, 1, `streams: ${streams.join(" ")}`);
  assert.deepStrictEqual(streams[0].searchParams.get("channels").split(",").sort(), [...names].sort());

  // Leaving and joining in one task reopens the stream once, from the
  // cursors of the channels that stay.
  const before = await page.evaluate(() => window.l.cursor("many:0"));
  await page.evaluate(() => {
    window.stops["many:9"]();
    window.stops["many:8"]();
    window.follow("many:10");
  });
  await page.waitForFunction(() => window.acks["many:10"] === 1);
  assert.equal(streams.length, 2, `streams: ${streams.join(" ")}`);
  const q = streams[1].searchParams;
  assert.equal(q.get("channels").split(",").length, 9);
  assert.ok(!q.get("channels").split(",").includes("many:9"));
  assert.equal(q.get("cursor.many:0"), before);
  assert.equal(q.get("cursor.many:10"), null);
  assert.equal(await page.evaluate(() => window.l.connection.status), "connected");
  const statuses = await page.evaluate(() => window.statuses.map((s) => s.status));
  assert.equal(statuses.length, statusesBefore, `the status changed for a planned reopen: ${statuses}`);
});

test("sse: resume after the server drops the stream: nothing lost, nothing twice", async () => {
  const { page, streams } = await open();
  await setup(page);
  await page.evaluate(() => window.follow("feed"));
  const statusesBefore = await page.evaluate(() => window.statuses.length - 1); // from the stream's "connected" on
  const total = 600;
  const drops = 3;
  await publishThroughDrops(suite, page, total, drops);
  const got = await page.evaluate(() => window.got.feed);
  const positions = got.map((m) => seq(m.cursor));
  assert.deepStrictEqual(positions, range(positions[0], positions[0] + total), "publications lost, repeated or out of order"); // and settle's
  assert.deepStrictEqual(await page.evaluate(() => window.resets.feed), [], "a reset, yet the history window covered the drops");
  const statuses = await page.evaluate((n) => window.statuses.slice(n).map((s) => s.status), statusesBefore);
  assert.equal(statuses.filter((s) => s === "connected").length, drops + 1, `statuses ${statuses}`);
  assert.ok(statuses.includes("disconnected"));
  // Each reconnection asked for the channel from the cursor it had reached.
  assert.equal(streams.length, drops + 1);
  for (const u of streams.slice(1)) assert.match(u.searchParams.get("cursor.feed"), /^\d+\.[A-Za-z0-9_-]+$/);
});

test("sse: a saved cursor resumes with exactly what was missed; one the hub cannot honour resets", async () => {
  const { page } = await open();
  await setup(page);
  const { cursor } = await suite.server.post("/test/publish?channel=saved&n=3");
  await suite.server.post("/test/publish?channel=saved&n=4");
  await page.evaluate((cursor) => Promise.all([window.follow("saved", { cursor }), window.follow("resettable", { cursor: "5.noSuchEpoch" })]), cursor);
  await page.waitForFunction(() => window.got.saved.length === 4 && window.resets.resettable.length === 1);
  const got = await page.evaluate(() => window.got.saved);
  assert.deepStrictEqual(got.map((m) => m.data.i), [1, 2, 3, 4]);
  assert.deepStrictEqual(got.map((m) => seq(m.cursor)), range(seq(cursor) + 1, seq(cursor) + 4));

  const [reset] = await page.evaluate(() => window.resets.resettable);
  assert.equal(reset.reason, "epoch");
  assert.equal(await page.evaluate(() => window.l.cursor("resettable")), reset.cursor);
  await suite.server.post("/test/publish?channel=resettable&n=1");
  await page.waitForFunction(() => window.got.resettable.length === 1);
  const [m] = await page.evaluate(() => window.got.resettable);
  assert.equal(seq(m.cursor), seq(reset.cursor) + 1);
});

test("sse: away longer than the history: reset, then live again", async () => {
  const { page } = await open();
  await setup(page);
  await page.evaluate(() => window.follow("long"));
  await suite.server.post("/test/publish?channel=long&n=3");
  await page.waitForFunction(() => window.got.long.length === 3);

  await suite.server.post("/test/pause?transport=sse");
  try {
    await suite.server.post("/test/drop");
    await page.waitForFunction(() => window.l.connection.status !== "connected");
    const { cursor: head } = await suite.server.post("/test/publish?channel=long&n=1100"); // beyond the history of 1024
    await page.waitForFunction(() => window.statuses.filter((s) => s.status === "error").length >= 2, undefined, { timeout: 10000 });
    await suite.server.post("/test/resume?transport=sse");
    await page.waitForFunction(() => window.resets.long.length === 1, undefined, { timeout: 10000 });
    const [reset] = await page.evaluate(() => window.resets.long);
    assert.deepStrictEqual(reset, { cursor: head, reason: "gone" });
  } finally {
    await suite.server.post("/test/resume?transport=sse");
  }
  assert.equal((await page.evaluate(() => window.got.long)).length, 3, "publications replayed despite the reset");
  await suite.server.post("/test/publish?channel=long&n=1");
  await page.waitForFunction(() => window.got.long.length === 4);
  const statuses = await page.evaluate(() => window.statuses);
  assert.ok(statuses.some((s) => s.status === "connecting" && s.reconnectAttempt >= 1));
  assert.deepStrictEqual(statuses.at(-1), { ...statuses.at(-1), status: "connected", reconnectAttempt: 0 });
});

test("sse: a refused channel reports its error and the others stream", async () => {
  const { page, streams } = await open();
  await setup(page);
  const [bad, , only] = await page.evaluate(() => Promise.all([window.follow("bad channel!"), window.follow("fine"), window.follow("a,b")]));
  assert.equal(bad, null);
  assert.equal(only, null);
  assert.deepStrictEqual(await page.evaluate(() => window.errors["bad channel!"]), [{ code: "bad_channel", channel: "bad channel!" }]);
  assert.deepStrictEqual(await page.evaluate(() => window.errors["a,b"]), [{ code: "bad_channel", channel: "a,b" }]);
  await suite.server.post("/test/publish?channel=fine&n=1");
  await page.waitForFunction(() => window.got.fine.length === 1);
  assert.deepStrictEqual(streams.map((u) => u.searchParams.get("channels")), ["fine"]);
  assert.equal(await page.evaluate(() => window.l.connection.status), "connected");
});

test("auto: a WebSocket refused on the way falls back to one SSE stream, until a probe finds WebSockets work", async () => {
  await suite.server.post("/test/pause"); // /ws answers 503, as a proxy refusing the upgrade would
  try {
    const { page, streams } = await open();
    await page.evaluate(() => {
      window.l = window.live.createLive(); // transport "auto", url "/ws", sseURL "/api/live"
      window.statuses = [];
      window.l.onStatus((c) => window.statuses.push(c.status));
      window.got = [];
      window.other = [];
      window.l.subscribe("fallback", (d) => window.got.push(d.i));
      window.l.subscribe("fallback:2", (d) => window.other.push(d.i));
      window.published = window.l.publish("fallback", { i: 0 }); // waits for the transport
    });
    await page.waitForFunction(() => window.l.transport === "sse" && window.l.connection.status === "connected", undefined, { timeout: 10000 });
    assert.match(await page.evaluate(() => window.published), /^\d+\.[A-Za-z0-9_-]+$/);
    await suite.server.post("/test/publish?channel=fallback&n=2");
    await suite.server.post("/test/publish?channel=fallback:2&n=1");
    // The publish that waited went out as a POST once the fall back had
    // happened, at about the time the stream opened: it may or may not be seen.
    await page.waitForFunction(() => window.got.filter((i) => i > 0).length === 2 && window.other.length === 1);
    assert.deepStrictEqual(await page.evaluate(() => window.got.filter((i) => i > 0)), [1, 2]);
    assert.equal(streams.length, 1);
    // Connecting over WebSocket, then over SSE, then connected.
    assert.deepStrictEqual(await page.evaluate(() => window.statuses), ["connecting", "connecting", "connected"]);

    // WebSockets work again, the stream drops: the page stays on SSE (until
    // its first probe, 30 s after the move).
    await suite.server.post("/test/resume");
    await suite.server.post("/test/drop");
    await page.waitForFunction(() => window.statuses.filter((s) => s === "connected").length === 2, undefined, { timeout: 10000 });
    assert.equal(await page.evaluate(() => window.l.transport), "sse");
    assert.equal(streams.length, 2);
    await suite.server.post("/test/publish?channel=fallback&n=1");
    await page.waitForFunction(() => window.got.filter((i) => i > 0).length === 3);
  } finally {
    await suite.server.post("/test/resume");
  }
});

test("auto: a WebSocket that opens is kept, and a later failure does not fall back", async () => {
  const { page, streams } = await open();
  await page.evaluate(() =>
    new Promise((resolve) => {
      window.l = window.live.createLive();
      window.got = [];
      window.acks = 0;
      window.l.subscribe("kept", (d) => window.got.push(d.i), {
        onSubscribed: () => {
          window.acks++;
          resolve();
        },
      });
    }));
  assert.equal(await page.evaluate(() => window.l.transport), "websocket");
  await suite.server.post("/test/pause");
  try {
    await suite.server.post("/test/drop");
    await page.waitForFunction(() => window.l.connection.reconnectAttempt >= 2, undefined, { timeout: 10000 });
    assert.equal(await page.evaluate(() => window.l.transport), "websocket");
  } finally {
    await suite.server.post("/test/resume");
  }
  await page.waitForFunction(() => window.acks === 2, undefined, { timeout: 10000 });
  await suite.server.post("/test/publish?channel=kept&n=1");
  await page.waitForFunction(() => window.got.length === 1);
  assert.equal(streams.length, 0);
});

test("sse: channels joining and leaving while another streams: it loses nothing and repeats nothing", async () => {
  const { page, streams } = await open();
  await setup(page);
  await page.evaluate(() => window.follow("steady"));
  const statusesBefore = await page.evaluate(() => window.statuses.length);
  const total = 300;
  const publishing = (async () => {
    for (let k = 0; k < total / 10; k++) {
      await suite.server.post("/test/publish?channel=steady&n=10");
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  // Twenty changes of the set, each reopening the stream.
  for (let i = 0; i < 20; i++) {
    await page.evaluate((i) => {
      if (i % 2 === 0) window.follow(`churn:${i}`);
      else window.stops[`churn:${i - 1}`]();
    }, i);
    await new Promise((r) => setTimeout(r, 30));
  }
  await publishing;
  await page.waitForFunction((n) => window.got.steady.length >= n, total);
  await settle(suite, page, "steady", total);
  const positions = (await page.evaluate(() => window.got.steady)).map((m) => seq(m.cursor));
  assert.deepStrictEqual(positions, range(positions[0], positions[0] + total), "publications lost, repeated or out of order"); // and settle's
  assert.deepStrictEqual(await page.evaluate(() => window.resets.steady), []);
  assert.ok(streams.length >= 10 && streams.length <= 21, `${streams.length} streams for 20 changes`);
  for (const u of streams.slice(1)) assert.match(u.searchParams.get("cursor.steady"), /^\d+\.[A-Za-z0-9_-]+$/);
  const statuses = await page.evaluate(() => window.statuses.map((s) => s.status));
  assert.equal(statuses.length, statusesBefore, `a planned reopen changed the status: ${statuses}`);
  assert.equal(statuses.at(-1), "connected");
});
