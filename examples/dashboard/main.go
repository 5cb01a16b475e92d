// Command dashboard is a live metrics dashboard served by a live.Hub: the
// numbers on the page move as the server publishes partial updates, and an
// activity feed and a board follow every change, whoever makes it.
//
//	cd examples/dashboard
//	go run .                  # in memory; then open http://localhost:8080
//	go run . -addr :9000
//
// Several processes sharing a broker are one dashboard: a change made
// through any of them reaches the pages of all of them, and a page can
// resume on any of them.
//
//	go run . -addr :8081 -redis redis://localhost:6379/0
//	go run . -addr :8082 -redis redis://localhost:6379/0
//
// or -nats nats://localhost:4222 (JetStream), or -postgres
// postgres://user@localhost:5432/db, instead of -redis. -prefix keeps
// several dashboards apart on one server.
//
// It serves the URLs a React LiveProvider/useLiveData app uses: GET /api/metrics and the channel
// "metrics:dashboard" (partial updates every second); GET, POST, PATCH and
// DELETE /api/activity, whose changes publish on "activity"; GET and PATCH
// /api/board, a state channel "board" streaming versioned deltas; the
// WebSocket at /ws and SSE at /api/live/{channel}. The page at / uses the
// browser client, live.js, served at /live.js.
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
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	var bf brokerFlags
	bf.register(flag.CommandLine)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "dashboard: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*addr, bf); err != nil {
		log.Fatalf("dashboard: %v", err)
	}
}

// run serves the dashboard on addr until SIGINT or SIGTERM.
func run(addr string, bf brokerFlags) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	broker, closeBroker, err := bf.open()
	if err != nil {
		return err
	}
	defer closeBroker()

	start, cancel := context.WithTimeout(ctx, 30*time.Second)
	a, err := newApp(start, appOptions{Broker: broker, Tick: time.Second})
	cancel()
	if err != nil {
		return fmt.Errorf("starting (broker %s): %w", bf.name(), err)
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
	log.Printf("live dashboard on http://%s (broker %s)", ln.Addr(), bf.name())

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
	if cerr := a.Close(closing); cerr != nil {
		log.Printf("dashboard: closing: %v", cerr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
