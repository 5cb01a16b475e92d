// live.js: the browser client of github.com/go-live/live, a dependency-free
// ES module. Serve it with live.ClientHandler() and import it:
//
//	import { createLive, liveState, liveList } from "/live.js";
//	const live = createLive({ url: "/ws" });
//	const stop = live.subscribe("metrics:dashboard", (data) => render(data));
//
// One connection per page carries every channel: a WebSocket, or where a
// WebSocket cannot open (a proxy that refuses the upgrade), one stream of
// Server-Sent Events. It reconnects with jittered exponential backoff and
// resumes each channel from its cursor, so nothing inside the hub's
// history window is lost or seen twice; when the hub cannot replay, the
// channel's onReset asks the app to refetch.
// The merge strategies are the Go package's, checked against the same
// test vectors (testdata/merge). liveState keeps a State channel's value
// in sync; liveList keeps a list with optimistic add, update and remove.

export { createLive } from "./src/connection.js";
export { LiveError, MergeError } from "./src/errors.js";
export { CONNECTION_HEADER, MUTATION_ID_HEADER } from "./src/http.js";
export { liveList } from "./src/list.js";
export { applyDelta, diff, MAX_DEPTH, mergeList, mergePatch, mergeReplace, mergeShallow, parseCursor, parseJSON } from "./src/merge.js";
export { liveState } from "./src/state.js";
