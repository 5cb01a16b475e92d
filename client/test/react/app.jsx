// The React test page: react.js (or, for the defect checks, the seed's
// code in seed.jsx) under a QueryClientProvider, with probes that record
// what they render in window.rec. The tests drive it through window.app.
import { StrictMode, useEffect, useLayoutEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { flushSync } from "react-dom";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import * as ours from "../../react.js";
import * as seed from "./seed.jsx";

// Every WebSocket the page makes, to count them.
const sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    sockets.push(this);
  }
};

const rec = {
  sockets,
  statuses: [],
  got: {},
  renders: [], // useLiveList: the items of every render
  data: [], // useLiveData: the data of every render
  delta: null, // useDeltaSync: {data, version} of the last render
  fetches: 0,
  errors: [],
  problems: [], // what a probe found wrong as it rendered
  answers: [], // the page: when each mutation's response came (performance.now())
  firstShown: {}, // the page: title -> how a todo looked when it first showed
  versions: [], // the page: the board's version, as each render committed it
  presence: [], // usePresence: each change's joined and left
};
window.rec = rec;

function StatusProbe({ impl }) {
  const ctx = impl.useLive();
  const { connection } = ctx;
  useEffect(() => {
    window.liveContext = ctx;
  });
  useEffect(() => {
    rec.statuses.push({ ...connection, at: performance.now() });
  }, [connection]);
  return <p id="status">{connection.status}</p>;
}

function Subscriber({ impl, channel }) {
  const { subscribe } = impl.useLive();
  useEffect(
    () =>
      subscribe(channel, (data) => {
        (rec.got[channel] ??= []).push(data);
      }),
    [subscribe, channel],
  );
  return null;
}

// Hooks of react.js that subscribe as they mount.
function AllHooks() {
  ours.useLiveData({ channel: "toggle:data", queryKey: ["toggle", "data"], fetcher: async () => ({}) });
  ours.useDeltaSync(["toggle", "board"], "board", () => fetch("/api/state/board").then((r) => r.json()));
  ours.useLiveList("todos", ["toggle", "todos"], () => fetch("/api/todos").then((r) => r.json()));
  return null;
}

function Toggle({ impl, channel, hooks }) {
  const [show, setShow] = useState(true);
  useEffect(() => {
    window.app.setShow = (v) => flushSync(() => setShow(v));
  }, []);
  return show ? (
    <>
      <Subscriber impl={impl} channel={channel} />
      {hooks && <AllHooks />}
    </>
  ) : null;
}

function DataProbe({ channel, queryKey, merge }) {
  const q = ours.useLiveData({
    channel,
    queryKey,
    fetcher: () => {
      rec.fetches++;
      return window.fetcher();
    },
    merge: merge ? window[merge] : undefined,
    onError: (e) => rec.errors.push(`${e.name}: ${e.message}`),
  });
  rec.data.push(q.data);
  return null;
}

function DeltaProbe() {
  const q = ours.useDeltaSync(["board"], "board", () => {
    rec.fetches++;
    return fetch("/api/state/board", { cache: "no-store" }).then((r) => r.json());
  }, { onError: (e) => rec.errors.push(`${e.name}: ${e.message}`) });
  rec.delta = { data: q.data, version: q.version, isLive: q.isLive };
  return null;
}

function ListProbe({ impl, postURL, timeout }) {
  const list = impl.useLiveList("todos", ["todos"], () => fetch("/api/todos", { cache: "no-store" }).then((r) => r.json()), {
    url: postURL,
    itemURL: (id) => `/api/todos/${id}`,
    timeout,
    // X-Test-Status and X-Test-Delay from window.nextHeaders, for one request.
    fetch: (url, init) => {
      const extra = window.nextHeaders ?? {};
      window.nextHeaders = null;
      return fetch(url, { ...init, headers: { ...init.headers, ...extra } });
    },
    onError: (e) => rec.errors.push({ code: e.code, status: e.status }),
  });
  rec.renders.push(list.items.map((t) => ({ ...t })));
  const seen = new Set();
  for (const t of list.items) {
    if (seen.has(t.title)) rec.problems.push(`render ${rec.renders.length - 1} shows ${t.title} twice`);
    seen.add(t.title);
  }
  const ref = useRef(list);
  ref.current = list;
  useEffect(() => {
    window.list = () => ref.current;
  }, []);
  return null;
}

// --- a small page built from the hooks, checked as a user sees it: the
// connection indicator, a live value, a todo list and the board.

function indicatorText({ status, reconnectAttempt: n }) {
  switch (status) {
    case "connected":
      return "Live";
    case "connecting":
      return n > 0 ? `Reconnecting (attempt ${n})` : "Connecting…";
    case "disconnected":
      return `Disconnected, retrying (attempt ${n})`;
    default:
      return `Connection error (attempt ${n})`;
  }
}

function Indicator() {
  const ctx = ours.useLive();
  const { connection } = ctx;
  const text = indicatorText(connection);
  useLayoutEffect(() => {
    window.liveContext = ctx;
  });
  useLayoutEffect(() => {
    rec.statuses.push({ ...connection, text, at: Date.now() });
  }, [connection, text]);
  return (
    <p id="indicator" data-status={connection.status} data-attempt={connection.reconnectAttempt}>
      {text}
    </p>
  );
}

function Ticker({ channel }) {
  const { data } = ours.useLiveData({ channel, queryKey: ["page", "ticker", channel], fetcher: async () => ({ label: "waiting", i: 0 }) });
  return (
    <p id="ticker" data-i={data?.i}>
      {data === undefined ? "–" : `${data.label} #${data.i}`}
    </p>
  );
}

function Todos() {
  const list = ours.useLiveList("todos", ["page", "todos"], () => fetch("/api/todos", { cache: "no-store" }).then((r) => r.json()), {
    // window.mutationHeaders (X-Test-Delay, …) go with every mutation while set.
    fetch: async (url, init) => {
      const res = await fetch(url, { ...init, headers: { ...init.headers, ...window.mutationHeaders } });
      rec.answers.push(performance.now());
      return res;
    },
    onError: (e) => rec.errors.push(`list: ${e.code}`),
  });
  const ul = useRef(null);
  useLayoutEffect(() => {
    // What the user sees after each commit: how each todo first showed,
    // and no todo shown twice.
    const seen = new Set();
    for (const li of ul.current.children) {
      const title = li.querySelector(".title").textContent;
      rec.firstShown[title] ??= { pending: li.classList.contains("pending"), at: performance.now() };
      if (seen.has(li.dataset.id)) rec.problems.push(`${li.dataset.id} shown twice`);
      seen.add(li.dataset.id);
    }
  }, [list.items]);
  const submit = (e) => {
    e.preventDefault();
    const input = e.currentTarget.elements.title;
    if (input.value.trim() === "") return;
    list.add({ title: input.value, done: false });
    input.value = "";
  };
  return (
    <section>
      <form id="add" onSubmit={submit}>
        <input id="title" name="title" autoComplete="off" />
        <button type="submit">Add</button>
      </form>
      <ul id="todos" ref={ul} data-loaded={String(!list.isLoading)}>
        {list.items.map((t) => (
          <li key={t.id} data-id={t.id} className={[t._optimistic && "pending", t.done && "done"].filter(Boolean).join(" ")}>
            <input type="checkbox" className="toggle" checked={Boolean(t.done)} onChange={() => list.update({ id: t.id, done: !t.done })} />
            <span className="title">{t.title}</span>
            <button type="button" className="remove" onClick={() => list.remove(t.id)}>
              ×
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Board() {
  const { data, version } = ours.useDeltaSync(["page", "board"], "board", () => {
    rec.fetches++;
    return fetch("/api/state/board", { cache: "no-store" }).then((r) => r.json());
  }, { onError: (e) => rec.errors.push(`board: ${e.name}: ${e.message}`) });
  useLayoutEffect(() => {
    rec.versions.push(version);
  }, [version]);
  return (
    <section>
      <p id="boardVersion">{data === undefined ? "" : `v${version}`}</p>
      <p id="cards">{data === undefined ? "" : Object.keys(data.cards ?? {}).length}</p>
    </section>
  );
}

function Who({ channel }) {
  const { members, count, ready } = ours.usePresence(channel, {
    onChange: (p) => rec.presence.push({ joined: p.joined.map((m) => m.user), left: p.left }),
  });
  return (
    <section>
      <p id="watching">{ready ? `${count} watching` : "…"}</p>
      <ul id="members">
        {members.map((m) => (
          <li key={m.user}>{`${m.info?.name ?? m.user}${m.conns > 1 ? ` ×${m.conns}` : ""}`}</li>
        ))}
      </ul>
    </section>
  );
}

function Page({ tickerChannel = "page:ticker" }) {
  return (
    <main>
      <Indicator />
      <Ticker channel={tickerChannel} />
      <Todos />
      <Board />
    </main>
  );
}

function Scenario({ impl, name, props }) {
  switch (name) {
    case "status":
      return (
        <>
          <StatusProbe impl={impl} />
          {(props.channels ?? []).map((c) => <Subscriber key={c} impl={impl} channel={c} />)}
        </>
      );
    case "toggle":
      return <Toggle impl={impl} channel={props.channel} hooks={props.hooks} />;
    case "data":
      return (
        <>
          <StatusProbe impl={impl} />
          <DataProbe {...props} />
        </>
      );
    case "delta":
      return <DeltaProbe />;
    case "list":
      return <ListProbe impl={impl} {...props} />;
    case "page":
      return <Page {...props} />;
    case "presence":
      return <Who {...props} />;
  }
  throw new Error(`no scenario ${name}`);
}

let root = null;
let mounted = null; // what mount rendered, for setProvider

window.app = {
  /**
   * mount renders a scenario under a new QueryClient and LiveProvider;
   * defaultClient makes it new QueryClient() with React Query's defaults.
   */
  mount({ impl = "ours", strict = true, scenario, props = {}, provider = {}, defaultClient = false }) {
    const I = impl === "seed" ? seed : ours;
    const queryClient = defaultClient ? new QueryClient() : new QueryClient({ defaultOptions: { queries: { retry: false } } });
    window.queryClient = queryClient;
    mounted = { I, queryClient, strict, scenario, props };
    let el = document.getElementById("root");
    if (!el) {
      el = document.createElement("div");
      el.id = "root";
      document.body.append(el);
    }
    root = createRoot(el);
    this.setProvider(provider);
  },
  /** setProvider renders the mounted scenario again under a provider with these props. */
  setProvider(provider) {
    const { I, queryClient, strict, scenario, props } = mounted;
    const tree = (
      <QueryClientProvider client={queryClient}>
        <I.LiveProvider url="/ws" {...provider} onError={(e) => rec.errors.push(`provider: ${e.code}`)}>
          <Scenario impl={I} name={scenario} props={props} />
        </I.LiveProvider>
      </QueryClientProvider>
    );
    flushSync(() => root.render(strict ? <StrictMode>{tree}</StrictMode> : tree));
  },
  unmount() {
    if (root) flushSync(() => root.unmount());
    root = null;
  },
};
window.cleanup = () => window.app.unmount();
window.appLoaded = true;
