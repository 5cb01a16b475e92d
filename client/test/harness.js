// Shared by the browser tests: the Go test server (internal/clienttest),
// headless Chromium through playwright-core, and waiting helpers.
import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const execFileP = promisify(execFile);

let built; // the server binary, built once per test file

/**
 * buildServer compiles ./internal/clienttest (what `go run` would run) so
 * that restarts take milliseconds and a kill reaches the server itself.
 */
export async function buildServer() {
  built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "live-clienttest-"));
    const bin = join(dir, "clienttest");
    await execFileP("go", ["build", "-o", bin, "./internal/clienttest"], { cwd: repo, env: process.env });
    return { dir, bin };
  })();
  return (await built).bin;
}

/**
 * startServer starts the test server, on addr or a free port, and
 * resolves once it accepts connections.
 */
export async function startServer(addr = "127.0.0.1:0") {
  const bin = await buildServer();
  const proc = spawn(bin, ["-addr", addr], { cwd: repo, stdio: ["pipe", "pipe", "pipe"] });
  let log = "";
  proc.stderr.on("data", (b) => (log += b));
  // It prints its URL, then its proxy's: "proxy <url>".
  const [url, proxyURL] = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`clienttest did not start: ${log}`)), 20000);
    proc.stdout.on("data", (b) => {
      out += b;
      const lines = out.split("\n");
      if (lines.length >= 3) {
        clearTimeout(timer);
        resolve([lines[0].trim(), lines[1].trim().replace(/^proxy /, "")]);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`clienttest exited with ${code}: ${log}`));
    });
  });
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  return {
    url,
    /** The proxy in front of the server; POST /test/proxy?mode= says how it behaves. */
    proxyURL,
    addr: url.replace(/^http:\/\//, ""),
    log: () => log,
    /** kill stops the server at once, as a crash would. */
    async kill() {
      proc.kill("SIGKILL");
      await exited;
    },
    /** stop stops it gracefully: WebSockets are closed with 1001. */
    async stop() {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
    /** post sends a request to the server from the test, outside the browser. */
    async post(path, body, headers = {}) {
      const res = await fetch(url + path, {
        method: "POST",
        headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
      return text ? JSON.parse(text) : undefined;
    },
    async request(method, path, body, headers = {}) {
      const res = await fetch(url + path, {
        method,
        headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
  };
}

/** launchBrowser starts headless Chromium with a fresh profile. */
export async function launchBrowser() {
  const profile = await mkdtemp(join(tmpdir(), "live-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/**
 * openPage opens the server's test page, whose module has set window.live,
 * and records what would be an uncaught error or an InvalidStateError.
 * opts.script is a module to run in the page once it has loaded (inline:
 * the page stays the server's, so its requests are same-origin and local),
 * and opts.ready the global it sets to true when it is ready.
 */
export async function openPage(browser, url, opts = {}) {
  const { script, ready } = opts;
  const page = await browser.context.newPage();
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
  await page.goto(url + "/");
  await page.waitForFunction(() => window.liveLoaded === true);
  if (script !== undefined) {
    await page.addScriptTag({ type: "module", content: script });
    await page.waitForFunction((ready) => window[ready] === true, ready);
  }
  return {
    page,
    /** problems returns the page's uncaught errors so far. */
    async problems() {
      const inPage = page.isClosed() ? [] : await page.evaluate(() => window.__problems);
      return [...problems, ...inPage];
    },
  };
}

/** waitFor polls fn until it returns a truthy value, or fails after timeout ms. */
export async function waitFor(fn, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** cleanupBuild removes the built server binary. */
export async function cleanupBuild() {
  if (!built) return;
  const { dir } = await built;
  await rm(dir, { recursive: true, force: true });
}

/**
 * bundle bundles a test page's entry module, and what it imports (React
 * and the client from node_modules and this folder), with esbuild, in
 * memory, and returns the JavaScript.
 */
export async function bundle(entry) {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    entryPoints: [fileURLToPath(entry)],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

// browserSuite registers the hooks every browser test file needs: one Go
// test server and one Chromium for the file, and after each test a check
// that its pages ended without an uncaught error or an InvalidStateError.
// suite.server is set once the file's tests start; suite.open(opts) opens a
// page (opts as for openPage); suite.restart(downMs) kills the server and
// starts it again on the same address downMs later.
export function browserSuite() {
  const suite = { server: null, browser: null, pages: [] };
  before(async () => {
    [suite.server, suite.browser] = await Promise.all([startServer(), launchBrowser()]);
  });
  after(async () => {
    await suite.browser?.close();
    await suite.server?.stop();
    await cleanupBuild();
  });
  afterEach(async () => {
    for (const p of suite.pages.splice(0)) {
      const problems = await p.problems();
      await p.page.evaluate(() => {
        window.l?.close();
        window.cleanup?.();
      });
      await p.page.close();
      assert.deepStrictEqual(problems, [], "the page had uncaught errors");
    }
  });
  suite.open = async (opts) => {
    const p = await openPage(suite.browser, suite.server.url, opts);
    suite.pages.push(p);
    return p.page;
  };
  suite.restart = async (downMs = 0) => {
    const addr = suite.server.addr;
    await suite.server.kill();
    await new Promise((r) => setTimeout(r, downMs));
    suite.server = await startServer(addr);
  };
  return suite;
}

/** range returns the integers from to to, inclusive. */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

/**
 * settle publishes one more message on channel and waits until the page,
 * which had count of them, has it too. Publications arrive in order, so
 * anything repeated would have arrived before it: no waiting a while for
 * duplicates.
 */
export async function settle(suite, page, channel, count) {
  await suite.server.post(`/test/publish?channel=${channel}&n=1`);
  await page.waitForFunction(([ch, n]) => window.got[ch].length >= n, [channel, count + 1]);
}

/**
 * publishThroughDrops publishes total messages on "feed", about 200 a
 * second, while the server drops the page's connection drops times (a
 * reconnection takes up to 1 s, well inside the history of 1024
 * publications), and waits until the page has them all, then settles.
 * The page follows "feed" and counts window.got.feed and window.acks.feed.
 */
export async function publishThroughDrops(suite, page, total, drops) {
  const publishing = (async () => {
    for (let k = 0; k < total / 10; k++) {
      await suite.server.post("/test/publish?channel=feed&n=10");
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const state = () => page.evaluate(() => JSON.stringify({ got: window.got.feed.length, acks: window.acks.feed, resets: window.resets.feed, statuses: window.statuses, cursor: window.l.cursor("feed") }));
  for (let d = 0; d < drops; d++) {
    await page.waitForFunction((n) => window.got.feed.length >= n, ((d + 1) * total) / (drops + 2), { timeout: 10000 })
      .catch(async (e) => assert.fail(`before drop ${d + 1}: ${e.message}: ${await state()}\n${suite.server.log()}`));
    const dropped = await suite.server.post("/test/drop");
    assert.ok(dropped >= 1, "the server dropped no connection");
    await page.waitForFunction((n) => window.acks.feed >= n, d + 2, { timeout: 10000 })
      .catch(async (e) => assert.fail(`after drop ${d + 1}: ${e.message}: ${await state()}\n${suite.server.log()}`));
  }
  await publishing;
  await page.waitForFunction((n) => window.got.feed.length >= n, total);
  await settle(suite, page, "feed", total);
}
