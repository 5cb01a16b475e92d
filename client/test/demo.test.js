// The live dashboard demo (examples/dashboard) in headless Chromium: its
// page, which uses live.js, against the demo's own binary, checked as a
// user sees it. With LIVE_REDIS_URL set, two demo processes sharing Redis
// are checked too.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile, execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { launchBrowser } from "./harness.js";

const demoDir = fileURLToPath(new URL("../../examples/dashboard/", import.meta.url));
const execFileP = promisify(execFile);

let buildDir; // holds the demo binary, built once for the file
let bin;
let browser;
let demo; // the in-memory demo most tests use
const running = new Set(); // every demo process started, stopped in after
const pages = []; // pages opened by the current test

/** freePort returns a TCP port nobody listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * startDemo runs the demo binary on 127.0.0.1:port with args, and
 * resolves once it says it is serving.
 */
async function startDemo(port, args = []) {
  const proc = spawn(bin, ["-addr", `127.0.0.1:${port}`, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not start within 20 s: ${log}`)), 20000);
    proc.stderr.on("data", (b) => {
      log += b;
      if (log.includes("live dashboard on http://")) {
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the demo exited with ${code}: ${log}`));
    });
  });
  const d = {
    url: `http://127.0.0.1:${port}`,
    port,
    log: () => log,
    /** kill ends the process at once, as a crash would. */
    async kill() {
      proc.kill("SIGKILL");
      await exited;
      running.delete(d);
    },
    /** stop asks it to shut down, and kills it if it has not within 5 s. */
    async stop() {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
      running.delete(d);
    },
    /** request sends a plain HTTP request, from outside any page. */
    async request(method, path, body, headers = {}) {
      const res = await fetch(d.url + path, {
        method,
        headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
  };
  running.add(d);
  return d;
}

/**
 * openDemo opens the demo's page, records what would be an uncaught
 * error, and waits until the page's indicator says it is connected.
 * prepare, if given, is called with the page before it loads.
 */
async function openDemo(d, url = d.url, prepare) {
  const page = await browser.context.newPage();
  await prepare?.(page);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (/InvalidStateError|Uncaught/.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
  });
  await page.addInitScript(() => {
    window.__problems = [];
    addEventListener("error", (e) => window.__problems.push(`error: ${e.message}`));
    addEventListener("unhandledrejection", (e) => window.__problems.push(`unhandled rejection: ${e.reason?.stack ?? e.reason}`));
  });
  pages.push({ page, problems });
  await page.goto(url + "/");
  await waitConnected(page);
  return page;
}

const waitConnected = (page, timeout = 15000) =>
  page.waitForFunction(() => document.getElementById("indicator").dataset.status === "connected", undefined, { timeout });

/** feedMessages returns the messages the page's activity feed shows, in order. */
const feedMessages = (page) => page.$$eval("#feed li .msg", (els) => els.map((e) => e.textContent));

/** feedIDs returns the ids of the entries the page's activity feed shows, in order. */
const feedIDs = (page) => page.$$eval("#feed li", (els) => els.map((e) => e.dataset.id));

/**
 * recordStream makes the page record, in window.streamed, the id of each
 * entry added on the activity channel, in the order the stream brings
 * them (the order of their positions), through a subscription of its own
 * beside the feed's.
 */
const recordStream = (page) =>
  page.evaluate(() => {
    window.streamed = [];
    window.dashboard.live.subscribe("activity", (op) => op.type === "add" && window.streamed.push(op.item.id));
  });

/** streamOrder returns ids as the feed should show them: newest add first. */
async function streamOrder(page, ids) {
  const streamed = await page.evaluate(() => window.streamed);
  return streamed.filter((id) => ids.includes(id)).reverse();
}

/** waitText waits until the page shows text inside selector. */
const waitText = (page, selector, text, timeout = 10000) =>
  page.waitForFunction(
    ([selector, text]) => [...document.querySelectorAll(selector)].some((e) => e.textContent.includes(text)),
    [selector, text],
    { timeout },
  );

before(async () => {
  buildDir = await mkdtemp(join(tmpdir(), "live-demo-"));
  bin = join(buildDir, "dashboard");
  const build = execFileP("go", ["build", "-o", bin, "."], { cwd: demoDir, env: process.env });
  [, browser] = await Promise.all([build, launchBrowser()]);
  demo = await startDemo(await freePort());
});

after(async () => {
  await browser?.close();
  for (const d of [...running]) await d.stop();
  if (buildDir) await rm(buildDir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const { page, problems } of pages.splice(0)) {
    const inPage = page.isClosed() ? [] : await page.evaluate(() => window.__problems);
    await page.close();
    assert.deepStrictEqual([...problems, ...inPage], [], "the page had uncaught errors");
  }
});

test("the page connects, and the metrics move", async () => {
  const page = await openDemo(demo);
  assert.equal(await page.textContent("#status"), "Live");
  assert.equal(await page.getAttribute("#indicator", "class"), "indicator connected");
  // The first value is fetched, then partial updates arrive every second.
  await page.waitForFunction(() => document.getElementById("activeUsers").textContent !== "–");
  const first = await page.evaluate(() => window.dashboard.metrics().updatedAt);
  await page.waitForFunction((t) => window.dashboard.metrics().updatedAt > t, first, { timeout: 10000 });
  const shown = await page.textContent("#updated");
  assert.notEqual(shown, "never");
  for (const id of ["activeUsers", "requestsPerSecond", "errorRate", "p95LatencyMs"]) {
    assert.match(await page.textContent(`#${id}`), /^[\d,.]+( %| ms)?$/, id);
  }
});

test("20 optimistic adds in a row: each shown at once, then settled once", async () => {
  const page = await openDemo(demo);
  await page.waitForFunction(() => document.querySelectorAll("#feed li").length > 0);
  await recordStream(page);
  const before = (await demo.request("GET", "/api/activity")).body.length;
  const messages = Array.from({ length: 20 }, (_, i) => `burst ${i + 1} ${Date.now()}`);
  // Submit the form 20 times in one task: each item is on screen, pending,
  // before any response can have arrived.
  const pendingSeen = await page.evaluate((messages) => {
    const seen = [];
    for (const m of messages) {
      document.getElementById("msg").value = m;
      document.getElementById("add").requestSubmit();
      seen.push(document.querySelectorAll("#feed li.pending").length);
    }
    return seen;
  }, messages);
  assert.deepStrictEqual(pendingSeen, Array.from({ length: 20 }, (_, i) => i + 1));

  await page.waitForFunction(
    (n) => document.querySelectorAll("#feed li").length === n && document.querySelectorAll("#feed li.pending").length === 0,
    before + 20,
    { timeout: 15000 },
  );
  const shown = await feedMessages(page);
  const ids = await feedIDs(page);
  assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids}`);
  assert.ok(ids.every((id) => !id.startsWith("m-")), "an optimistic id is left");
  for (const m of messages) assert.equal(shown.filter((s) => s === m).length, 1, `${m} shown ${shown.filter((s) => s === m).length} times`);
  // The server has each once, and the page shows what the server has.
  const server = (await demo.request("GET", "/api/activity")).body;
  for (const m of messages) assert.equal(server.filter((a) => a.message === m).length, 1, m);
  assert.deepStrictEqual([...ids].sort(), server.map((a) => a.id).sort());
  // Each add was answered before it was published, and the answers came
  // in whatever order: once the stream has brought every add, the feed
  // lists them in the stream's order, as the server does.
  const mine = server.filter((a) => messages.includes(a.message)).map((a) => a.id);
  await page.waitForFunction((mine) => mine.every((id) => window.streamed.includes(id)), mine, { timeout: 10000 });
  const got = (await feedIDs(page)).filter((id) => mine.includes(id));
  assert.deepStrictEqual(got, await streamOrder(page, mine));
});

test("after a gap, the feed lists entries in the stream's order, each once", async () => {
  // The page's WebSocket goes through a route the test controls: during
  // the gap, the page's connection is cut, and its next one is held (the
  // hub gets none of its frames, so the page resumes nothing) until the
  // test releases it.
  let held = null; // the held connection's frames from the page, while the gap lasts
  let resuming; // resolves with the held connection's subscription to the feed
  const open = new Set(); // the connections through the route
  const page = await openDemo(demo, demo.url, (page) => page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    const c = { ws, server, held };
    open.add(c);
    if (!c.held) return;
    ws.onMessage((m) => {
      if (!c.held) return server.send(m);
      c.held.push(m);
      const f = JSON.parse(m);
      if (f.type === "subscribe" && f.channel === "activity") resuming.resolve(f);
    });
  }));
  await page.waitForFunction(() => window.dashboard.feed.loaded);
  await recordStream(page);
  await page.evaluate(async () => {
    // Beside the page's own connection, a stream the route leaves alone:
    // it shows when a change has been published.
    const { createLive } = await import("/live.js");
    window.published = [];
    createLive({ transport: "sse" }).subscribe("activity", (op) => op.type === "add" && window.published.push(op.item.id));
  });
  await page.evaluate(() => {
    window.views = [];
    window.dashboard.feed.onChange((items) => window.views.push(items.map((a) => a.id)));
  });

  held = [];
  resuming = {};
  resuming.promise = new Promise((resolve, reject) => Object.assign(resuming, { resolve, reject }));
  for (const c of open) await c.server.close();
  open.clear();
  const timeout = setTimeout(() => resuming.reject(new Error("the page did not reconnect within 15 s")), 15000);
  const resumed = await resuming.promise.finally(() => clearTimeout(timeout));
  assert.ok(resumed.cursor, `the page did not resume from a cursor: ${JSON.stringify(resumed)}`);
  const stamp = Date.now();
  // Two entries added elsewhere, published before the page's own; the
  // page gets them only from the replay when it resumes.
  const older = [];
  for (const i of [1, 2]) {
    const r = await demo.request("POST", "/api/activity", { message: `elsewhere ${i} ${stamp}`, actor: { name: "Curl" } });
    assert.equal(r.status, 201);
    older.push(r.body.id);
  }
  await page.waitForFunction((ids) => ids.every((id) => window.published.includes(id)), older, { timeout: 10000 });
  // The page's own: answered, so shown, before the replay can bring it.
  await page.fill("#msg", `mine ${stamp}`);
  await page.press("#msg", "Enter");
  await page.waitForFunction((t) => [...document.querySelectorAll("#feed li:not(.pending) .msg")].some((e) => e.textContent === t), `mine ${stamp}`);
  const mineID = await page.evaluate((t) => window.dashboard.feed.items.find((a) => a.message === t).id, `mine ${stamp}`);
  assert.deepStrictEqual((await feedIDs(page)).filter((id) => [mineID, ...older].includes(id)), [mineID], "shown during the gap");

  // The gap ends: the held connection's subscriptions reach the hub, which
  // replays the three adds after the page's cursor, oldest first.
  held = null;
  for (const c of open) {
    for (const m of c.held?.splice(0) ?? []) c.server.send(m);
    c.held = null;
  }
  const ids = [...older, mineID];
  await page.waitForFunction((ids) => ids.every((id) => window.streamed.includes(id)), ids, { timeout: 15000 });
  await waitConnected(page);
  const want = await streamOrder(page, ids);
  assert.deepStrictEqual(want, [mineID, older[1], older[0]], "the stream's order");
  assert.deepStrictEqual((await feedIDs(page)).filter((id) => ids.includes(id)), want);
  // Nothing showed twice, and the page's own entry never moved below
  // what was published before it.
  for (const v of await page.evaluate(() => window.views)) {
    assert.equal(new Set(v).size, v.length, `shown twice: ${v}`);
    const shown = v.filter((id) => ids.includes(id));
    assert.deepStrictEqual(shown, want.filter((id) => shown.includes(id)), `out of the stream's order: ${shown}`);
  }
  const all = await feedIDs(page);
  assert.equal(new Set(all).size, all.length, `duplicate ids: ${all}`);
  const server = (await demo.request("GET", "/api/activity")).body.map((a) => a.id);
  assert.deepStrictEqual(all.filter((id) => ids.includes(id)), server.filter((id) => ids.includes(id)), "the page and the server disagree");
});

test("two pages see each other's changes", async () => {
  const a = await openDemo(demo);
  const b = await openDemo(demo);
  const stamp = Date.now();

  await a.fill("#msg", `from page A ${stamp}`);
  await a.press("#msg", "Enter");
  await waitText(b, "#feed li .msg", `from page A ${stamp}`);

  await b.fill("#cardText", `card from B ${stamp}`);
  await b.press("#cardText", "Enter");
  await waitText(a, "#cols .cardx", `card from B ${stamp}`);

  // B removes A's entry; A sees it go.
  await b.click(`#feed li:has-text("from page A ${stamp}") [data-remove]`);
  await a.waitForFunction((t) => ![...document.querySelectorAll("#feed li .msg")].some((e) => e.textContent === t), `from page A ${stamp}`);

  // A removes B's card; B sees it go, and both show the same version.
  await a.click(`#cols .cardx:has-text("card from B ${stamp}") [data-card]`);
  await b.waitForFunction((t) => ![...document.querySelectorAll("#cols .cardx")].some((e) => e.textContent.includes(t)), `card from B ${stamp}`);
  const version = (await demo.request("GET", "/api/board")).body.version;
  for (const p of [a, b]) await p.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, version);
});

test("who is on the board: two visitors see each other, and one removed is cut off", async () => {
  const a = await openDemo(demo);
  // Another host name for the same server: another cookie jar, so another visitor.
  const b = await openDemo(demo, demo.url.replace("127.0.0.1", "localhost"));
  const [meA, meB] = await Promise.all([a, b].map((p) => p.evaluate(() => window.dashboard.me)));
  assert.match(meA, /^[a-z2-7]{16}$/);
  assert.notEqual(meA, meB);
  const onBoard = (page, users) =>
    page.waitForFunction((users) => {
      const shown = [...document.querySelectorAll("#who .avatar")].map((e) => e.dataset.user);
      return users.every((u) => shown.includes(u));
    }, users);
  await onBoard(a, [meA, meB]);
  await onBoard(b, [meA, meB]);
  assert.match(await a.getAttribute(`#who [data-user="${meB}"]`, "title"), /^[A-Z][a-z]+ [A-Z][a-z]+$/, "an avatar is titled with the visitor's name");
  for (const p of [a, b]) await p.waitForFunction(() => Number(/^(\d+) watching$/.exec(document.getElementById("watching").textContent)?.[1]) >= 2);

  // A removes B: B's page says so at once and its board stops; A's goes on.
  await a.hover(`#who [data-user="${meB}"]`);
  await a.click(`#who [data-user="${meB}"] [data-remove]`);
  await b.waitForFunction(() => !document.getElementById("removedBanner").hidden);
  assert.equal(await b.textContent("#removedBanner"), "you were removed from the board");
  // The session ended for good: the indicator says so, and stays so.
  await b.waitForFunction(() => document.getElementById("indicator").dataset.status === "removed");
  assert.equal(await b.textContent("#status"), "Removed");
  assert.equal(await b.evaluate(() => document.getElementById("cols").classList.contains("removed")), true);
  const refused = await b.evaluate(() => fetch("/api/board", { method: "PATCH", headers: { "Content-Type": "application/json" }, body: "{}" }).then((r) => r.status));
  assert.equal(refused, 403);
  const stamp = Date.now();
  await a.fill("#cardText", `after the removal ${stamp}`);
  await a.press("#cardText", "Enter");
  await waitText(a, "#cols .cardx", `after the removal ${stamp}`);
  await waitText(b, "#feed li, #cols .cardx, #removedBanner", "removed"); // still the banner
  assert.equal(await b.evaluate(() => document.getElementById("indicator").dataset.status), "removed", "no reconnection");
  assert.equal(await b.evaluate((t) => document.getElementById("cols").textContent.includes(t), `after the removal ${stamp}`), false);
  // And B leaves A's board once the grace window has passed.
  await a.waitForFunction((u) => !document.querySelector(`#who [data-user="${u}"]`), meB, { timeout: 15000 });
});

test("a change made by a plain HTTP request reaches the page", async () => {
  const page = await openDemo(demo);
  const stamp = Date.now();
  const created = await demo.request("POST", "/api/activity", { message: `curl ${stamp}`, actor: { name: "Curl" } });
  assert.equal(created.status, 201);
  await waitText(page, "#feed li", `Curl curl ${stamp}`);

  const edited = await demo.request("PATCH", `/api/activity/${created.body.id}`, { message: `curl ${stamp}, edited` });
  assert.equal(edited.status, 200);
  await waitText(page, "#feed li .msg", `curl ${stamp}, edited`);

  const patched = await demo.request("PATCH", "/api/board", { columns: { doing: { cards: { [`h${stamp}`]: `by HTTP ${stamp}` } } } });
  assert.equal(patched.status, 200);
  await waitText(page, '#cols .col[data-col="doing"] .cardx', `by HTTP ${stamp}`);
  await page.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, patched.body.version);
});

test("board deltas are applied in order: the version advances one by one", async () => {
  const page = await openDemo(demo);
  await page.waitForFunction(() => document.getElementById("boardVersion").textContent !== "");
  const start = (await demo.request("GET", "/api/board")).body.version;
  await page.waitForFunction((v) => window.dashboard.board.version === v, start);
  await page.evaluate(() => {
    window.versions = [];
    window.dashboard.board.onChange((_, v) => window.versions.push(v));
  });

  // 30 updates, ten at a time concurrently, each touching the same card.
  const n = 30;
  for (let i = 0; i < n; i += 10) {
    const batch = Array.from({ length: 10 }, (_, k) =>
      demo.request("PATCH", "/api/board", { title: `Launch checklist (${i + k + 1})`, columns: { done: { cards: { order: `step ${i + k + 1}` } } } }));
    for (const r of await Promise.all(batch)) assert.equal(r.status, 200);
  }
  const want = (await demo.request("GET", "/api/board")).body;
  assert.equal(want.version, start + n);
  await page.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, want.version, { timeout: 10000 });

  const versions = await page.evaluate(() => window.versions);
  assert.deepStrictEqual(versions, Array.from({ length: n }, (_, k) => start + k + 1), "versions seen by the page");
  assert.deepStrictEqual(await page.evaluate(() => window.dashboard.board.value), want.data);
  assert.equal(await page.textContent("#boardTitle"), want.data.title);
});

test("after a server restart: disconnected, reconnecting, then connected within the backoff cap", async () => {
  const d = await startDemo(await freePort());
  const page = await openDemo(d);
  await page.evaluate(() => {
    window.statuses = [];
    window.dashboard.live.onStatus((c) => window.statuses.push({ ...c, text: document.getElementById("status").textContent, at: Date.now() }));
  });
  await page.fill("#msg", "before the restart");
  await page.press("#msg", "Enter");
  await page.waitForFunction(() => document.querySelectorAll("#feed li.pending").length === 0 &&
    [...document.querySelectorAll("#feed li .msg")].some((e) => e.textContent === "before the restart"));

  // Crash it, and start it again on the same port once the page noticed.
  await d.kill();
  await page.waitForFunction(() => ["disconnected", "connecting", "error"].includes(document.getElementById("indicator").dataset.status));
  await page.waitForFunction(() => document.getElementById("indicator").dataset.status === "disconnected" ||
    Number(document.getElementById("indicator").dataset.attempt) > 0);
  const shownDown = await page.textContent("#status");
  assert.match(shownDown, /Disconnected|Reconnecting|error/, shownDown);
  const d2 = await startDemo(d.port);
  const back = Date.now();

  await waitConnected(page, 35000);
  const statuses = await page.evaluate(() => window.statuses);
  const down = statuses.findIndex((s) => s.status !== "connected");
  const after = statuses.slice(down);
  assert.ok(after.some((s) => s.status === "disconnected" && s.reconnectAttempt >= 1), `no disconnected state: ${JSON.stringify(after)}`);
  assert.ok(after.some((s) => s.text.includes("attempt")), `the attempt count was never shown: ${JSON.stringify(after)}`);
  assert.equal(after.at(-1).status, "connected");
  assert.equal(await page.textContent("#status"), "Live");
  // The last wait began before the server was back and lasted at most the
  // ceiling of its attempt (1 s doubling, 30 s cap).
  const lastAttempt = after.filter((s) => s.status === "disconnected").at(-1).reconnectAttempt;
  const ceiling = Math.min(30000, 1000 * 2 ** (lastAttempt - 1));
  const took = after.at(-1).at - back;
  assert.ok(took <= ceiling + 1000, `connected ${took} ms after the server was back; attempt ${lastAttempt} waits at most ${ceiling} ms`);

  // The new process starts afresh (in memory): the page was reset and
  // refetched, and it is live again.
  await page.waitForFunction(() => ![...document.querySelectorAll("#feed li .msg")].some((e) => e.textContent === "before the restart"));
  const created = await d2.request("POST", "/api/activity", { message: "after the restart" });
  assert.equal(created.status, 201);
  await waitText(page, "#feed li .msg", "after the restart");
  const first = await page.evaluate(() => window.dashboard.metrics().updatedAt);
  await page.waitForFunction((t) => window.dashboard.metrics().updatedAt > t, first, { timeout: 10000 });
  await d2.stop();
});

test("the page looks right", async () => {
  const page = await openDemo(demo);
  await page.setViewportSize({ width: 1200, height: 860 });
  await page.waitForFunction(() => document.getElementById("boardVersion").textContent !== "" && document.querySelectorAll("#feed li").length > 0);
  const look = await page.evaluate(() => {
    const style = (sel) => getComputedStyle(document.querySelector(sel));
    return {
      background: style("body").backgroundColor,
      cards: document.querySelectorAll("main .card").length,
      columns: document.querySelectorAll("#cols .col").length,
      dot: style("#indicator .dot").backgroundColor,
    };
  });
  assert.deepStrictEqual(look, { background: "rgb(15, 20, 25)", cards: 4, columns: 3, dot: "rgb(46, 160, 67)" });
  // For a person to look at; not part of the repository.
  await page.screenshot({ path: join(tmpdir(), "live-dashboard.png") });
});

// redisSkip says why the test on Redis cannot run, or is false.
function redisSkip() {
  if (!process.env.LIVE_REDIS_URL) return "LIVE_REDIS_URL is not set; to run it: LIVE_REDIS_URL=redis://127.0.0.1:6379/0 npm test";
  try {
    execFileSync("redis-cli", ["--version"]);
  } catch {
    return "redis-cli, which removes the test's keys, is not installed";
  }
  return false;
}

test("two demo processes sharing Redis show each other's changes", { skip: redisSkip() }, async (t) => {
  const url = process.env.LIVE_REDIS_URL;
  const prefix = `demotest:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}:`;
  t.after(async () => {
    // The demo keeps its history without a time limit: remove the keys.
    const { stdout } = await execFileP("redis-cli", ["-u", url, "--scan", "--pattern", `${prefix}*`]);
    const keys = stdout.split("\n").filter(Boolean);
    if (keys.length) await execFileP("redis-cli", ["-u", url, "del", ...keys]);
  });
  const [n1, n2] = await Promise.all([
    freePort().then((p) => startDemo(p, ["-redis", url, "-prefix", prefix])),
    freePort().then((p) => startDemo(p, ["-redis", url, "-prefix", prefix])),
  ]);
  const a = await openDemo(n1);
  const b = await openDemo(n2);
  const stamp = Date.now();

  await a.fill("#msg", `on node 1 ${stamp}`);
  await a.press("#msg", "Enter");
  await waitText(b, "#feed li .msg", `on node 1 ${stamp}`);
  await b.fill("#cardText", `on node 2 ${stamp}`);
  await b.press("#cardText", "Enter");
  await waitText(a, "#cols .cardx", `on node 2 ${stamp}`);
  const created = await n2.request("POST", "/api/activity", { message: `curl on node 2 ${stamp}` });
  assert.equal(created.status, 201);
  await waitText(a, "#feed li .msg", `curl on node 2 ${stamp}`);

  // Both pages, and both nodes, hold the same feed and board.
  await waitText(b, "#feed li .msg", `curl on node 2 ${stamp}`);
  await a.waitForFunction(() => document.querySelectorAll("#feed li.pending").length === 0);
  const [feedA, feedB] = await Promise.all([feedMessages(a), feedMessages(b)]);
  assert.deepStrictEqual(feedA, feedB);
  const [one, two] = await Promise.all([n1.request("GET", "/api/activity"), n2.request("GET", "/api/activity")]);
  assert.deepStrictEqual(one.body.map((x) => x.message), feedA);
  assert.deepStrictEqual(two.body.map((x) => x.message), feedA);
  const version = (await n1.request("GET", "/api/board")).body.version;
  for (const p of [a, b]) await p.waitForFunction((v) => document.getElementById("boardVersion").textContent === `v${v}`, version);
  await Promise.all([n1.stop(), n2.stop()]);
});
