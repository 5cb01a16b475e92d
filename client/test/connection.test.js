// The connection in headless Chromium against the Go test server:
// subscribe, publish, resume after a drop without loss or duplicate, and
// resets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, publishThroughDrops, range } from "./harness.js";

const suite = browserSuite();
const open = () => suite.open();

// setup makes a connection in the page as window.l, recording status
// changes in window.statuses and each channel's messages and resets in
// window.got[channel] and window.resets[channel].
async function setup(page, options = {}) {
  await page.evaluate((options) => {
    window.l = window.live.createLive({ url: "/ws", ...options });
    window.statuses = [];
    window.l.onStatus((c) => window.statuses.push({ ...c, at: performance.now() }));
    window.got = {};
    window.resets = {};
    window.acks = {};
    window.follow = (channel, opts = {}) =>
      new Promise((resolve) => {
        window.got[channel] = [];
        window.resets[channel] = [];
        window.acks[channel] = 0;
        window.l.subscribe(channel, (data, meta) => window.got[channel].push({ data, cursor: meta.cursor }), {
          ...opts,
          onReset: (cursor, reason) => window.resets[channel].push({ cursor, reason }),
          onSubscribed: (cursor) => {
            window.acks[channel]++;
            resolve(cursor);
          },
        });
      });
  }, options);
}

const seqs = (got) => got.map((m) => m.data.i);

test("subscribe and receive", async () => {
  const page = await open();
  await setup(page);
  const cursor = await page.evaluate(() => window.follow("news"));
  assert.match(cursor, /^\d+\.[A-Za-z0-9_-]+$/);
  await suite.server.post("/test/publish?channel=news&n=5");
  await page.waitForFunction(() => window.got.news.length === 5);
  const got = await page.evaluate(() => window.got.news);
  assert.deepStrictEqual(seqs(got), [1, 2, 3, 4, 5]);
  const start = Number(cursor.split(".")[0]);
  assert.deepStrictEqual(got.map((m) => Number(m.cursor.split(".")[0])), range(start + 1, start + 5));
  assert.equal(await page.evaluate(() => window.l.connection.status), "connected");
});

test("two subscribers of a channel share it, and one can leave", async () => {
  const page = await open();
  await setup(page);
  await page.evaluate(() => window.follow("shared"));
  await page.evaluate(() => {
    window.second = [];
    window.stopSecond = window.l.subscribe("shared", (d) => window.second.push(d.i));
  });
  await suite.server.post("/test/publish?channel=shared&n=2");
  await page.waitForFunction(() => window.got.shared.length === 2 && window.second.length === 2);
  await page.evaluate(() => window.stopSecond());
  await suite.server.post("/test/publish?channel=shared&n=1");
  await page.waitForFunction(() => window.got.shared.length === 3);
  assert.deepStrictEqual(await page.evaluate(() => window.second), [1, 2]);
});

test("publish is acknowledged with its cursor and reaches subscribers", async () => {
  const [a, b] = [await open(), await open()];
  await setup(a);
  await setup(b);
  await b.evaluate(() => window.follow("chat"));
  // Published before the socket is open: held until it is, never sent early.
  const cursors = await a.evaluate(async () => {
    const l = window.live.createLive({ url: "/ws" });
    try {
      return await Promise.all([l.publish("chat", { i: 1 }), l.publish("chat", { i: 2 })]);
    } finally {
      l.close();
    }
  });
  assert.equal(cursors.length, 2);
  await b.waitForFunction(() => window.got.chat.length === 2);
  const got = await b.evaluate(() => window.got.chat);
  assert.deepStrictEqual(seqs(got), [1, 2]);
  assert.deepStrictEqual(got.map((m) => m.cursor), cursors);

  // The hub refuses publishing on a State channel: the promise says why.
  const err = await a.evaluate(() => window.l.publish("board", { x: 1 }).then(() => null, (e) => ({ name: e.name, code: e.code })));
  assert.deepStrictEqual(err, { name: "LiveError", code: "state_channel" });
});

test("resume after the server drops the connection: nothing lost, nothing twice", async () => {
  const page = await open();
  await setup(page);
  await page.evaluate(() => window.follow("feed"));
  const total = 600;
  const drops = 3;
  await publishThroughDrops(suite, page, total, drops);
  const got = await page.evaluate(() => window.got.feed);
  // The publisher's payloads count 1..10 per batch: check by cursor.
  const positions = got.map((m) => Number(m.cursor.split(".")[0]));
  const first = positions[0];
  assert.deepStrictEqual(positions, range(first, first + total), "publications lost, repeated or out of order"); // and settle's
  assert.deepStrictEqual(await page.evaluate(() => window.resets.feed), [], "a reset, yet the history window covered the drops");
  const statuses = await page.evaluate(() => window.statuses.map((s) => s.status));
  assert.equal(statuses.filter((s) => s === "connected").length, drops + 1, `statuses ${statuses}`);
  assert.ok(statuses.includes("disconnected"));
});

test("a cursor the hub cannot resume from resets the channel", async () => {
  const page = await open();
  await setup(page);
  await page.evaluate(() => window.follow("resettable", { cursor: "5.noSuchEpoch" }));
  await page.waitForFunction(() => window.resets.resettable.length === 1);
  const [reset] = await page.evaluate(() => window.resets.resettable);
  assert.equal(reset.reason, "epoch");
  assert.equal(await page.evaluate(() => window.l.cursor("resettable")), reset.cursor);
  await suite.server.post("/test/publish?channel=resettable&n=1");
  await page.waitForFunction(() => window.got.resettable.length === 1);
  const [m] = await page.evaluate(() => window.got.resettable);
  assert.equal(Number(m.cursor.split(".")[0]), Number(reset.cursor.split(".")[0]) + 1);
});

test("away longer than the history: reset, then live again", async () => {
  const page = await open();
  await setup(page);
  await page.evaluate(() => window.follow("long"));
  await suite.server.post("/test/publish?channel=long&n=3");
  await page.waitForFunction(() => window.got.long.length === 3);

  await suite.server.post("/test/pause"); // reconnections are refused until resume
  await suite.server.post("/test/drop");
  await page.waitForFunction(() => window.l.connection.status !== "connected");
  const { cursor: head } = await suite.server.post("/test/publish?channel=long&n=1100"); // beyond the history of 1024
  await suite.server.post("/test/resume");

  await page.waitForFunction(() => window.resets.long.length === 1, undefined, { timeout: 10000 });
  const [reset] = await page.evaluate(() => window.resets.long);
  assert.deepStrictEqual(reset, { cursor: head, reason: "gone" });
  assert.equal((await page.evaluate(() => window.got.long)).length, 3, "publications replayed despite the reset");
  await suite.server.post("/test/publish?channel=long&n=1");
  await page.waitForFunction(() => window.got.long.length === 4);
  assert.ok(await page.evaluate(() => window.statuses.some((s) => s.status === "connecting" && s.reconnectAttempt >= 1)));
});

test("a subscription refused by the hub reports its error", async () => {
  const page = await open();
  await setup(page);
  const err = await page.evaluate(() =>
    new Promise((resolve) => {
      window.l.subscribe("bad channel!", () => {}, { onError: (e) => resolve({ code: e.code, channel: e.channel }) });
    }));
  assert.deepStrictEqual(err, { code: "bad_channel", channel: "bad channel!" });
});

test("close: no reconnection, publishes fail", async () => {
  const page = await open();
  await setup(page);
  await page.evaluate(() => window.follow("closing"));
  const result = await page.evaluate(async () => {
    window.l.close();
    const err = await window.l.publish("closing", { i: 1 }).catch((e) => e.code);
    await new Promise((r) => setTimeout(r, 1500));
    return { err, status: window.l.connection.status, statuses: window.statuses.map((s) => s.status) };
  });
  assert.equal(result.err, "closed");
  assert.equal(result.status, "disconnected");
  assert.equal(result.statuses.at(-1), "disconnected");
  assert.ok(!result.statuses.slice(result.statuses.lastIndexOf("connected") + 1).includes("connecting"), `statuses ${result.statuses}`);
});

test("revoked by the server: the channel stops at once on each transport, and a banned user is cut off", async () => {
  for (const transport of ["websocket", "sse"]) {
    const user = `carol-${transport}`;
    const page = await open();
    await page.evaluate((user) => {
      document.cookie = `user=${user}; path=/`;
    }, user);
    await setup(page, { transport });
    await page.evaluate(() => {
      window.errors = [];
      return Promise.all([
        window.follow("private:team", { onError: (e) => window.errors.push({ code: e.code, channel: e.channel }) }),
        window.follow("sentinel"),
      ]);
    });
    await suite.server.post("/test/publish?channel=private:team&n=2");
    await page.waitForFunction(() => window.got["private:team"].length === 2);

    await suite.server.post(`/test/revoke?user=${user}&channel=private:team`);
    await page.waitForFunction(() => window.errors.length === 1);
    assert.deepStrictEqual(await page.evaluate(() => window.errors), [{ code: "forbidden", channel: "private:team" }]);
    // Nothing more of it arrives: the sentinel published after it comes, the channel's do not.
    await suite.server.post("/test/publish?channel=private:team&n=3");
    await suite.server.post("/test/publish?channel=sentinel&n=1");
    await page.waitForFunction(() => window.got.sentinel.length === 1);
    assert.equal(await page.evaluate(() => window.got["private:team"].length), 2, transport);

    // Banned: disconnected for good (endings.test.js has the details).
    await suite.server.post(`/test/revoke?user=${user}`);
    await page.waitForFunction(() => window.l.connection.status === "removed");
    await suite.server.post("/test/publish?channel=sentinel&n=2");
    assert.notEqual(await page.evaluate(() => window.l.connection.status), "connected", transport);
    assert.equal(await page.evaluate(() => window.got.sentinel.length), 1, `${transport}: the banned page got more`);
    await page.evaluate(() => window.l.close());
    await page.evaluate(() => {
      document.cookie = "user=; path=/; max-age=0";
    });
  }
});

test("compression: large messages reach a browser that negotiated permessage-deflate intact", async () => {
  const page = await open();
  const extensions = await page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/wsz`);
        ws.onopen = () => {
          resolve(ws.extensions);
          ws.close();
        };
        ws.onerror = reject;
      }),
  );
  assert.match(extensions, /permessage-deflate/);
  await setup(page, { url: "/wsz" });
  await page.evaluate(() => window.follow("zipped"));
  // Below and above the size from which the hub compresses.
  await suite.server.post("/test/publish?channel=zipped&n=3&pad=100");
  await suite.server.post("/test/publish?channel=zipped&n=20&pad=4000");
  await page.waitForFunction(() => window.got.zipped.length === 23);
  const got = await page.evaluate(() => window.got.zipped.map((m) => [m.data.i, m.data.pad.length]));
  assert.deepStrictEqual(got, [...range(1, 3).map((i) => [i, 100]), ...range(1, 20).map((i) => [i, 4000])]);
});
