// Presence in headless Chromium against the Go test server, whose
// channels "room:*" list members and "crowd:*" count them, with a grace
// window of one second. Pages name their user with ?as= (pages of one
// browser share cookies).
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.js";

const suite = browserSuite();
const grace = 1000;

// join makes a connection as user in the page as window.l and follows
// channel's presence into window.views, each view stamped with its time.
async function join(page, user, channel, transport = "websocket") {
  await page.evaluate(({ user, channel, transport }) => {
    window.l = window.live.createLive({ url: `/ws?as=${user}`, sseURL: `/api/live?as=${user}`, transport });
    window.views = [];
    window.l.presence(channel, (p) => window.views.push({ ...p, at: performance.now() }));
  }, { user, channel, transport });
}

async function until(page, want) {
  await page.waitForFunction((want) => window.views.at(-1)?.members.map((m) => `${m.user}:${m.conns}`).join(" ") === want, want);
}

for (const transport of ["websocket", "sse"]) {
  test(`${transport}: two pages see each other arrive, a reload is no leave, a closed tab leaves after the grace window`, async () => {
    const room = `room:${transport}`;
    const ann = await suite.open();
    await join(ann, "ann", room, transport);
    await until(ann, "ann:1");

    // Ben's page is closed by the test, not by the suite.
    const ben = await openPage(suite.browser, suite.server.url);
    await join(ben.page, "ben", room, transport);
    await until(ben.page, "ann:1 ben:1");
    await until(ann, "ann:1 ben:1");
    const joined = await ann.evaluate(() => window.views.flatMap((v) => v.joined.map((m) => m.user)));
    assert.deepStrictEqual(joined, ["ann", "ben"], "ann saw each arrival once");
    assert.deepStrictEqual(await ann.evaluate(() => window.views.at(-1).members.map((m) => m.info)), [{ name: "ann" }, { name: "ben" }]);

    // A reload within the grace window is no leave. Checked at the end: a
    // flap would show before the leave that closing the tab makes, so
    // nothing waits here for a leave that should not come. (A reload may
    // count two connections for a moment: joined lists that, as an update.)
    await ben.page.reload();
    await join(ben.page, "ben", room, transport);
    await until(ben.page, "ann:1 ben:1");

    // Closing the tab is a leave, once the grace window has passed.
    const closed = await ann.evaluate(() => performance.now());
    await ben.page.close();
    await until(ann, "ann:1");
    const view = await ann.evaluate(() => window.views.at(-1));
    assert.deepStrictEqual(view.left, ["ben"]);
    assert.equal(view.count, 1);
    assert.deepStrictEqual(await ann.evaluate(() => window.views.flatMap((v) => v.left)), ["ben"], "ann saw ben leave on the reload too");
    assert.ok(view.at - closed >= grace - 50, `ben left ${Math.round(view.at - closed)} ms after the tab closed, within the grace window`);
  });
}

test("counts only: a crowd channel shows how many, not who", async () => {
  const a = await suite.open();
  const b = await suite.open();
  await join(a, "ann", "crowd:1");
  await join(b, "ben", "crowd:1");
  await a.waitForFunction(() => window.views.at(-1)?.count === 2);
  assert.deepStrictEqual(await a.evaluate(() => window.views.at(-1).members), []);
  assert.deepStrictEqual(await a.evaluate(() => window.l.members("crowd:1")), { members: [], count: 2 });
});

test("the connection's name goes with liveList's writes", async () => {
  const page = await suite.open();
  await page.evaluate(() => {
    window.l = window.live.createLive({ url: "/ws" });
    window.seen = [];
    const f = window.fetch;
    window.list = window.live.liveList(window.l, {
      channel: "todos",
      url: "/api/todos",
      fetch: (url, init) => {
        window.seen.push(init.headers?.["Live-Connection"] ?? null);
        return f(url, init);
      },
    });
    return window.list.ready;
  });
  await page.evaluate(() => window.list.add({ title: "named" }));
  const [load, add] = await page.evaluate(() => window.seen);
  assert.equal(load, null, "a GET has no connection to leave out");
  assert.equal(add, await page.evaluate(() => window.l.connectionID));
  assert.match(add, /^[A-Za-z0-9_-]{16}$/);
});
