// Command htmx is the live dashboard without JavaScript of its own: pages
// rendered with html/template that htmx 2 (with its SSE extension) keeps
// live from the hub's one-channel SSE streams, through package livehtml.
// The metrics move, the activity feed shows what anyone adds, and the
// board shows who is watching it; /turbo follows the feed with Hotwire
// Turbo instead.
//
//	cd examples/htmx
//	go run .                  # in memory; then open http://localhost:8080
//
// Several processes sharing Redis are one dashboard: a change made
// through any of them reaches the pages of all of them, and a page
// resumes on any of them.
//
//	go run . -addr :8081 -redis redis://localhost:6379/0
//	go run . -addr :8082 -redis redis://localhost:6379/0
//
// htmx and Turbo are vendored in static/, so it runs offline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-live/live"
	redisbroker "github.com/go-live/live/redis"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	redisURL := flag.String("redis", "", "share the dashboard through Redis at this URL (redis://host:port/db)")
	prefix := flag.String("prefix", "", "Redis key prefix (default \"live:\"), to keep this dashboard apart from others")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "htmx: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*addr, *redisURL, *prefix); err != nil {
		log.Fatalf("htmx: %v", err)
	}
}

// run serves the dashboard on addr until SIGINT or SIGTERM.
func run(addr, redisURL, prefix string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The feed is rendered from the activity channel's history, so the
	// brokers keep it until its size pushes it out, not for a limited time.
	var broker live.Broker
	name := "in memory"
	if redisURL != "" {
		rb, err := redisbroker.Open(redisURL, &redisbroker.Options{Prefix: prefix, HistoryAge: -1})
		if err != nil {
			return err
		}
		defer rb.Close()
		broker, name = rb, "redis"
	} else {
		if prefix != "" {
			return errors.New("-prefix needs -redis")
		}
		mb := live.NewMemoryBroker(&live.MemoryOptions{HistoryAge: -1})
		defer mb.Close()
		broker = mb
	}

	start, cancel := context.WithTimeout(ctx, 30*time.Second)
	a, err := newApp(start, broker, time.Second)
	cancel()
	if err != nil {
		return fmt.Errorf("starting (broker %s): %w", name, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.Close(context.Background())
		return err
	}
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second}
	// Shutdown does not end streams; closing the hub does.
	srv.RegisterOnShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.hub.Close(ctx)
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("live htmx dashboard on http://%s (broker %s)", ln.Addr(), name)

	select {
	case err = <-served:
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		srv.Shutdown(shutdown)
		cancel()
		err = <-served
	}
	closing, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.Close(closing)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
