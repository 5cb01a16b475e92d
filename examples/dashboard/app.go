package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-live/live"
	liveprom "github.com/go-live/live/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

//go:embed index.html
var indexHTML []byte

// appOptions configures newApp. Zero fields mean the defaults documented
// on them.
type appOptions struct {
	// Broker is shared with the other nodes of the dashboard. Default: a
	// new in-memory broker, closed by app.Close; a broker passed in is the
	// caller's to close, after the app.
	Broker live.Broker

	// Tick is how often the metrics move. Default: they never do.
	Tick time.Duration

	// Logger receives the hub's and the app's warnings. Default
	// slog.Default().
	Logger *slog.Logger
}

// app is one node of the dashboard: a hub with the app's own routes, and
// the goroutines that keep its metrics and feed in step with the channels.
type app struct {
	hub      *live.Hub
	handler  http.Handler
	metrics  *metrics
	feed     *feed
	board    *live.State
	ownedMem *live.MemoryBroker   // the broker the app made, or nil
	registry *prometheus.Registry // what GET /metrics serves: the hub's metrics and the process's

	cancel   context.CancelFunc // ends the goroutines in group
	group    errgroup.Group     // the followers and the metrics ticker
	removals *removals          // visitors removed from the board
}

// newApp makes a node: the hub, the board's state, the followers of the
// metrics and activity channels, caught up with what the broker's history
// holds, and the routes. ctx bounds the start only; call Close to stop.
func newApp(ctx context.Context, o appOptions) (*app, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	a := &app{metrics: newMetrics(), feed: newFeed(), removals: newRemovals()}
	b := o.Broker
	if b == nil {
		a.ownedMem = live.NewMemoryBroker(nil)
		b = a.ownedMem
	}
	// The hub's metrics join the app's Prometheus registry: the
	// collector's hooks go into the hub's options, and it reads the hub's
	// counters once the hub exists.
	hubMetrics := liveprom.New(&liveprom.Options{ChannelTemplate: channelTemplate})
	a.registry = prometheus.NewRegistry()
	a.registry.MustRegister(hubMetrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.hub = live.NewHub(&live.Options{
		Broker:  b,
		Logger:  o.Logger,
		Observe: hubMetrics.Hooks(),
		// Clients may publish only on chat:… channels. Metrics are computed
		// by the server, activity goes through the CRUD routes (validated
		// and stored) and the board through its state endpoint.
		Authorize: func(r *http.Request, channel string, op live.Op) error {
			if op == live.OpPublish && !strings.HasPrefix(channel, "chat:") {
				return live.ErrForbidden
			}
			if channel == "board" && a.removals.has(live.IdentityOf(r).User) {
				return live.Deny("you were removed from the board")
			}
			return nil
		},
		// Visitors are named by a cookie the page sets; the board shows
		// who is on it, and the metrics how many are watching.
		Identify: identify,
		Presence: func(channel string) live.PresenceMode {
			switch channel {
			case "board":
				return live.PresenceMembers
			case metricsChannel:
				return live.PresenceCount
			}
			return live.PresenceOff
		},
		// The activity channel carries list operations: a slow client gets
		// them coalesced per id instead of being dropped.
		ListIDField: func(channel string) string {
			if channel == activityChannel {
				return "id"
			}
			return ""
		},
	})
	hubMetrics.Watch(a.hub)
	var bg context.Context
	bg, a.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*app, error) {
		a.Close(context.Background())
		return nil, err
	}

	board, err := a.hub.State(ctx, "board", &live.StateOptions{Initial: initialBoard})
	if err != nil {
		if errors.Is(err, live.ErrGone) {
			err = fmt.Errorf("%w (the broker no longer holds the board's first versions, so no node can rebuild it: "+
				"start with another -prefix, or delete the board's keys)", err)
		}
		return fail(err)
	}
	a.board = board

	// The feed is rebuilt from as much history as there is; the metrics
	// need only the latest updates to have every number.
	activity := newFollower(b, activityChannel, allHistory, o.Logger, a.feed.apply)
	a.feed.catchUp = activity.catchUp
	followers := []*follower{activity, newFollower(b, metricsChannel, 100, o.Logger, a.metrics.apply),
		newFollower(b, visitorsChannel, allHistory, o.Logger, a.removals.apply)}
	a.removals.hub = a.hub
	a.group.Go(func() error { return a.removals.run(bg, o.Logger) })
	for _, f := range followers {
		a.group.Go(func() error { return f.run(bg) })
	}
	for _, f := range followers {
		if err := f.wait(ctx); err != nil {
			return fail(err)
		}
	}
	a.removals.start()
	if o.Tick > 0 {
		a.group.Go(func() error { return a.metrics.run(bg, a.hub, o.Tick, o.Logger) })
	}
	a.handler = a.routes()
	return a, nil
}

// routes serves the page, the browser client, the hub's transports and
// the app's API.
func (a *app) routes() http.Handler {
	hub, f := a.hub, a.feed
	activityHook := hub.Hook(live.HookOptions{Channel: func(*http.Request) string { return activityChannel }})

	mux := http.NewServeMux()
	mux.Handle("GET /live.js", live.ClientHandler())
	mux.Handle("GET /ws", hub.WebSocketHandler())
	mux.Handle("GET /api/live/{channel}", hub.SSEHandler())
	mux.Handle("GET /api/live", hub.SSEHandler()) // ?channels=a,b: live.js where WebSocket is blocked
	mux.Handle("POST /api/live/{channel}", hub.PublishHandler())
	mux.HandleFunc("GET /api/metrics", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.metrics.snapshot())
	})
	// For Prometheus to scrape. An application exposes it to its
	// operators only; the demo has nothing to hide.
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/activity", f.list)
	mux.Handle("POST /api/activity", activityHook(http.HandlerFunc(f.create)))
	mux.Handle("PATCH /api/activity/{id}", activityHook(http.HandlerFunc(f.update)))
	mux.Handle("DELETE /api/activity/{id}", activityHook(http.HandlerFunc(f.remove)))
	mux.Handle("/api/board", a.guardBoard(a.board))
	mux.HandleFunc("POST /api/board/remove", a.removeVisitor)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		welcome(w, r)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(indexHTML)
	})
	return mux
}

// Close stops the metrics and the followers, then closes the hub (ending
// every stream) and the broker if the app made it.
func (a *app) Close(ctx context.Context) error {
	a.cancel()
	a.group.Wait()
	err := a.hub.Close(ctx)
	if a.ownedMem != nil {
		err = errors.Join(err, a.ownedMem.Close())
	}
	return err
}

// initialBoard is the board's value at version 0.
var initialBoard = map[string]any{
	"title": "Launch checklist",
	"columns": map[string]any{
		"todo":  map[string]any{"name": "To do", "cards": map[string]any{"c1": "Write release notes", "c2": "Update status page"}},
		"doing": map[string]any{"name": "Doing", "cards": map[string]any{"c3": "Load test"}},
		"done":  map[string]any{"name": "Done", "cards": map[string]any{"c4": "Freeze the API"}},
	},
}

// channelTemplate names the kind of a channel for the hub's metrics: the
// dashboard's few fixed channels as they are, chat rooms as one template
// (there may be any number of rooms, and a metric's labels must stay few).
func channelTemplate(channel string) string {
	if strings.HasPrefix(channel, "chat:") {
		return "chat:{room}"
	}
	switch channel {
	case metricsChannel, activityChannel, visitorsChannel, "board":
		return channel
	}
	return "other"
}
