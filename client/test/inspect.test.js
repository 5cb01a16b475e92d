// The inspector (package inspect), in headless Chromium against the Go
// test server, which mounts it at /admin/live/: the page lists a
// connection that opens, without being reloaded, and its "Disconnect
// user" action ends that connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, waitFor } from "./harness.js";

const suite = browserSuite();

test("the inspector follows a user's connection and disconnects it", async () => {
  const insp = await suite.browser.context.newPage();
  const problems = [];
  insp.on("pageerror", (e) => problems.push(e.message));
  await insp.goto(suite.server.url + "/admin/live/?user=ann");
  await insp.evaluate(() => (window.notReloaded = true));
  // This node shows; ann has no connection yet.
  await waitFor(() => insp.locator("#nodes tbody tr").count(), "the nodes");
  assert.equal(await insp.locator("#user tbody tr").count(), 0);

  // ann opens a stream from another page.
  const client = await suite.open();
  await client.evaluate(() => new Promise((resolve) => {
    window.refused = [];
    window.es = new EventSource("/api/live/inspected?as=ann");
    window.es.addEventListener("refused", (e) => {
      window.refused.push(JSON.parse(e.data));
      window.es.close();
    });
    window.es.onopen = () => resolve();
  }));

  // The inspector lists it, by itself.
  const row = insp.locator("#user tbody tr", { hasText: "inspected" });
  await row.waitFor({ timeout: 15000 });
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1], "ann");
  assert.equal(cells[2], "sse");
  assert.equal(await insp.evaluate(() => window.notReloaded), true, "the page was reloaded");

  // Disconnect ann: her stream ends with a "refused" event, and the
  // inspector's list empties.
  await insp.locator('form[data-action="disconnect"] button').click();
  await waitFor(async () => (await insp.locator("#result").textContent()) === "disconnect: done", "the action's answer");
  await waitFor(() => client.evaluate(() => window.refused.length > 0), "ann's stream to be refused");
  assert.equal(await client.evaluate(() => window.refused[0].code), "disconnected");
  await waitFor(async () => (await insp.locator("#user tbody tr").count()) === 0, "the inspector to drop the connection");

  // An action without the page's token is refused.
  const forged = await client.evaluate(async () => {
    const res = await fetch("/admin/live/disconnect", { method: "POST", body: new URLSearchParams({ user: "ann" }) });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(forged.status, 403);
  assert.match(forged.body.error, /token/);
  assert.deepEqual(problems, []);
  await insp.close();
});
