// The connection's rules in Node, with a scripted WebSocket and a fake
// clock: backoff, one timer at a time, nothing sent on a socket that is not
// open, dedupe by cursor, resubscription with cursors, publish outcomes,
// the waits a drain tells (1012, Retry-After, retry lines).
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createLive, liveState, liveList } from "../live.js";

// A fake clock: setTimeout, clearTimeout and Date.now under the test's control.
const real = { setTimeout, clearTimeout, now: Date.now };
const clock = {
  now: 0,
  next: 1,
  timers: new Map(),
  install() {
    this.now = 1_000_000;
    this.timers.clear();
    globalThis.setTimeout = (fn, ms = 0) => {
      const id = this.next++;
      this.timers.set(id, { fn, at: this.now + Math.max(0, ms), ms });
      return id;
    };
    globalThis.clearTimeout = (id) => this.timers.delete(id);
    Date.now = () => this.now;
  },
  uninstall() {
    globalThis.setTimeout = real.setTimeout;
    globalThis.clearTimeout = real.clearTimeout;
    Date.now = real.now;
  },
  /** delays returns the delays of the pending timers. */
  delays() {
    return [...this.timers.values()].map((t) => t.ms);
  },
  /** advance runs the timers due within ms, in order. */
  async advance(ms) {
    const target = this.now + ms;
    for (;;) {
      await settle();
      let first;
      for (const [id, t] of this.timers) if (t.at <= target && (!first || t.at < first[1].at)) first = [id, t];
      if (!first) break;
      this.timers.delete(first[0]);
      this.now = first[1].at;
      first[1].fn();
    }
    this.now = target;
    await settle();
  },
};

async function settle() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

// A scripted WebSocket: send throws, as browsers do, unless it is open.
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error(`InvalidStateError: send in state ${this.readyState}`);
    this.sent.push(JSON.parse(text));
  }
  close() {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    queueMicrotask(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1005 });
    });
  }
  // Test controls.
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  fail() {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006 });
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

const last = () => FakeSocket.all.at(-1);
let lives = [];

function newLive(opts = {}) {
  const l = createLive({ url: "ws://hub.test/ws", transport: "websocket", WebSocket: FakeSocket, random: () => 0.999999, pingInterval: 0, ...opts });
  lives.push(l);
  return l;
}

beforeEach(() => {
  FakeSocket.all = [];
  clock.install();
});

afterEach(() => {
  for (const l of lives) l.close();
  lives = [];
  clock.uninstall();
});

test("backoff doubles from 1 s to 30 s, one timer at a time, and starts again after a connection", async () => {
  const l = newLive();
  const statuses = [];
  l.onStatus((c) => statuses.push(`${c.status}/${c.reconnectAttempt}`));
  const waits = [];
  for (let i = 0; i < 8; i++) {
    last().fail();
    assert.equal(clock.timers.size, 1, "more than one timer");
    waits.push(clock.delays()[0]);
    await clock.advance(clock.delays()[0]);
  }
  assert.deepStrictEqual(waits, [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  assert.equal(FakeSocket.all.length, 9);
  last().open();
  assert.deepStrictEqual(l.connection, { status: "connected", reconnectAttempt: 0, transport: "websocket", delayed: false, ending: null });
  last().fail();
  assert.deepStrictEqual(clock.delays(), [999]);
  assert.deepStrictEqual(statuses.slice(0, 6), ["connecting/0", "error/0", "disconnected/1", "connecting/1", "error/1", "disconnected/2"]);
});

test("full jitter: the wait is drawn below the ceiling", async () => {
  const draws = [0, 0.5];
  newLive({ random: () => draws.shift() });
  last().fail();
  assert.deepStrictEqual(clock.delays(), [0]);
  await clock.advance(0);
  last().fail();
  assert.deepStrictEqual(clock.delays(), [1000]);
});

test("nothing is sent on a socket that is not open", async () => {
  const l = newLive();
  const stop = l.subscribe("a", () => {});
  l.subscribe("b", () => {});
  const published = l.publish("a", { x: 1 });
  stop(); // unsubscribe while connecting: nothing to tell the hub
  assert.deepStrictEqual(last().sent, []);
  last().open();
  assert.deepStrictEqual(last().sent, [
    { type: "subscribe", channel: "b" },
    { type: "publish", channel: "a", data: { x: 1 }, ref: 1 },
  ]);
  last().receive({ type: "published", channel: "a", cursor: "7.e", ref: 1 });
  assert.equal(await published, "7.e");

  // Closing and closed sockets: no send either.
  const ws = last();
  ws.readyState = 2;
  l.subscribe("c", () => {});
  const queued = l.publish("c", 1);
  queued.catch(() => {}); // rejected with "closed" when the test ends
  ws.fail();
  assert.deepStrictEqual(ws.frames("subscribe").map((f) => f.channel), ["b"]);
  assert.deepStrictEqual(ws.frames("publish").map((f) => f.data), [{ x: 1 }]);
});

test("duplicates and frames of an unacknowledged subscription are dropped", async () => {
  const l = newLive();
  const got = [];
  l.subscribe("ch", (d, meta) => got.push([d, meta.cursor]));
  last().open();
  last().receive({ type: "data", channel: "ch", data: "early", cursor: "1.e" }); // before the ack
  last().receive({ type: "subscribed", channel: "ch", cursor: "1.e" });
  for (const [d, c] of [["a", "2.e"], ["b", "3.e"], ["a again", "2.e"], ["b again", "3.e"], ["c", "4.e"], ["coalesced", undefined]]) {
    last().receive({ type: "data", channel: "ch", data: d, cursor: c });
  }
  last().receive({ type: "data", channel: "ch", data: "new epoch", cursor: "1.f" });
  last().receive({ type: "data", channel: "ch", data: "old", cursor: "1.f" });
  assert.deepStrictEqual(got, [["a", "2.e"], ["b", "3.e"], ["c", "4.e"], ["coalesced", null], ["new epoch", "1.f"]]);
  assert.equal(l.cursor("ch"), "1.f");

  // A reset moves the cursor, even backwards, and the stream goes on after it.
  const resets = [];
  l.subscribe("r", () => got.push("r"), { onReset: (c, reason) => resets.push([c, reason]) });
  last().receive({ type: "subscribed", channel: "r", cursor: "9.e" });
  last().receive({ type: "reset", channel: "r", cursor: "3.e", reason: "ahead" });
  last().receive({ type: "data", channel: "r", data: 1, cursor: "4.e" });
  assert.deepStrictEqual(resets, [["3.e", "ahead"]]);
  assert.equal(got.at(-1), "r");

  // A State's in-band reset is taken even at an older cursor.
  const state = [];
  l.subscribe("s", (d) => state.push(d));
  last().receive({ type: "subscribed", channel: "s", cursor: "9.e" });
  last().receive({ type: "data", channel: "s", data: { version: 0, reset: true, reason: "ahead" }, cursor: "5.e" });
  assert.deepStrictEqual(state, [{ version: 0, reset: true, reason: "ahead" }]);
});

test("a text publication's event name is in its meta", async () => {
  const l = newLive();
  const got = [];
  l.subscribe("feed", (d, meta) => got.push([d, meta]));
  last().open();
  last().receive({ type: "subscribed", channel: "feed", cursor: "1.e" });
  last().receive({ type: "data", channel: "feed", data: "<li>a</li>", cursor: "2.e", event: "row" });
  last().receive({ type: "data", channel: "feed", data: "<li>b</li>", cursor: "3.e" });
  assert.deepStrictEqual(got, [
    ["<li>a</li>", { channel: "feed", cursor: "2.e", event: "row" }],
    ["<li>b</li>", { channel: "feed", cursor: "3.e" }],
  ]);
});

test("reconnection resubscribes every channel from its last cursor", async () => {
  const l = newLive();
  l.subscribe("a", () => {});
  l.subscribe("b", () => {}, { cursor: "3.saved" });
  last().open();
  assert.deepStrictEqual(last().frames("subscribe"), [{ type: "subscribe", channel: "a" }, { type: "subscribe", channel: "b", cursor: "3.saved" }]);
  last().receive({ type: "subscribed", channel: "a", cursor: "10.e" });
  last().receive({ type: "subscribed", channel: "b", cursor: "3.saved" });
  last().receive({ type: "data", channel: "a", data: 1, cursor: "11.e" });
  last().receive({ type: "data", channel: "b", data: 1, cursor: "4.saved" });
  last().fail();
  await clock.advance(1000);
  last().open();
  assert.deepStrictEqual(last().frames("subscribe"), [
    { type: "subscribe", channel: "a", cursor: "11.e" },
    { type: "subscribe", channel: "b", cursor: "4.saved" },
  ]);
});

test("a publish lost with its connection fails; one not yet sent waits", async () => {
  const l = newLive();
  last().open();
  const sent = l.publish("a", 1);
  last().fail();
  await assert.rejects(sent, { code: "disconnected" });
  const waiting = l.publish("a", 2);
  await clock.advance(1000);
  last().open();
  assert.deepStrictEqual(last().frames("publish"), [{ type: "publish", channel: "a", data: 2, ref: 2 }]);
  last().receive({ type: "error", code: "forbidden", message: "no", channel: "a", ref: 2 });
  await assert.rejects(waiting, { code: "forbidden" });
  const late = l.publish("a", 3, { timeout: 500 });
  last().fail();
  const timedOut = l.publish("a", 4, { timeout: 500 });
  await clock.advance(500);
  await assert.rejects(late, { code: "disconnected" });
  await assert.rejects(timedOut, { code: "timeout" });
});

test("close stops reconnecting and timers", async () => {
  const l = newLive();
  last().fail();
  assert.equal(clock.timers.size, 1);
  l.close();
  assert.equal(clock.timers.size, 0);
  await clock.advance(60000);
  assert.equal(FakeSocket.all.length, 1);
  assert.deepStrictEqual(l.connection, { status: "disconnected", reconnectAttempt: 1, transport: "websocket", delayed: false, ending: null });
  assert.throws(() => l.subscribe("a", () => {}), { code: "closed" });
});

test("a connection that stops answering is given up and replaced", async () => {
  newLive({ pingInterval: 1000, pongTimeout: 500 });
  const first = last();
  first.open();
  await clock.advance(999);
  assert.deepStrictEqual(first.frames("ping"), []);
  first.receive({ type: "pong" }); // any frame counts as life
  await clock.advance(999);
  assert.deepStrictEqual(first.frames("ping"), []);
  await clock.advance(1);
  assert.deepStrictEqual(first.frames("ping"), [{ type: "ping" }]);
  first.receive({ type: "pong" });
  await clock.advance(1000);
  assert.equal(first.frames("ping").length, 2);
  await clock.advance(500); // no pong this time
  assert.equal(first.readyState, 3);
  assert.equal(clock.delays().length, 1, "one reconnect timer");
  await clock.advance(1000);
  assert.equal(FakeSocket.all.length, 2);
});

// A fetch that answers from a script, recording requests.
function scriptedFetch(routes) {
  const calls = [];
  const fn = async (url, init = {}) => {
    const method = init.method ?? "GET";
    calls.push({ method, url, headers: init.headers, body: init.body });
    const answer = await routes(method, url, init);
    return new Response(answer.body === undefined ? null : JSON.stringify(answer.body), { status: answer.status ?? 200 });
  };
  fn.calls = calls;
  return fn;
}

/** changed resolves on the next change of a liveState or liveList. */
function changed(x) {
  return new Promise((resolve) => {
    const stop = x.onChange(() => {
      stop();
      resolve();
    });
  });
}

test("liveState: fetch after the ack, deltas, gap and reset refetch", async () => {
  const l = newLive();
  let server = { data: { n: 0 }, version: 5 };
  const fetch = scriptedFetch(() => ({ body: server }));
  const s = liveState(l, { channel: "board", url: "/api/state/board", fetch });
  last().open();
  assert.equal(fetch.calls.length, 0, "fetched before the subscription was acknowledged");
  last().receive({ type: "subscribed", channel: "board", cursor: "5.e" });
  await s.ready;
  assert.deepStrictEqual([s.value, s.version], [{ n: 0 }, 5]);
  const delta = (v, n) => ({ type: "data", channel: "board", data: { version: v, changes: [{ op: "update", path: "n", value: n }] }, cursor: `${v}.e` });
  last().receive(delta(6, 1));
  last().receive(delta(7, 2));
  assert.deepStrictEqual([s.value, s.version], [{ n: 2 }, 7]);

  server = { data: { n: 4 }, version: 9 };
  let next = changed(s);
  last().receive(delta(9, 4)); // 8 is missing: refetch
  await next;
  assert.deepStrictEqual([s.value, s.version, fetch.calls.length], [{ n: 4 }, 9, 2]);

  // A reset carrying the value is adopted at its cursor; one without is refetched.
  last().receive({ type: "data", channel: "board", data: { version: 0, reset: true, data: { n: 10 } }, cursor: "12.e" });
  assert.deepStrictEqual([s.value, s.version], [{ n: 10 }, 12]);
  server = { data: { n: 13 }, version: 13 };
  next = changed(s);
  last().receive({ type: "data", channel: "board", data: { version: 0, reset: true, reason: "gone" }, cursor: "13.e" });
  await next;
  assert.deepStrictEqual([s.value, s.version, fetch.calls.length], [{ n: 13 }, 13, 3]);
  s.close();
});

test("liveList: the server's item replaces the optimistic one once, whichever comes first", async () => {
  const l = newLive();
  let answer;
  const fetch = scriptedFetch((method) => (method === "GET" ? { body: [] } : new Promise((r) => (answer = r))));
  const list = liveList(l, { channel: "todos", url: "/api/todos", fetch });
  last().open();
  last().receive({ type: "subscribed", channel: "todos", cursor: "0.e" });
  await list.ready;

  // Broadcast first.
  const added = list.add({ title: "a" });
  assert.equal(list.items.length, 1);
  assert.equal(list.items[0]._optimistic, true);
  const mid = fetch.calls.at(-1).headers["Live-Mutation-Id"];
  assert.equal(list.items[0].id, mid);
  last().receive({ type: "data", channel: "todos", data: { type: "add", item: { id: "t1", title: "a" }, mutationId: mid }, cursor: "1.e" });
  assert.deepStrictEqual(list.items, [{ id: "t1", title: "a" }]);
  answer({ status: 201, body: { id: "t1", title: "a" } });
  assert.deepStrictEqual(await added, { id: "t1", title: "a" });
  assert.deepStrictEqual(list.items, [{ id: "t1", title: "a" }]);

  // Response first.
  const second = list.add({ title: "b" });
  const mid2 = fetch.calls.at(-1).headers["Live-Mutation-Id"];
  answer({ status: 201, body: { id: "t2", title: "b" } });
  await second;
  assert.deepStrictEqual(list.items, [{ id: "t2", title: "b" }, { id: "t1", title: "a" }]);
  last().receive({ type: "data", channel: "todos", data: { type: "add", item: { id: "t2", title: "b" }, mutationId: mid2 }, cursor: "2.e" });
  assert.deepStrictEqual(list.items, [{ id: "t2", title: "b" }, { id: "t1", title: "a" }]);

  // Failure rolls back.
  const failed = list.add({ title: "c" });
  assert.equal(list.items.length, 3);
  answer({ status: 500, body: { error: "boom", message: "no" } });
  await assert.rejects(failed, { code: "boom", status: 500 });
  assert.deepStrictEqual(list.items.map((t) => t.id), ["t2", "t1"]);

  // A bulk change announced as {"type":"refetch"} reloads the list.
  const gets = fetch.calls.filter((c) => c.method === "GET").length;
  const reloaded = changed(list);
  last().receive({ type: "data", channel: "todos", data: { type: "refetch" }, cursor: "3.e" });
  await reloaded;
  assert.equal(fetch.calls.filter((c) => c.method === "GET").length, gets + 1);
  assert.deepStrictEqual(list.items, []);
  list.close();
});

test("liveList: items show in the stream's order, whatever order they reach the page in", async () => {
  const l = newLive();
  let server = []; // what GET answers
  const answers = []; // resolvers of the POSTs, in the order they were made
  const fetch = scriptedFetch((method) => (method === "GET" ? { body: server } : new Promise((r) => answers.push(r))));
  const views = [];
  const list = liveList(l, { channel: "feed", url: "/api/feed", fetch, onChange: (items) => views.push(items.map((t) => t.id)) });
  const ids = () => list.items.map((t) => t.id);
  const item = (id) => ({ id, text: id });
  const add = (id, cursor, mutationId) =>
    last().receive({ type: "data", channel: "feed", data: { type: "add", item: item(id), ...(mutationId ? { mutationId } : {}) }, cursor });
  last().open();
  last().receive({ type: "subscribed", channel: "feed", cursor: "0.e" });
  await list.ready;
  add("s1", "1.e");

  // Live: the response to our add comes before the broadcasts of adds
  // made elsewhere earlier (Hub.Hook answers, then publishes). The stream
  // will bring ours after them: it stays the newest as they come in.
  const mine = list.add({ text: "mine" });
  const mid = fetch.calls.at(-1).headers["Live-Mutation-Id"];
  assert.deepStrictEqual(ids(), [mid, "s1"]);
  answers.shift()({ status: 201, body: item("m1") });
  await mine;
  assert.deepStrictEqual(ids(), ["m1", "s1"]);
  add("s2", "2.e");
  add("s3", "3.e");
  assert.deepStrictEqual(ids(), ["m1", "s3", "s2", "s1"]);
  add("m1", "4.e", mid);
  assert.deepStrictEqual(ids(), ["m1", "s3", "s2", "s1"]);

  // A gap: the connection is lost, our next add is answered meanwhile
  // (its publication waits, as a hub's does while its broker is away),
  // and the replay on resuming brings what others added before it.
  last().fail();
  const second = list.add({ text: "mine too" });
  const mid2 = fetch.calls.at(-1).headers["Live-Mutation-Id"];
  answers.shift()({ status: 201, body: item("m2") });
  await second;
  await clock.advance(1000);
  last().open();
  assert.deepStrictEqual(last().frames("subscribe"), [{ type: "subscribe", channel: "feed", cursor: "4.e" }]);
  last().receive({ type: "subscribed", channel: "feed", cursor: "4.e" });
  add("s5", "5.e");
  add("s6", "6.e");
  assert.deepStrictEqual(ids(), ["m2", "s6", "s5", "m1", "s3", "s2", "s1"]);
  add("m2", "7.e", mid2);
  assert.deepStrictEqual(ids(), ["m2", "s6", "s5", "m1", "s3", "s2", "s1"]);

  // A pending add stays on top while the stream brings older adds, and
  // its broadcast, coming before its response, places it.
  const third = list.add({ text: "third" });
  const mid3 = fetch.calls.at(-1).headers["Live-Mutation-Id"];
  add("s8", "8.e");
  assert.deepStrictEqual(ids(), [mid3, "s8", "m2", "s6", "s5", "m1", "s3", "s2", "s1"]);
  add("m3", "9.e", mid3);
  answers.shift()({ status: 201, body: item("m3") });
  await third;
  assert.deepStrictEqual(ids(), ["m3", "s8", "m2", "s6", "s5", "m1", "s3", "s2", "s1"]);

  // A reset, then a fetch from a node that lists an add of its own first
  // (answered, not yet published) and lacks the newest add made
  // elsewhere. Adds the stream brings during the fetch and after it put
  // every item where the stream says: x1 was published before n1.
  server = [item("n1"), item("x0"), item("m3"), item("s8"), item("m2")];
  const reloaded = changed(list);
  last().receive({ type: "reset", channel: "feed", cursor: "20.e", reason: "gone" });
  add("x0", "21.e"); // held during the fetch, and listed by it already
  await reloaded;
  assert.deepStrictEqual(ids(), ["x0", "n1", "m3", "s8", "m2"]);
  add("x1", "22.e");
  add("n1", "23.e");
  assert.deepStrictEqual(ids(), ["n1", "x1", "x0", "m3", "s8", "m2"]);

  // Removals and edits keep the order; no item ever showed twice.
  last().receive({ type: "data", channel: "feed", data: { type: "remove", id: "x1" }, cursor: "24.e" });
  last().receive({ type: "data", channel: "feed", data: { type: "update", item: { id: "m3", text: "edited" } }, cursor: "25.e" });
  add("x2", "26.e");
  assert.deepStrictEqual(ids(), ["x2", "n1", "x0", "m3", "s8", "m2"]);
  assert.equal(list.items.find((t) => t.id === "m3").text, "edited");
  for (const v of views) assert.equal(new Set(v).size, v.length, `a view showed an item twice: ${v}`);
  list.close();
});

// ---------------------------------------------------------------------------
// The SSE transport, against a scripted fetch whose streams the test writes.

function sseFetch() {
  const calls = [];
  const fn = async (url, init = {}) => {
    const call = { url: new URL(url), method: init.method ?? "GET", init };
    calls.push(call);
    if (call.method === "POST") {
      return new Response(JSON.stringify({ success: true, channel: decodeURIComponent(call.url.pathname.split("/").pop()), cursor: "9.e" }));
    }
    if (fn.answers.length > 0) {
      const a = fn.answers.shift();
      return new Response(JSON.stringify(a.body), { status: a.status, headers: { "Content-Type": "application/json", ...a.headers } });
    }
    let ctl;
    const body = new ReadableStream({ start: (c) => (ctl = c) });
    init.signal?.addEventListener("abort", () => {
      try {
        ctl.error(new DOMException("aborted", "AbortError"));
      } catch {}
    });
    call.send = (text) => ctl.enqueue(new TextEncoder().encode(text));
    call.end = () => ctl.close();
    return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
  };
  fn.calls = calls;
  fn.answers = [];
  fn.streams = () => calls.filter((c) => c.method === "GET");
  return fn;
}

/** flush lets fetches, stream reads and the debounce run. */
async function flush() {
  for (let i = 0; i < 5; i++) {
    await clock.advance(0);
    await new Promise((r) => real.setTimeout(r, 0));
  }
}

function newSSE(fetch, opts = {}) {
  return newLive({ transport: "sse", sseURL: "http://hub.test/api/live", fetch, ...opts });
}

const frame = (f) => `data: ${JSON.stringify(f)}\n\n`;

test("sse: one stream for the channels of a task, events parsed however they are cut", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch);
  const got = [];
  for (let i = 0; i < 10; i++) l.subscribe(`c${i}`, (d, meta) => got.push([meta.channel, d]), i === 3 ? { cursor: "5.e" } : {});
  await flush();
  assert.equal(fetch.streams().length, 1);
  const s = fetch.streams()[0];
  assert.equal(s.url.origin + s.url.pathname, "http://hub.test/api/live");
  assert.deepStrictEqual(s.url.searchParams.get("channels").split(","), Array.from({ length: 10 }, (_, i) => `c${i}`));
  assert.equal(s.url.searchParams.get("cursor.c3"), "5.e");
  assert.equal(s.init.headers.Accept, "text/event-stream");
  assert.equal(l.connection.status, "connected");

  // LF, CRLF and CR line ends, cuts inside lines and inside CRLF, comments,
  // other fields, and data over two lines (joined with a newline).
  s.send(frame({ type: "subscribed", channel: "c0", cursor: "1.e" }).replace(/\n/g, "\r\n"));
  s.send(": heartbeat\n\nid: ignored\nevent: x\nretry: 5\r");
  s.send(`data: {"type":"data","channel":"c0","da`);
  s.send(`ta":1,"cursor":"2.e"}\r`);
  s.send(`\r\ndata: {"type":"data","channel":"c0",\ndata: "data":2,"cursor":"3.e"}\r\r`);
  s.send(frame({ type: "data", channel: "c0", data: "ü", cursor: "4.e" }).slice(0, -1));
  await flush();
  assert.deepStrictEqual(got, [["c0", 1], ["c0", 2]]);
  s.send("\n");
  await flush();
  assert.deepStrictEqual(got, [["c0", 1], ["c0", 2], ["c0", "ü"]]);
  assert.equal(l.cursor("c0"), "4.e");
});

test("sse: a change of channels reopens the stream from the cursors reached; a failure backs off", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch);
  const statuses = [];
  l.onStatus((c) => statuses.push(`${c.status}/${c.reconnectAttempt}`));
  const stopA = l.subscribe("a", () => {});
  l.subscribe("b", () => {});
  await flush();
  const first = fetch.streams()[0];
  first.send(frame({ type: "subscribed", channel: "a", cursor: "1.e" }) + frame({ type: "subscribed", channel: "b", cursor: "7.f" }));
  first.send(frame({ type: "data", channel: "a", data: 1, cursor: "2.e" }));
  await flush();
  stopA();
  l.subscribe("c", () => {});
  await flush();
  assert.equal(fetch.streams().length, 2);
  assert.ok(first.init.signal.aborted, "the old stream is still open");
  const second = fetch.streams()[1].url.searchParams;
  assert.equal(second.get("channels"), "b,c");
  assert.equal(second.get("cursor.b"), "7.f");
  assert.equal(second.get("cursor.a"), null);
  assert.deepStrictEqual(statuses, ["connecting/0", "connected/0"]);

  // The stream ends: reconnect after the backoff, from the cursors.
  fetch.streams()[1].end();
  await flush();
  assert.deepStrictEqual(statuses.slice(2), ["error/0", "disconnected/1"]);
  assert.deepStrictEqual(clock.delays(), [999]);
  fetch.answers.push({ status: 503, body: { error: "closed", message: "shutting down" } });
  const errors = [];
  l.onError((e) => errors.push([e.code, e.status]));
  await clock.advance(999);
  await flush();
  assert.deepStrictEqual(errors, [["closed", 503]]);
  assert.deepStrictEqual(clock.delays(), [1999]);
  await clock.advance(1999);
  await flush();
  assert.equal(fetch.streams().length, 4);
  assert.equal(fetch.streams()[3].url.searchParams.get("cursor.b"), "7.f");
  assert.deepStrictEqual(l.connection, { status: "connected", reconnectAttempt: 0, transport: "sse", delayed: false, ending: null });
});

test("sse: refused channels are reported and left out; bad names never reach the hub", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch);
  const errors = [];
  l.subscribe("bad name", () => {}, { onError: (e) => errors.push(["bad name", e.code]) });
  l.subscribe("secret", () => {}, { onError: (e) => errors.push(["secret", e.code, e.status]) });
  fetch.answers.push({ status: 403, body: { error: "forbidden", message: "no" } });
  await flush();
  assert.deepStrictEqual(errors, [["bad name", "bad_channel"], ["secret", "forbidden", 403]]);
  assert.equal(fetch.streams()[0].url.searchParams.get("channels"), "secret");
  assert.equal(clock.timers.size, 0, "a refusal is not retried by itself");
  assert.equal(l.connection.status, "connected");

  // A new channel: a stream for it alone; the hub's error frame for another.
  l.subscribe("open", () => {});
  l.subscribe("other", () => {}, { onError: (e) => errors.push(["other", e.code]) });
  await flush();
  const s = fetch.streams()[1];
  assert.equal(s.url.searchParams.get("channels"), "open,other");
  s.send(frame({ type: "subscribed", channel: "open", cursor: "1.e" }) + frame({ type: "error", code: "forbidden", message: "no", channel: "other" }));
  await flush();
  assert.deepStrictEqual(errors.at(-1), ["other", "forbidden"]);
  l.subscribe("third", () => {});
  await flush();
  assert.equal(fetch.streams()[2].url.searchParams.get("channels"), "open,third");
});

test("sse: a silent stream is given up after pingInterval + pongTimeout", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch, { pingInterval: 1000, pongTimeout: 500 });
  l.subscribe("a", () => {});
  await flush();
  const s = fetch.streams()[0];
  await clock.advance(1000);
  s.send(": heartbeat\n\n");
  await flush();
  await clock.advance(1000);
  assert.equal(l.connection.status, "connected");
  await clock.advance(500);
  await flush();
  assert.ok(s.init.signal.aborted);
  assert.equal(l.connection.status, "disconnected");
});

test("sse: publishing is a POST", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch);
  assert.equal(await l.publish("a:b", { x: 1 }), "9.e");
  const post = fetch.calls.find((c) => c.method === "POST");
  assert.equal(post.url.href, "http://hub.test/api/live/a%3Ab");
  assert.equal(post.init.body, '{"x":1}');
  assert.equal(post.init.headers["Content-Type"], "application/json");
});

test("sse: under a prefix mount the stream is at the prefix itself, publishing below it", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch, { sseURL: "http://hub.test/live/" });
  l.subscribe("a", () => {});
  await flush();
  const s = fetch.streams()[0];
  assert.equal(s.url.origin + s.url.pathname, "http://hub.test/live/");
  assert.equal(s.url.searchParams.get("channels"), "a");
  await l.publish("a", 1);
  assert.equal(fetch.calls.find((c) => c.method === "POST").url.href, "http://hub.test/live/a");
});

test("auto: a socket that fails before it opens falls back to SSE; one that opened does not", async () => {
  const fetch = sseFetch();
  const l = newLive({ transport: "auto", sseURL: "http://hub.test/api/live", fetch });
  const statuses = [];
  l.onStatus((c) => statuses.push(c.status));
  l.subscribe("a", () => {});
  const published = l.publish("a", 1);
  last().fail();
  await flush();
  assert.equal(l.transport, "sse");
  assert.equal(fetch.streams().length, 1);
  assert.equal(await published, "9.e");
  // Connecting over WebSocket, then over SSE, then connected.
  assert.deepStrictEqual(statuses, ["connecting", "connecting", "connected"]);
  assert.equal(l.connection.transport, "sse");
  assert.equal(FakeSocket.all.length, 1);

  const kept = newLive({ transport: "auto", fetch });
  last().open();
  last().fail();
  await clock.advance(1000);
  assert.equal(kept.transport, "websocket");
  assert.equal(FakeSocket.all.length, 3);

  // A socket that never opens counts as failed after connectTimeout.
  const slow = newLive({ transport: "auto", sseURL: "http://hub.test/api/live", fetch, connectTimeout: 2000 });
  slow.subscribe("b", () => {});
  await clock.advance(2000);
  await flush();
  assert.equal(slow.transport, "sse");
});

// A drain (Hub.Drain): the ending 1012 and its delay, Retry-After and retry
// lines set when the client comes back, not the backoff.

test("drain: a WebSocket closed 1012 comes back after the delay it was told, connecting meanwhile", async () => {
  const l = newLive();
  const statuses = [];
  const ends = [];
  l.onStatus((c) => statuses.push(`${c.status}/${c.reconnectAttempt}`));
  l.onEnd((e) => ends.push(e));
  l.subscribe("a", () => {});
  last().open();
  last().receive({ type: "subscribed", channel: "a", cursor: "3.e" });
  const s = last();
  s.readyState = 3;
  s.onclose?.({ code: 1012, reason: "restart; retry in 300 ms" });
  assert.deepStrictEqual(ends, [{ code: 1012, reason: "restart; retry in 300 ms", retry: true, transport: "websocket" }]);
  assert.deepStrictEqual(clock.delays(), [300]);
  await clock.advance(299);
  assert.equal(FakeSocket.all.length, 1);
  await clock.advance(1);
  assert.equal(FakeSocket.all.length, 2);
  last().open();
  assert.deepStrictEqual(last().frames("subscribe").map((f) => f.cursor), ["3.e"]);
  assert.deepStrictEqual(statuses, ["connecting/0", "connected/0", "connecting/0", "connected/0"]);

  // Without a delay it says, under a second.
  last().readyState = 3;
  last().onclose?.({ code: 1012, reason: "restart" });
  assert.deepStrictEqual(clock.delays(), [999]);
});

test("drain: a close frame's retry, a 503's Retry-After and a retry line set the wait", async () => {
  const fetch = sseFetch();
  const l = newSSE(fetch);
  const statuses = [];
  const errors = [];
  l.onStatus((c) => statuses.push(c.status));
  l.onError((e) => errors.push(e.code));
  l.subscribe("a", () => {});
  await flush();
  fetch.streams()[0].send(frame({ type: "subscribed", channel: "a", cursor: "1.e" }) + frame({ type: "close", closeCode: 1012, reason: "restart; retry in 900 ms", retry: 250 }));
  await flush();
  assert.deepStrictEqual(clock.delays(), [250]);
  assert.deepStrictEqual(statuses, ["connecting", "connected", "connecting"]);

  // The next node is draining too: 503 with Retry-After, not an error.
  fetch.answers.push({ status: 503, body: { error: "draining", message: "draining" }, headers: { "Retry-After": "2" } });
  await clock.advance(250);
  await flush();
  assert.deepStrictEqual(errors, []);
  assert.deepStrictEqual(clock.delays(), [2999], "2 s, jittered up to half again");
  await clock.advance(2999);
  await flush();
  const s = fetch.streams()[2];
  assert.equal(s.url.searchParams.get("cursor.a"), "1.e");

  // A stream that said when to come back and ends.
  s.send("retry: 400\n\n");
  s.end();
  await flush();
  assert.deepStrictEqual(clock.delays(), [599]);
});

test("drain: a WebSocket that did not open, its hub answering 503 with Retry-After, comes back then", async () => {
  const fetch = sseFetch();
  newLive({ sseURL: "http://hub.test/api/live", fetch });
  fetch.answers.push({ status: 503, body: { error: "draining" }, headers: { "Retry-After": "3" } });
  last().fail();
  assert.deepStrictEqual(clock.delays(), [999]);
  await flush();
  assert.equal(fetch.calls.length, 1);
  assert.equal(fetch.calls[0].url.searchParams.get("channels"), "");
  assert.deepStrictEqual(clock.delays(), [4499]);
});

test("poll: long-polls from the cursors reached, keeping subscriptions; presence tags go back", async () => {
  const fetch = sseFetch();
  const l = newLive({ transport: "poll", sseURL: "http://hub.test/api/live", fetch });
  const got = [];
  const acks = [];
  l.subscribe("a", (d) => got.push(d), { onSubscribed: (c) => acks.push(c) });
  fetch.answers.push({ status: 200, body: [{ type: "subscribed", channel: "a", cursor: "1.e" }, { type: "presence", channel: "a", members: [], count: 0, tag: "t1" }] });
  fetch.answers.push({ status: 200, body: [{ type: "data", channel: "a", data: 2, cursor: "2.e" }] });
  fetch.answers.push({ status: 200, body: [] });
  await flush();
  const polls = fetch.streams().slice(0, 3).map((c) => c.url.searchParams);
  assert.equal(polls[0].get("poll"), "");
  assert.equal(polls[0].get("cursor.a"), null);
  assert.equal(polls[1].get("cursor.a"), "1.e");
  assert.equal(polls[1].get("presence.a"), "t1");
  assert.equal(polls[2].get("cursor.a"), "2.e");
  assert.equal(fetch.streams()[0].init.headers.Accept, "application/json");
  assert.deepStrictEqual(got, [2], "a resumed poll's data is taken without a new acknowledgement");
  assert.deepStrictEqual(acks, ["1.e"]);
  assert.equal(l.connection.transport, "poll");
  const published = await l.publish("a", 3);
  assert.equal(published, "9.e", "publishing is a POST");
});

test("poll: a resumed channel asks for its acknowledgement; answers with nothing new pace the next poll, up to 5 s, until news", async () => {
  const fetch = sseFetch();
  const l = newLive({ transport: "poll", sseURL: "http://hub.test/api/live", fetch });
  const got = [];
  const acks = [];
  l.subscribe("a", (d) => got.push(d), { cursor: "3.e", onSubscribed: (c) => acks.push(c) });
  // Nothing this client takes: data of a channel not acknowledged, and
  // empty answers sent at once.
  const old = [{ type: "data", channel: "a", data: 4, cursor: "4.e" }];
  fetch.answers.push({ status: 200, body: old });
  await flush();
  assert.equal(fetch.streams().length, 1);
  const waits = [];
  for (const want of [250, 500, 1000, 2000, 4000, 5000, 5000]) {
    fetch.answers.push({ status: 200, body: waits.length % 2 ? [] : old });
    const n = fetch.streams().length;
    await clock.advance(want - 1);
    await flush();
    assert.equal(fetch.streams().length, n, `no poll before ${want} ms`);
    await clock.advance(1);
    await flush();
    assert.equal(fetch.streams().length, n + 1, `a poll after ${want} ms`);
    waits.push(want);
  }
  assert.ok(fetch.streams().every((c) => c.url.searchParams.get("ack") === "a"), "every poll asks for the acknowledgement it lacks");
  assert.deepStrictEqual(got, []);

  // News: the next poll goes at once, without asking again; so does the
  // one after it, and the pace starts again from 250 ms.
  fetch.answers.push(
    { status: 200, body: [{ type: "subscribed", channel: "a", cursor: "3.e" }, ...old] },
    { status: 200, body: [{ type: "data", channel: "a", data: 5, cursor: "5.e" }] },
    { status: 200, body: [] },
  );
  const n = fetch.streams().length;
  await clock.advance(5000);
  await flush();
  assert.deepStrictEqual(got, [4, 5]);
  assert.deepStrictEqual(acks, ["3.e"]);
  assert.equal(fetch.streams().length, n + 3, "after news, at once");
  const after = fetch.streams().slice(n + 1).map((c) => [c.url.searchParams.get("cursor.a"), c.url.searchParams.get("ack")]);
  assert.deepStrictEqual(after, [["4.e", null], ["5.e", null]]);
  fetch.answers.push({ status: 200, body: [] });
  await clock.advance(249);
  await flush();
  assert.equal(fetch.streams().length, n + 3);
  await clock.advance(1);
  await flush();
  assert.equal(fetch.streams().length, n + 4);
  l.close();
});

test("auto: down to polling when a stream brings nothing, and back up when a probe opens a WebSocket", async () => {
  const fetch = sseFetch();
  const l = newLive({ transport: "auto", sseURL: "http://hub.test/api/live", fetch, firstFrameTimeout: 5000, probeInterval: 300000 });
  const transports = [];
  l.onStatus((c) => transports.at(-1) !== c.transport && transports.push(c.transport));
  l.subscribe("a", () => {});
  last().fail(); // refused on the way: the stream next
  await flush();
  assert.equal(l.transport, "sse");
  const stream = fetch.streams()[0];
  await clock.advance(5000); // it opened, but nothing came through
  await flush();
  assert.equal(l.transport, "poll");
  assert.ok(stream.init.signal.aborted, "the buffered stream is given up");
  fetch.answers.push({ status: 200, body: [{ type: "subscribed", channel: "a", cursor: "4.e" }] });
  await flush();
  assert.equal(fetch.streams()[1].url.searchParams.get("poll"), "");

  // A probe 30 s later: a WebSocket opens, and the client moves up to it.
  const sockets = FakeSocket.all.length;
  await clock.advance(30000);
  await flush();
  assert.equal(FakeSocket.all.length, sockets + 1, "one probe");
  last().open();
  await flush();
  assert.equal(l.transport, "websocket");
  last().open();
  assert.deepStrictEqual(last().frames("subscribe"), [{ type: "subscribe", channel: "a", cursor: "4.e" }], "resumed from the cursor polling reached");
  assert.deepStrictEqual(transports, ["websocket", "sse", "poll", "websocket"]);
});

test("status frames: a hub whose broker link broke says updates are delayed, then that they flow again; a new connection starts undelayed", async () => {
  const l = newLive();
  const seen = [];
  l.onStatus((c) => seen.push([c.status, c.delayed]));
  l.subscribe("ch", () => {});
  last().open();
  last().receive({ type: "subscribed", channel: "ch", cursor: "1.e" });
  last().receive({ type: "status", status: "delayed" });
  assert.equal(l.connection.delayed, true);
  last().receive({ type: "status", status: "delayed" }); // said once
  last().receive({ type: "status", status: "live" });
  assert.equal(l.connection.delayed, false);
  last().receive({ type: "status", status: "delayed" });
  last().fail();
  assert.equal(l.connection.delayed, false);
  await clock.advance(clock.delays()[0]);
  last().open();
  assert.equal(l.connection.status, "connected");
  assert.equal(l.connection.delayed, false);
  assert.deepStrictEqual(seen.filter(([, d]) => d), [["connected", true], ["connected", true]]);
  assert.equal(seen.filter(([s, d]) => s === "connected" && !d).length >= 2, true);
});
