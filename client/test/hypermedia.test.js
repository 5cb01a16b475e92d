// htmx 2 (with htmx-ext-sse), htmx 4 (hx-sse) and Hotwire Turbo, the
// released packages from the npm registry, in headless Chromium, against
// pages that package livehtml serves (client/test/hyperserver): the
// clients' own code consumes the one-channel SSE stream unchanged. Under
// a proxy that drops every connection every 2 s each page ends with its
// 300 rows, in order, none twice; htmx 4 paused in a hidden tab catches
// up when shown; a gap past history makes each page refetch; two nodes
// on Redis; and htmx 2 stops for good on the hub's "refused".
//
// Datastar is checked by comparing livehtml's events with its official
// Go SDK's (livehtml/internal/sdkcheck): the client on the npm registry
// (1.0.0-beta.11) still speaks datastar-merge-fragments, not
// datastar-patch-elements.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { launchBrowser, range, waitFor } from "./harness.js";

const serverDir = fileURLToPath(new URL("./hyperserver/", import.meta.url));
const modules = fileURLToPath(new URL("../node_modules/", import.meta.url));
const execFileP = promisify(execFile);

let dir;
let bin;
let browser;
let server; // the in-memory server most tests use
const running = new Set();
const pages = [];

/** start runs the server with args, and resolves once it prints its URLs. */
async function start(args = []) {
  const proc = spawn(bin, ["-modules", modules, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let log = "";
  proc.stderr.on("data", (b) => (log += b));
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  const [url, proxyURL] = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`hyperserver did not start: ${log}`)), 20000);
    proc.stdout.on("data", (b) => {
      out += b;
      const lines = out.split("\n");
      if (lines.length >= 3) {
        clearTimeout(timer);
        resolve([lines[0].trim(), lines[1].trim().replace(/^proxy /, "")]);
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`hyperserver exited with ${code}: ${log}`));
    });
  });
  const s = {
    url,
    proxyURL,
    log: () => log,
    async post(path) {
      const res = await fetch(url + path, { method: "POST" });
      const text = await res.text();
      if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
    },
    async stats(channel) {
      return (await fetch(`${url}/stats?channel=${channel}`)).json();
    },
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
      running.delete(s);
    },
  };
  running.add(s);
  return s;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "live-hyperserver-"));
  bin = join(dir, "hyperserver");
  await execFileP("go", ["build", "-o", bin, "."], { cwd: serverDir, env: process.env });
  [server, browser] = await Promise.all([start(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  for (const s of [...running]) await s.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await server.post("/proxy?mode=");
  for (const p of pages.splice(0)) {
    const problems = p.problems;
    await p.page.close();
    assert.deepStrictEqual(problems, [], "the page had uncaught errors");
  }
});

/** open loads /page/{client}?channel= from base (the proxy, usually). */
async function open(base, client, channel, user) {
  const page = await browser.context.newPage();
  const p = { page, problems: [] };
  pages.push(p);
  page.on("pageerror", (e) => p.problems.push(`page error: ${e.message}`));
  const q = new URLSearchParams({ channel, ...(user ? { user } : {}) });
  await page.goto(`${base}/page/${client}?${q}`);
  // Connected: the hub counted the page's stream.
  await waitFor(async () => (await serverOf(base).stats(channel)).streams >= 1, `${client}'s stream`);
  return page;
}

let others = [];
function serverOf(base) {
  return [server, ...others].find((s) => s.url === base || s.proxyURL === base);
}

/** rows returns the numbers of the page's rows, in document order. */
const rows = (page) => page.evaluate(() => [...document.querySelectorAll("#rows > li")].map((li) => Number(li.textContent)));

/**
 * publishThroughDrops publishes total rows of kind on channel through s,
 * 5 every 100 ms (50 a second), while the proxy drops every connection
 * every 2 s, then waits until the page shows them all, and checks them.
 */
async function publishThroughDrops(s, proxied, page, kind, channel, total = 300) {
  await proxied.post("/proxy?mode=drop=2s");
  for (let k = 0; k < total / 5; k++) {
    await s.post(`/publish?channel=${channel}&kind=${kind}&n=5`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await waitFor(async () => (await rows(page)).length >= total, `${total} rows`, 20000)
    .catch(async (e) => assert.fail(`${e.message}: ${(await rows(page)).length} rows, ${JSON.stringify(await proxied.stats(channel))}`));
  await proxied.post("/proxy?mode=");
  // One more, so that anything repeated would have arrived before it.
  await s.post(`/publish?channel=${channel}&kind=${kind}&n=1`);
  await waitFor(async () => (await rows(page)).includes(total + 1), "the last row");
  assert.deepStrictEqual(await rows(page), range(1, total + 1), "every row once, in order");
  const st = await proxied.stats(channel);
  assert.ok(st.streams >= 2, `the stream was dropped and resumed: ${JSON.stringify(st)}`);
  return st;
}

for (const client of ["htmx2", "htmx4", "turbo"]) {
  test(`${client}: 300 rows while a proxy drops the stream every 2 s`, async () => {
    const channel = `${client}-drops`;
    const page = await open(server.proxyURL, client, channel);
    const st = await publishThroughDrops(server, server, page, client, channel);
    console.log(`${client}: ${st.streams} stream requests, ${st.refetches} refetches`);
  });
}

test("htmx4: paused in a hidden tab, caught up when shown", async () => {
  const channel = "htmx4-hidden";
  const page = await open(server.proxyURL, "htmx4", channel);
  await server.post(`/publish?channel=${channel}&kind=htmx4&n=10`);
  await waitFor(async () => (await rows(page)).length === 10, "10 rows");
  const setHidden = (hidden) => page.evaluate((hidden) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
  await setHidden(true);
  await server.post(`/publish?channel=${channel}&kind=htmx4&n=40`);
  // Paused: nothing arrives while hidden (the stream is closed).
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await rows(page)).length, 10, "a hidden page swaps nothing");
  await setHidden(false);
  await waitFor(async () => (await rows(page)).length >= 50, "50 rows after being shown");
  assert.deepStrictEqual(await rows(page), range(1, 50));
  assert.equal((await server.stats(channel)).streams, 2, "one stream, and one that resumed");
});

test("a gap past history: each page refetches", async () => {
  const small = await start(["-history", "8"]);
  others.push(small);
  try {
    for (const client of ["htmx2", "htmx4", "turbo"]) {
      const channel = `${client}-gap`;
      const page = await open(small.proxyURL, client, channel);
      await small.post(`/publish?channel=${channel}&kind=${client}&n=3`);
      await waitFor(async () => (await rows(page)).length === 3, `${client}: 3 rows`);
      await small.post("/proxy?mode=offline");
      await small.post(`/publish?channel=${channel}&kind=${client}&n=20`);
      await small.post("/proxy?mode=");
      await waitFor(async () => {
        const st = await small.stats(channel);
        return client === "turbo" ? st.pages >= 2 : st.refetches >= 1;
      }, `${client}: a refetch`);
      await waitFor(async () => (await rows(page)).length === 23, `${client}: 23 rows after the refetch`);
      assert.deepStrictEqual(await rows(page), range(1, 23), `${client}: the refetched rows`);
    }
  } finally {
    others = others.filter((s) => s !== small);
    await small.stop();
  }
});

test("two nodes on Redis: the page on one, publications on the other, through drops", { skip: !process.env.LIVE_REDIS_URL && "LIVE_REDIS_URL is not set" }, async () => {
  const prefix = `hyper-${Date.now()}-${Math.random().toString(36).slice(2)}:`;
  const args = ["-redis", process.env.LIVE_REDIS_URL, "-prefix", prefix];
  const [a, b] = await Promise.all([start(args), start(args)]);
  others.push(a, b);
  try {
    for (const client of ["htmx2", "htmx4", "turbo"]) {
      const channel = `${client}-redis`;
      const page = await open(a.proxyURL, client, channel);
      const st = await publishThroughDrops(b, a, page, client, channel, 200);
      console.log(`${client} on Redis: ${st.streams} stream requests`);
    }
  } finally {
    others = others.filter((s) => s !== a && s !== b);
    await Promise.all([a.stop(), b.stop()]);
  }
});

test("htmx2: Hub.Disconnect, and sse-close=\"refused\" closes the EventSource for good", async () => {
  const channel = "htmx2-ending";
  const page = await open(server.proxyURL, "htmx2", channel, "ann");
  await server.post(`/publish?channel=${channel}&kind=htmx2&n=2`);
  await waitFor(async () => (await rows(page)).length === 2, "2 rows");
  await server.post("/disconnect?user=ann");
  // EventSource would reconnect within 3 s; wait twice that.
  await new Promise((r) => setTimeout(r, 6000));
  assert.equal((await server.stats(channel)).streams, 1, "no request after the refusal");
});

// A load balancer answers 502 while the node behind it is gone: a
// reconnection that gets a non-2xx answer is where the clients differ.
// htmx 2's extension opens a new EventSource at the page's URL, without
// Last-Event-ID (htmx-extensions#184), so the stream starts over from the
// render's ?cursor= and an append-swapped list shows those rows twice: the
// hub cannot skip them, as what it wrote to the old stream is not what the
// page received. htmx 4 retries with Last-Event-ID. Turbo's
// <turbo-stream-source> is a plain EventSource, which gives up for good.
test("a 502 on reconnection: htmx 2 starts over from the page's cursor, htmx 4 resumes, Turbo stops", async () => {
  const expected = {
    htmx2: [...range(1, 10), ...range(1, 20)],
    htmx4: range(1, 20),
    turbo: range(1, 10),
  };
  for (const client of ["htmx2", "htmx4", "turbo"]) {
    const channel = `${client}-502`;
    const page = await open(server.proxyURL, client, channel);
    await server.post(`/publish?channel=${channel}&kind=${client}&n=10`);
    await waitFor(async () => (await rows(page)).length === 10, `${client}: 10 rows`);
    await server.post("/proxy?mode=fail-once");
    await waitFor(async () => (await server.stats(channel)).failed === 1, `${client}: its reconnection answered 502`);
    await server.post(`/publish?channel=${channel}&kind=${client}&n=10`);
    if (client === "turbo") {
      // Nothing comes: wait for what a reconnection would have brought.
      await new Promise((r) => setTimeout(r, 1500));
    } else {
      await waitFor(async () => (await rows(page)).length === expected[client].length, `${client}: the rows after the 502`);
    }
    assert.deepStrictEqual(await rows(page), expected[client], client);
    const st = await server.stats(channel);
    assert.equal(st.streams, client === "turbo" ? 1 : 2, `${client}: ${JSON.stringify(st)}`);
    await page.close();
  }
});
