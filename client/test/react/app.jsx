// The React test page: react.js (or, for the defect checks, the seed's
// code in seed.jsx) under a QueryClientProvider, with probes that record
// what they render in window.rec. The tests drive it through window.app.
import { StrictMode, useEffect, useRef, useState } from "react";
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
  }
  throw new Error(`no scenario ${name}`);
}

let root = null;

window.app = {
  /** mount renders a scenario under a new QueryClient and LiveProvider. */
  mount({ impl = "ours", strict = true, scenario, props = {}, provider = {} }) {
    const I = impl === "seed" ? seed : ours;
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    window.queryClient = queryClient;
    const tree = (
      <QueryClientProvider client={queryClient}>
        <I.LiveProvider url="/ws" {...provider} onError={(e) => rec.errors.push(`provider: ${e.code}`)}>
          <Scenario impl={I} name={scenario} props={props} />
        </I.LiveProvider>
      </QueryClientProvider>
    );
    let el = document.getElementById("root");
    if (!el) {
      el = document.createElement("div");
      el.id = "root";
      document.body.append(el);
    }
    root = createRoot(el);
    flushSync(() => root.render(strict ? <StrictMode>{tree}</StrictMode> : tree));
  },
  unmount() {
    if (root) flushSync(() => root.unmount());
    root = null;
  },
};
window.cleanup = () => window.app.unmount();
window.appLoaded = true;
