// Package livehtml publishes HTML on a [live.Hub]'s channels for pages
// that consume a channel's one-channel SSE stream as it is: htmx 2 with
// htmx-ext-sse, htmx 4's hx-sse, Hotwire Turbo's <turbo-stream-source>
// and Datastar. A page renders on the server, streams the channel from
// the position it rendered at (see [live.Hub.Head]), and swaps in what
// arrives; a stream that reconnects resumes where it stopped, on any node.
//
// Each kind of page wants its own messages, and each is a [Message]:
//
//   - [Fragment]: HTML as a named event (htmx 2's sse-swap="row", htmx 4's
//     DOM events) or an unnamed one (htmx 4 swaps it into its target);
//   - [TurboStream]: one <turbo-stream> element, for Turbo;
//   - [PatchElements] and [PatchSignals]: Datastar's
//     datastar-patch-elements and datastar-patch-signals events, whose
//     data lines are those Datastar's Go SDK writes.
//
// Their HTML comes from a [Component]: an html/template ([Template]),
// anything with templ's Render method, or [HTML] the application trusts.
// [Publish] renders a Message and publishes it in one call; [Hook]
// republishes what a mutating handler answered (the new row a POST
// returns) to the other pages, as [live.Hub.Hook]'s Event. [ResetText]
// and [PresenceText] configure [live.Options] so that a channel's streams
// tell a page of a gap, and of who is watching, in the page's own terms.
// docs/hypermedia.md in the repository has a recipe per client.
//
// # Security
//
// HTML is the application's to escape. html/template escapes what it
// renders, and so does templ; [HTML], a [live.Text]'s Data and a
// [Message] built from them are sent exactly as they are, so never put
// text a user typed in them unescaped: every page streaming the channel
// would run it.
//
// Clients can never publish HTML to other pages. Text is made only by
// server code that publishes through a Hub ([live.Hub.Publish], a Hook's
// events, this package): what a client publishes, over HTTP or
// WebSocket, is JSON and reaches one-channel SSE streams JSON-quoted,
// whatever it looks like.
//
// A hypermedia stream is an ordinary one-channel SSE stream: it passes
// the same gate as every other (the origin check, [live.Options].Identify
// and Authorize), resumes only what Authorize lets the client read, and
// ends on [live.Hub.Disconnect] and [live.Hub.Reauthorize] after a named
// "refused" event (htmx 2: sse-close="refused"; htmx 4:
// hx-sse:close="refused").
package livehtml
