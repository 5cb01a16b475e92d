// build.js bundles live.js and the modules of src/ into dist/live.js, the
// one file live.ClientHandler serves (so a page mounting "GET /live.js"
// needs nothing else). Run it after changing either: npm run build. The
// package's tests fail while dist/live.js is not the build of the sources.

import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const client = dirname(fileURLToPath(import.meta.url));

/** The file every build writes, beside the sources. */
export const bundlePath = join(client, "dist", "live.js");

const banner = `// live.js: the browser client of github.com/go-live/live, served by
// live.ClientHandler. Built by client/build.js from client/live.js and
// client/src/ (npm run build); edit those, not this file.`;

/** bundle returns the text of dist/live.js built from the sources. */
export async function bundle() {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    absWorkingDir: client,
    entryPoints: ["live.js"],
    bundle: true,
    format: "esm",
    platform: "browser",
    banner: { js: banner },
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await writeFile(bundlePath, await bundle());
}
