// Long-polling in headless Chromium against the Go test server: channels
// that enter a poll with a cursor (saved by the page, or reached over the
// stream before a buffering proxy sent the client back to polling) are
// acknowledged and receive every later publication, and a poll answer that
// brings nothing new never makes the page poll in a loop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage, range } from "./harness.js";

const suite = browserSuite();

const seq = (cursor) => Number(cursor.split(".")[0]);

// countPolls records the long-polls page sends, each as {at, query}.
function countPolls(page) {
  const polls = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/api/live" && u.searchParams.has("poll")) polls.push({ at: Date.now(), query: u.searchParams });
  });
  return polls;
}

// follow makes a connection in the page as window.l with options, and
// follows channel from cursor into window.got (each publication's i and
// cursor) and window.acks (the acknowledgements' cursors).
async function follow(page, channel, cursor, options) {
  await page.evaluate(({ channel, cursor, options }) => {
    window.got = [];
    window.acks = [];
    window.transports = [];
    window.l = window.live.createLive({ ...options, fetch: window.pollFetch });
    window.l.onStatus((c) => window.transports.at(-1) !== c.transport && window.transports.push(c.transport));
    window.l.subscribe(channel, (data, meta) => window.got.push({ i: data.i, seq: Number(meta.cursor.split(".")[0]) }), {
      cursor: cursor ?? undefined,
      onSubscribed: (c) => window.acks.push(c),
    });
  }, { channel, cursor, options });
}

// publish publishes n messages on channel, 10 at a time every gap ms, and
// resolves with the cursor of the last.
async function publish(channel, n, gap = 50) {
  let cursor;
  for (let k = 0; k < n / 10; k++) {
    ({ cursor } = await suite.server.post(`/test/publish?channel=${channel}&n=10`));
    await new Promise((r) => setTimeout(r, gap));
  }
  return cursor;
}

// waitGot waits until the page has n publications and returns their
// sequence numbers.
async function waitGot(page, n, timeout = 30000) {
  await page.waitForFunction((n) => window.got.length >= n, n, { timeout })
    .catch(async (e) => assert.fail(`${e.message}: ${await page.evaluate(() => JSON.stringify({ got: window.got.length, acks: window.acks, transports: window.transports }))}`));
  return page.evaluate(() => window.got.map((m) => m.seq));
}

test("poll: a saved cursor resumed over long-poll receives every later publication", async () => {
  const page = await suite.open();
  const polls = countPolls(page);
  const saved = await publish("poll:saved", 30, 0);
  await publish("poll:saved", 20, 0); // missed while the page was away
  await follow(page, "poll:saved", saved, { transport: "poll" });
  await publish("poll:saved", 200); // while it polls
  const got = await waitGot(page, 220);
  assert.deepStrictEqual(got, range(seq(saved) + 1, seq(saved) + 220), "every publication after the cursor, once, in order");
  const acks = await page.evaluate(() => window.acks);
  assert.equal(acks.length, 1, `acknowledged once: ${acks}`);
  assert.equal(polls[0].query.get("cursor.poll:saved"), saved);
  assert.equal(polls[0].query.get("ack"), "poll:saved", "the first poll asks for the acknowledgement it lacks");
  assert.ok(polls.slice(1).every((p) => !p.query.has("ack")), "later polls do not");
});

test("poll: behind a buffering proxy, every publication arrives through probes poll → SSE → poll", async () => {
  await suite.server.post("/test/proxy?mode=refuse-upgrade,buffer");
  try {
    const p = await openPage(suite.browser, suite.server.proxyURL);
    suite.pages.push(p);
    const page = p.page;
    await follow(page, "poll:proxy", null, { url: "/ws", firstFrameTimeout: 1000, probeInterval: 2000 });
    await page.waitForFunction(() => window.l.transport === "poll" && window.acks.length > 0, undefined, { timeout: 15000 });
    const { cursor: start } = await suite.server.post("/test/publish?channel=poll:proxy&n=1");
    // 300 publications over about 9 s: two probe cycles at least.
    const last = await publish("poll:proxy", 300, 300);
    const got = await waitGot(page, 301);
    assert.deepStrictEqual(got, range(seq(start), seq(last)), "every publication once, in order");
    const transports = await page.evaluate(() => window.transports);
    assert.match(transports.join(" "), /^websocket sse poll sse poll sse poll/, "two probe cycles at least");
  } finally {
    await suite.server.post("/test/proxy?mode=");
  }
});

// The page's polls go through window.pollFetch, which the tests below set
// to play a hub or proxy that answers polls with nothing the client takes,
// and which counts them (in window.polls, when each was sent).
async function withPollFetch(page, mode) {
  await page.evaluate((mode) => {
    window.pollMode = mode;
    window.polls = [];
    window.pollFetch = (url, init) => {
      const u = new URL(url, location.href);
      if (u.searchParams.has("poll")) window.polls.push(performance.now());
      if (u.searchParams.has("poll") && window.pollMode === "empty") {
        // A proxy that answers every poll at once, with nothing.
        return Promise.resolve(new Response("[]", { headers: { "Content-Type": "application/json" } }));
      }
      if (u.searchParams.has("poll") && window.pollMode === "no-ack") {
        // A hub that never acknowledges a channel polled with a cursor:
        // what it sends for it is dropped, so every answer is old news.
        u.searchParams.delete("ack");
      }
      return fetch(u.href, init);
    };
  }, mode);
}

for (const mode of ["no-ack", "empty"]) {
  test(`poll: answers that bring nothing new (${mode}) never make the page poll more than a few times a second`, async () => {
    const page = await suite.open();
    await withPollFetch(page, mode);
    const saved = await publish(`poll:${mode}`, 10, 0);
    await suite.server.post(`/test/publish?channel=poll:${mode}&n=5`); // news at once, for a hub that acknowledged
    await follow(page, `poll:${mode}`, saved, { transport: "poll" });
    await new Promise((r) => setTimeout(r, 3000));
    const n = await page.evaluate(() => window.polls.filter((at) => at < window.polls[0] + 3000).length);
    assert.ok(n <= 8, `${n} polls in 3 s without progress`);
    assert.ok(n >= 2, `${n} polls in 3 s: still polling`);
    assert.deepStrictEqual(await page.evaluate(() => window.got.length), 0);

    // Once answers bring news again, polling goes on at once after each.
    await page.evaluate(() => (window.pollMode = ""));
    const got = await waitGot(page, 5, 15000);
    assert.deepStrictEqual(got, range(seq(saved) + 1, seq(saved) + 5));
    const t1 = Date.now();
    const { cursor } = await suite.server.post(`/test/publish?channel=poll:${mode}&n=1`);
    await waitGot(page, 6, 5000);
    assert.ok(Date.now() - t1 < 1000, `a publication after news took ${Date.now() - t1} ms`);
    assert.equal(await page.evaluate(() => window.got.at(-1).seq), seq(cursor));
  });
}
