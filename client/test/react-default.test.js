// react.js under new QueryClient(), React Query's defaults as an app
// gets them: writes made while the browser is offline show, are kept and
// are sent once back (the default mutation networkMode, "online", must
// not pause them), and StrictMode's mount, unmount and mount again logs
// no error.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, bundle, openPage } from "./harness.js";

const suite = browserSuite();
let pageOptions;
before(async () => {
  pageOptions = { script: await bundle(new URL("./react/app.jsx", import.meta.url)), ready: "appLoaded" };
});

// offline takes the page's browser off the network (navigator.onLine
// false, an "offline" event: what React Query's onlineManager follows) and
// the test server's proxy too, which still lets the page itself load.
async function offline(page, off) {
  await suite.server.post(`/test/proxy?mode=${off ? "offline" : ""}`);
  await suite.browser.context.setOffline(off);
  await page.waitForFunction((off) => navigator.onLine === !off, off);
}

const mountList = (page) =>
  page.evaluate(() => window.app.mount({ scenario: "list", strict: true, defaultClient: true, props: { timeout: 3000 } }));

const shown = (page, title) =>
  page.evaluate((title) => window.list?.().items.filter((t) => t.title === title).map((t) => Boolean(t._optimistic)), title);

test("new QueryClient(): an add made offline shows pending at once, is kept over a reload, and reaches the server once", async () => {
  const title = `offline ${Date.now().toString(36)}`;
  const { page, problems } = await openPage(suite.browser, suite.server.proxyURL, pageOptions);
  try {
    await page.evaluate(() => localStorage.clear());
    await mountList(page);
    await page.waitForFunction(() => window.list && !window.list().isLoading && window.liveLoaded);

    await offline(page, true);
    const start = Date.now();
    await page.evaluate((title) => window.list().add({ title, done: false }), title);
    await page.waitForFunction(() => window.list().pending === 1, undefined, { timeout: 1000 });
    const took = Date.now() - start;
    assert.deepStrictEqual(await shown(page, title), [true], "the added item shows, pending");
    assert.ok(await page.evaluate(() => localStorage.length) > 0, "the add is kept in localStorage");

    // A reload while offline: the browser is let online for the page to
    // load through the proxy, which is still offline, then taken off again.
    await suite.browser.context.setOffline(false);
    await page.reload();
    await page.waitForFunction(() => window.liveLoaded === true);
    await page.addScriptTag({ type: "module", content: pageOptions.script });
    await page.waitForFunction(() => window.appLoaded === true);
    await offline(page, true);
    await mountList(page);
    await page.waitForFunction(() => window.list?.().pending === 1, undefined, { timeout: 1000 });
    assert.deepStrictEqual(await shown(page, title), [true], "after the reload the add still shows, pending");

    await offline(page, false);
    await page.waitForFunction(() => window.list().pending === 0, undefined, { timeout: 20000 });
    await page.waitForFunction((title) => {
      const got = window.list().items.filter((t) => t.title === title);
      return got.length === 1 && !got[0]._optimistic;
    }, title);
    const server = (await suite.server.request("GET", "/api/todos")).body.filter((t) => t.title === title);
    assert.equal(server.length, 1, "the add reached the server exactly once");
    assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing is left in storage");
    console.log(`# pending 1 after ${took} ms offline`);
  } finally {
    await suite.browser.context.setOffline(false);
    await suite.server.post("/test/proxy?mode=");
    const found = await problems();
    await page.evaluate(() => window.cleanup?.());
    await page.close();
    assert.deepStrictEqual(found, [], "the page had uncaught errors");
  }
});

test("new QueryClient() under StrictMode: mount, unmount and mount again log no error or warning", async () => {
  const page = await suite.open(pageOptions);
  const logged = [];
  page.on("console", (m) => {
    // Chromium reports frames the server sent before it read the page's
    // close (the unmount closes an open socket while publications flow);
    // that race is the network's, not the page's doing.
    if (/Data frame received after close/.test(m.text())) return;
    if (m.type() === "error" || m.type() === "warning") logged.push(`${m.type()}: ${m.text()}`);
  });
  const loaded = () =>
    page.waitForFunction(() => document.getElementById("indicator")?.textContent === "Live" && document.getElementById("todos")?.dataset.loaded === "true" && document.getElementById("boardVersion")?.textContent !== "");
  const mount = () => page.evaluate(() => window.app.mount({ scenario: "page", strict: true, defaultClient: true }));
  await mount();
  await loaded();
  await page.evaluate(() => window.app.unmount());
  await mount();
  await loaded();
  // A write and its broadcast, through the hooks StrictMode mounted twice.
  await page.fill("#title", "strict");
  await page.click("#add button");
  await page.waitForFunction(() => [...document.querySelectorAll("#todos li")].some((li) => li.textContent.includes("strict") && !li.classList.contains("pending")));
  await page.evaluate(() => window.app.unmount());
  assert.deepStrictEqual(logged, []);
});
