// Package servertest holds what the tests of the broker modules (redis,
// nats, postgres) and of the examples share: a private server process on
// a free port that a test may kill, pause and restart; a Hub behind a test
// server; and collectors that wait for what a broker delivers or what an
// SSE stream sends. It is for this repository's tests only; the checks a
// broker's author needs are in the public brokertest package.
//
// Every wait gives up after [Timeout], failing the test, and everything
// that is started ends with the test, through t.Cleanup.
package servertest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
)

// Timeout bounds every wait in these helpers. It is generous because the
// servers may be busy with other tests on a small CI machine.
const Timeout = 10 * time.Second

// RandomName returns a random name of lower-case letters and digits, to
// keep the keys, schemas or streams of a test apart from those of other
// tests and runs.
func RandomName() string { return strconv.FormatUint(rand.Uint64(), 36) }

// ChannelName returns a channel that no other test, and no other run of
// this one, uses: the test's name, then a random suffix. When that is too
// long its end is kept, which names the subtest.
func ChannelName(t testing.TB) string { return ChannelNameWith(t, "-") }

// ChannelNameWith is ChannelName with sep between the test's name and the
// suffix, for a broker whose tests want channel names with characters it
// must escape.
func ChannelNameWith(t testing.TB, sep string) string {
	name := strings.NewReplacer("/", ":").Replace(t.Name()) + sep + RandomName()
	if len(name) > live.MaxChannelLen {
		name = name[len(name)-live.MaxChannelLen:]
	}
	return name
}

// EnvURL returns the URL of a shared server in the environment variable
// name, or skips t, saying how to run the tests: howTo.
func EnvURL(t testing.TB, name, howTo string) string {
	t.Helper()
	u := os.Getenv(name)
	if u == "" {
		t.Skip(name + " is not set; to run the " + howTo)
	}
	return u
}

// CloseAtEnd closes c when t ends, failing t if Close fails.
func CloseAtEnd(t testing.TB, c io.Closer) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// Publish publishes data on channel through b, failing t if it cannot.
func Publish(t testing.TB, b live.Broker, channel, data string) live.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	pos, err := b.Publish(ctx, channel, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%q, %.40s): %v", channel, data, err)
	}
	return pos
}

// ExpectClosed closes b, then checks that Publish on channel fails with
// an error matching live.ErrClosed and that closing b again does nothing.
func ExpectClosed(t testing.TB, b interface {
	live.Broker
	Close() error
}, channel string) {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := b.Publish(t.Context(), channel, []byte(`2`)); !errors.Is(err, live.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// CloseHub closes h, failing t unless it closes within Timeout. Tests
// call it at their end, before closing h's server, so that the hub ends
// its connections itself.
func CloseHub(t testing.TB, h *live.Hub) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Errorf("Hub.Close: %v", err)
	}
}

// Logger returns a logger that writes warnings and errors to t, which
// shows them with -v.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
