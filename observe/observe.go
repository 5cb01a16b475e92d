// Package observe lets a program watch what a live.Hub does, for metrics
// and traces, without the hub depending on any metrics or tracing library.
//
// Hooks is a set of functions the hub calls as things happen, in the style
// of net/http/httptrace: put one in live.Options.Observe. A nil field is
// never called, and a Hook with no fields set costs the hub nothing but a
// check. The functions run on the hub's hot paths (its writers, the
// channels' fan-out, a WebSocket's reader), often with locks held, so they
// must be quick, must not block and must not call back into the Hub; the
// figures they get are plain values, which they may keep.
//
// Counts and sizes that the hub keeps anyway (connections and
// subscriptions by transport, publications, deliveries, drops, resets,
// queued bytes, presence members, control operations) are not hooks: read
// them from live.Hub.Stats when scraping. The hooks carry what Stats
// cannot: durations, for histograms, and the trace context of a
// publication.
//
// Module github.com/go-live/live/prometheus builds a Prometheus collector
// on these hooks and on Stats, and module github.com/go-live/live/otel
// OpenTelemetry traces and metrics. Join combines the hooks of several
// watchers (metrics and traces) into one set.
package observe

import (
	"context"
	"time"
)

// Transports, as the hooks and live.Stats name them.
const (
	SSE       = "sse"     // an SSE stream of one channel
	SSEMux    = "sse-mux" // an SSE stream of several channels (?channels=)
	WebSocket = "ws"      // a WebSocket
	Poll      = "poll"    // a long-poll (?channels=…&poll)
)

// MaxTrace bounds the trace string a publication carries (see
// Hooks.Inject); a longer one is not carried.
const MaxTrace = 256

// Hooks are functions a live.Hub calls as it works. Every field is
// optional. Durations are measured on the monotonic clock of the process
// that calls the hook.
type Hooks struct {
	// Published is called when the broker has answered a publication
	// this hub made (Hub.Publish, an HTTP or WebSocket publish, a Hook
	// event, a State write, and the hub's own messages on the channels it
	// reserves, named "@live:…"), with how long the broker took and its
	// error, nil when it took the publication. A publication queued
	// behind promised ones that wait for the broker (see
	// live.Options.PendingBytes) is not reported, nor are the later
	// attempts to send a promised one. channel is the
	// channel's name: see the package documentation of
	// github.com/go-live/live/prometheus for why a metric must never be
	// labelled with it as it is.
	Published func(channel string, took time.Duration, err error)

	// Wrote is called for each write of frames to a client's socket (a
	// WebSocket or an SSE stream; a long-poll's answer counts as one), as
	// it is made, with its transport, the number of frames it carries
	// (one write carries many under load) and latency: how long the
	// oldest publication in it waited between reaching this hub from the
	// broker and this write. latency is 0 when the write carries no
	// publication delivered live (acknowledgements, presence, heartbeats,
	// history replayed to a resuming client).
	Wrote func(transport string, frames int, latency time.Duration)

	// Waited is called when one of the hub's writers takes a
	// connection that has output, with how long it waited in line
	// behind the others since it had output to write.
	Waited func(d time.Duration)

	// PollHeld is called when a long-poll is answered, with how long
	// it was held open.
	PollHeld func(d time.Duration)

	// Pong is called when a WebSocket client answers a heartbeat ping,
	// with the round trip: from the moment the ping was queued for its
	// socket to the pong read.
	Pong func(rtt time.Duration)

	// Inject, when set, is called as the hub hands a publication to the
	// broker, with the context of the call that published it (a
	// request's, for a Hook event). The trace it returns travels with the
	// publication, beside its data, through the broker to every hub
	// sharing it, which gives it to FanOut: a trace context (a W3C
	// traceparent, say) links the delivery on every node to the request
	// that published. "" carries nothing; more than MaxTrace bytes are
	// not carried. done, if not nil, is called once, when the
	// publication ends: with nil once the broker took it (or, for a Hook
	// event, once it was queued to be sent again, see
	// live.Options.PendingBytes), otherwise with why it failed. So a
	// tracer can start a producer span in Inject, carry its context, and
	// end it in done. Inject is not called for the hub's own messages on
	// the channels it reserves.
	Inject func(ctx context.Context, channel string) (trace string, done func(err error))

	// FanOut, when set, is called when a publication reaches this hub
	// from the broker, before it is queued for the channel's local
	// subscribers, with what Inject returned where it was published (""
	// if nothing). The function it returns, if not nil, is called once
	// it is queued for them (a span's end).
	FanOut func(channel, trace string) (done func())
}
