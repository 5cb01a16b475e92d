// Endings the server decides, in headless Chromium against the Go test
// server, on each transport: a user the application removes
// (Hub.Disconnect) or refuses on reconnection (Identify: 401) hears why
// within a second through onEnd, stops reconnecting, shows "removed" or
// "signed-out", and connects again with connect() once logged in again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite } from "./harness.js";

const suite = browserSuite();

const transports = ["websocket", "sse", "poll"];

// A client that kept reconnecting with these backoffs would try at least
// once every 200 ms: over quiet ms it would make 10 attempts or more,
// where the default backoff (1 s doubling to 30 s) makes about 5 in 20 s.
// So "at most 3 attempts in quiet ms" at this backoff is the stricter
// form of "at most 3 in the next 20 s", and takes 2 s.
const backoff = { minBackoff: 100, maxBackoff: 200 };
const quiet = 2000;

// signIn opens a page as user (the test server's "user" cookie) with a
// connection over transport as window.l, following "endings:news"; it
// records onEnd calls in window.ends and statuses in window.statuses,
// and resolves once the channel is acknowledged.
async function signIn(user, transport) {
  const page = await suite.open();
  await page.evaluate(({ user, transport, backoff }) => {
    document.cookie = `user=${user}; path=/`;
    window.l = window.live.createLive({ url: "/ws", transport, ...backoff });
    window.ends = [];
    window.statuses = [];
    window.got = [];
    window.l.onEnd((e) => window.ends.push({ ...e, at: performance.now() }));
    window.l.onStatus((c) => window.statuses.push(c.status));
    window.cleanup = () => {
      document.cookie = "user=; path=/; max-age=0";
    };
    return new Promise((resolve) => window.l.subscribe("endings:news", (data) => window.got.push(data.i), { onSubscribed: resolve }));
  }, { user, transport, backoff });
  await page.waitForFunction(() => window.l.connection.status === "connected");
  // A poller is connected only while a poll is held: the first poll
  // answered the acknowledgement, so wait for the next.
  if (transport === "poll") await waitAttempts(user, 2);
  return page;
}

async function waitAttempts(user, n) {
  const deadline = Date.now() + 5000;
  while ((await attempts(user)) < n) {
    if (Date.now() > deadline) throw new Error(`${user} made fewer than ${n} connection attempts`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const attempts = (user) => suite.server.request("GET", `/test/attempts?user=${user}`).then((r) => r.body);

// ended waits for the page's first ending and returns it with how long
// after since (the page's clock) it came.
async function ended(page, since) {
  await page.waitForFunction(() => window.ends.length > 0, undefined, { timeout: 5000 });
  const { at, ...ending } = await page.evaluate(() => window.ends[0]);
  return { ending, after: at - since };
}

// staysEnded checks that the page, ended with status, tries at most 3
// connections over the quiet window and is still ended after it.
async function staysEnded(page, user, status, transport) {
  const before = await attempts(user);
  await new Promise((r) => setTimeout(r, quiet));
  const tried = (await attempts(user)) - before;
  assert.ok(tried <= 3, `${transport}: ${tried} connection attempts in ${quiet} ms after a final ending`);
  const c = await page.evaluate(() => window.l.connection);
  assert.equal(c.status, status, transport);
  assert.equal(await page.evaluate(() => window.ends.length), 1, `${transport}: one ending`);
  return tried;
}

// comesBack logs user in again, calls connect(), and checks that the
// channel resumes: what was published meanwhile arrives.
async function comesBack(page, user, transport) {
  await suite.server.post(`/test/login?user=${user}`);
  await suite.server.post("/test/publish?channel=endings:news&n=2");
  await page.evaluate(() => window.l.connect());
  await page.waitForFunction(() => window.l.connection.status === "connected", undefined, { timeout: 5000 });
  await page.waitForFunction(() => window.got.length >= 2, undefined, { timeout: 5000 });
  assert.equal(await page.evaluate(() => window.l.connection.ending), null, `${transport}: a connection that opens clears the ending`);
}

test("removed by the application (Hub.Disconnect): the ending within 1 s on each transport, no reconnection, connect() after a new login", async (t) => {
  for (const transport of transports) {
    const user = `dana-${transport}-${Date.now().toString(36)}`;
    const page = await signIn(user, transport);
    const since = await page.evaluate(() => performance.now());
    await suite.server.post(`/test/revoke?user=${user}`); // bans and disconnects
    const { ending, after } = await ended(page, since);
    assert.deepStrictEqual(ending, { code: 4001, reason: "disconnected by the server", retry: false, transport });
    assert.ok(after < 1000, `${transport}: the ending came ${after} ms after the removal`);
    await page.waitForFunction(() => window.l.connection.status === "removed");
    assert.deepStrictEqual(await page.evaluate(() => window.l.connection.ending), ending);
    const tried = await staysEnded(page, user, "removed", transport);
    t.diagnostic(`${transport}: onEnd ${after.toFixed(0)} ms after the removal, ${tried} attempts in ${quiet} ms`);
    assert.equal(tried, 0, `${transport}: no attempt at all`);
    await comesBack(page, user, transport);
  }
});

test("refused on reconnection (Identify: 401): signed-out on each transport, no more attempts, connect() after a new login", async (t) => {
  for (const transport of transports) {
    const user = `erin-${transport}-${Date.now().toString(36)}`;
    const page = await signIn(user, transport);
    // The session ends without the server saying so (expired, say), then
    // the connection drops: the reconnection is refused.
    await suite.server.post(`/test/ban?user=${user}`);
    const since = await page.evaluate(() => performance.now());
    await suite.server.post("/test/drop");
    const { ending, after } = await ended(page, since);
    assert.equal(ending.code, 401, transport);
    assert.equal(ending.retry, false, transport);
    assert.equal(ending.reason, "banned", transport);
    assert.ok(after < 1000, `${transport}: the ending came ${after} ms after the drop`);
    await page.waitForFunction(() => window.l.connection.status === "signed-out");
    const tried = await staysEnded(page, user, "signed-out", transport);
    t.diagnostic(`${transport}: onEnd ${after.toFixed(0)} ms after the drop, ${tried} attempts in ${quiet} ms`);
    await comesBack(page, user, transport);
  }
});

test("endings the server does not mean as final are reported, and followed by a reconnection", async () => {
  for (const transport of ["websocket", "sse"]) {
    const page = await signIn(`finn-${transport}-${Date.now().toString(36)}`, transport);
    // A graceful restart: WebSockets close with 1001, streams say so.
    await suite.restart(0).catch(() => {}); // a kill: nothing said
    await page.waitForFunction(() => window.l.connection.status === "connected", undefined, { timeout: 10000 });
    assert.equal(await page.evaluate(() => window.ends.length), 0, `${transport}: a crash says nothing`);
    const stopped = suite.server.stop();
    await page.waitForFunction(() => window.ends.length > 0, undefined, { timeout: 5000 });
    await stopped;
    const { at, ...ending } = await page.evaluate(() => window.ends[0]);
    assert.deepStrictEqual(ending, { code: 1001, reason: "server shutting down", retry: true, transport });
    const { startServer } = await import("./harness.js");
    suite.server = await startServer(suite.server.addr);
    await page.waitForFunction(() => window.l.connection.status === "connected", undefined, { timeout: 10000 });
  }
});
