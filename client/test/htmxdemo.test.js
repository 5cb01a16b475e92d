// The htmx example (examples/htmx) in headless Chromium: its pages, with
// the htmx and Turbo it vendors, against its own binary, checked as its
// visitors see them. With LIVE_REDIS_URL set, two processes sharing Redis
// are checked too.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { launchBrowser, waitFor } from "./harness.js";

const exampleDir = fileURLToPath(new URL("../../examples/htmx/", import.meta.url));
const execFileP = promisify(execFile);

let dir;
let bin;
let ann; // two browsers: two visitors, each with its own cookie
let bob;
const running = new Set();
const pages = [];

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

/** start runs the example with args, once it says it is serving. */
async function start(args = []) {
  const port = await freePort();
  const proc = spawn(bin, ["-addr", `127.0.0.1:${port}`, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the example did not start: ${log}`)), 20000);
    proc.stderr.on("data", (b) => {
      log += b;
      if (log.includes("live htmx dashboard on http://")) {
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the example exited with ${code}: ${log}`));
    });
  });
  const s = {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      proc.kill("SIGTERM");
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
  dir = await mkdtemp(join(tmpdir(), "live-htmx-example-"));
  bin = join(dir, "htmx");
  await execFileP("go", ["build", "-o", bin, "."], { cwd: exampleDir, env: process.env });
  [ann, bob] = await Promise.all([launchBrowser(), launchBrowser()]);
});

after(async () => {
  await ann?.close();
  await bob?.close();
  for (const s of [...running]) await s.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const p of pages.splice(0)) {
    await p.page.close();
    assert.deepStrictEqual(p.problems, [], "the page had uncaught errors");
  }
});

async function open(browser, url) {
  const page = await browser.context.newPage();
  const p = { page, problems: [] };
  pages.push(p);
  page.on("pageerror", (e) => p.problems.push(`page error: ${e.message}`));
  await page.goto(url);
  return page;
}

const feed = (page) => page.evaluate(() => [...document.querySelectorAll("#feed > li")].map((li) => li.textContent.replace(/\s+\d\d:\d\d:\d\d$/, "")));
const watching = (page) => page.evaluate(() => document.querySelector("#watching").textContent);
const column = (page, card) => page.evaluate((card) => document.getElementById(`card-${card}`)?.closest(".column").querySelector("h3").textContent, card);

/** post types what into the page's form and sends it. */
async function post(page, what) {
  await page.fill('input[name="what"]', what);
  await page.click("form button");
}

/** dashboards checks two visitors' pages, on a and b (nodes, or one). */
async function dashboards(a, b) {
  const pa = await open(ann, a.url + "/");
  const pb = await open(bob, b.url + "/");
  const annName = await pa.evaluate(() => document.querySelector("header b").textContent);

  // Who is watching the board: both, on both pages.
  for (const p of [pa, pb]) await waitFor(async () => /^2 watching/.test(await watching(p)), "2 watching");

  // The metrics move.
  const at = await pa.evaluate(() => document.querySelector("#metrics time").textContent);
  await waitFor(async () => (await pa.evaluate(() => document.querySelector("#metrics time").textContent)) !== at, "the metrics to move");

  // Ann posts: her page has the item once (her answer), Bob's too (the stream).
  const word = `hello ${Math.random().toString(36).slice(2)}`;
  await post(pa, word);
  for (const p of [pa, pb]) await waitFor(async () => (await feed(p))[0] === `${annName} ${word}`, "the item at the top");
  // Bob posts: had Ann's stream brought her own item back, it would come before his.
  await post(pb, `${word} again`);
  await waitFor(async () => (await feed(pa))[0]?.endsWith(`${word} again`), "Bob's item on Ann's page");
  assert.equal((await feed(pa)).filter((t) => t === `${annName} ${word}`).length, 1, "Ann's item once on her page");
  assert.equal((await feed(pb)).filter((t) => t.endsWith(` ${word}`)).length, 1, "Ann's item once on Bob's page");

  // Bob moves a card: Ann's board shows it in its new column.
  const from = await column(pa, "c2");
  await pb.click("#card-c2 button");
  await waitFor(async () => (await column(pa, "c2")) !== from && (await column(pa, "c2")) === (await column(pb, "c2")), "the card moved on Ann's board");

  // The Turbo page follows the feed.
  const pt = await open(ann, a.url + "/turbo");
  await waitFor(async () => (await feed(pt))[0]?.endsWith(`${word} again`), "the feed on the Turbo page");
  await post(pb, `${word} for Turbo`);
  await waitFor(async () => (await feed(pt))[0]?.endsWith(`${word} for Turbo`), "the new item on the Turbo page");
}

test("the htmx dashboard: presence, metrics, the feed to others, the board, the Turbo page", async () => {
  const s = await start();
  try {
    await dashboards(s, s);
  } finally {
    await s.stop();
  }
});

test("two nodes on Redis: one visitor on each", { skip: !process.env.LIVE_REDIS_URL && "LIVE_REDIS_URL is not set" }, async () => {
  const args = ["-redis", process.env.LIVE_REDIS_URL, "-prefix", `htmx-${Date.now()}-${Math.random().toString(36).slice(2)}:`];
  const [a, b] = await Promise.all([start(args), start(args)]);
  try {
    await dashboards(a, b);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});
