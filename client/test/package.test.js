// The npm package as an app gets it: `npm pack`, then the tarball (and,
// the other way the README gives, the folder with --install-links)
// installed into a fresh project beside React and React Query, whose
// TypeScript using both entry points type-checks with --strict under
// module nodenext and under moduleResolution bundler. Installs come from
// npm's cache (filled by `npm ci`) when they can, else the registry.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { bundle, bundlePath } from "../build.js";
import { promisify } from "node:util";

const run = promisify(execFile);
const client = fileURLToPath(new URL("../", import.meta.url));
const pkg = JSON.parse(await readFile(join(client, "package.json"), "utf8"));
const tsc = join(client, "node_modules", "typescript", "bin", "tsc");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

let dir;
let tarball;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "live-package-"));
  const { stdout } = await run(npm, ["pack", "--json", "--pack-destination", dir], { cwd: client });
  tarball = join(dir, JSON.parse(stdout)[0].filename);
});
after(() => rm(dir, { recursive: true, force: true }));

// The app: both entry points, under --strict. The @ts-expect-error lines
// fail the check if the types they test were any.
const app = `
import { createLive, liveList, liveState, mergePatch, LiveError, type Live, type LiveOptions, type Member } from "@go-live/live";
import { LiveProvider, useLive, useLiveData, useLiveList, useDeltaSync, usePresence, LiveError as ReactLiveError } from "@go-live/live/react";
import { createElement, type ReactNode } from "react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";

const options: LiveOptions = { transport: "auto", url: "/ws", sseURL: "/api/live", firstFrameTimeout: 5000, probeInterval: 300000 };
const live: Live = createLive(options);
const stop: () => void = live.subscribe<{ n: number }>("metrics", (data, meta) => {
  const n: number = data.n;
  const cursor: string | null = meta.cursor;
  void n, cursor;
});
stop();

interface Todo { id: string; title: string; done: boolean }
const todos = liveList<Todo>(live, { channel: "todos", url: "/api/todos" });
const added: Promise<Todo> = todos.add({ title: "milk" });
const pending: number = todos.pending;
const board = liveState<{ cards: Record<string, { title: string }> }>(live, { channel: "board", url: "/api/state/board" });
const merged: { a: number } = mergePatch<{ a: number }>({ a: 1 }, { a: 2 });
// @ts-expect-error: no such option
createLive({ transprot: "sse" });
void added, pending, board, merged;

interface Info { name: string; avatar?: string }
live.presence<Info>("room", (p) => {
  const names: string[] = p.members.map((m: Member<Info>) => m.info?.name ?? m.user);
  void names;
});
const here = live.members<Info>("room");
const firstName: string | undefined = here?.members[0]?.info?.name;
const inUse: "websocket" | "sse" | "poll" = live.transport;
const endedOn: typeof inUse | undefined = live.connection.ending?.transport;
void firstName, here?.count, endedOn;

function Who(): ReactNode {
  const { members, count, ready } = usePresence<Info>("room", { onChange: (p) => void p.joined.map((m) => m.info?.name) });
  const first: string | undefined = members[0]?.info?.name;
  // @ts-expect-error: Info has no such member
  void members[0]?.info?.email;
  return ready ? \`\${first ?? ""} and \${count - 1} more\` : null;
}

function Todos(): ReactNode {
  const { connection, publish } = useLive();
  const { data } = useLiveData<{ i: number }>({ channel: "ticker", queryKey: ["ticker"], fetcher: async () => ({ i: 0 }) });
  const { items, add, pending } = useLiveList<Todo>("todos", ["todos"], () => fetch("/api/todos").then((r) => r.json() as Promise<Todo[]>));
  const { data: cards, patch } = useDeltaSync<{ cards: Record<string, string> }>(["board"], "board", () => fetch("/api/state/board").then((r) => r.json()), { url: "/api/state/board" });
  void publish("chat", { text: "hi" }).catch((e: unknown) => e instanceof ReactLiveError && e.code);
  void patch({ cards: {} });
  add({ title: "bread" });
  return \`\${connection.status} \${data?.i} \${items.map((t) => t.title).join()} \${pending} \${Object.keys(cards?.cards ?? {}).length}\`;
}

export function App(): ReactNode {
  return createElement(
    QueryClientProvider,
    { client: new QueryClient() },
    createElement(LiveProvider, { url: "/ws", onError: (e: LiveError) => console.warn(e.code) }, createElement(Who), createElement(Todos)),
  );
}
`;

const configs = {
  nodenext: { module: "nodenext", moduleResolution: "nodenext" },
  bundler: { module: "esnext", moduleResolution: "bundler" },
};

// install makes a fresh project in dir/name with spec installed, and the
// app's own React and React Query at the versions the client tests with.
async function install(name, spec, flags = []) {
  const project = join(dir, name);
  await mkdir(project);
  await writeFile(join(project, "package.json"), JSON.stringify({ name: `consumer-${name}`, private: true, type: "module" }));
  const deps = ["react", "@types/react", "@tanstack/react-query"].map((d) => `${d}@${pkg.devDependencies[d]}`);
  await run(npm, ["install", "--no-audit", "--no-fund", "--prefer-offline", ...flags, spec, ...deps], { cwd: project });
  await writeFile(join(project, "app.ts"), app);
  return project;
}

async function typecheck(project) {
  for (const [name, o] of Object.entries(configs)) {
    const config = { compilerOptions: { ...o, target: "es2022", lib: ["es2022", "dom"], strict: true, noEmit: true, skipLibCheck: false, types: [] }, files: ["app.ts"] };
    await writeFile(join(project, `tsconfig.${name}.json`), JSON.stringify(config, null, 2));
    try {
      await run(process.execPath, [tsc, "-p", `tsconfig.${name}.json`], { cwd: project });
    } catch (e) {
      assert.fail(`tsc --strict with ${name} resolution:\n${e.stdout}${e.stderr}`);
    }
  }
}

test("npm pack ships the modules, their types and the README, and no tests", async () => {
  const project = await install("tarball", tarball);
  const installed = join(project, "node_modules", "@go-live", "live");
  assert.ok(!(await lstat(installed)).isSymbolicLink(), "installed as a copy, not a link");
  assert.deepStrictEqual((await readdir(installed)).sort(), ["README.md", "live.d.ts", "live.js", "package.json", "react.d.ts", "react.js", "src"]);
  assert.deepStrictEqual((await readdir(join(installed, "src"))).sort(), (await readdir(join(client, "src"))).sort());
  const shipped = await import(pathToFileURL(join(installed, "live.js")).href);
  const served = await import(pathToFileURL(bundlePath).href);
  assert.deepStrictEqual(Object.keys(shipped).sort(), Object.keys(served).sort(), "the module and the served bundle export the same names");
  const got = JSON.parse(await readFile(join(installed, "package.json"), "utf8"));
  assert.equal(got.version, pkg.version);
});

test("dist/live.js, what live.ClientHandler serves, is the build of live.js and src/ (npm run build)", async () => {
  assert.equal(await readFile(bundlePath, "utf8"), await bundle());
});

test("the packed tarball type-checks in a fresh project under --strict, nodenext and bundler", async () => {
  await typecheck(join(dir, "tarball"));
});

test("the client folder installed with --install-links type-checks the same", async () => {
  const project = await install("folder", client, ["--install-links"]);
  assert.ok(!(await lstat(join(project, "node_modules", "@go-live", "live"))).isSymbolicLink(), "installed as a copy, not a link");
  await typecheck(project);
});
