package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/go-live/live/internal/leakcheck"
	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitTimeout bounds every wait for NATS in these tests.
const waitTimeout = servertest.Timeout

// natsURL returns the URL of the shared NATS server, or skips t.
func natsURL(t testing.TB) string {
	t.Helper()
	return servertest.EnvURL(t, "LIVE_NATS_URL", "NATS tests: cd nats && LIVE_NATS_URL=nats://127.0.0.1:4222 go test ./...")
}

// connect returns a connection configured as Open configures its own,
// closed at the end of t after the cleanups registered after it.
func connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{
		nats.Name("livetest"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectBufSize(-1),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testPrefix returns a stream name and subject prefix that no other test
// or run uses, and deletes the stream from the server at url when t ends,
// on a connection of its own: the test may have broken its own.
func testPrefix(t testing.TB, url string) string {
	t.Helper()
	prefix := "livetest_" + servertest.RandomName()
	t.Cleanup(func() { deleteStream(t, url, prefix) })
	return prefix
}

// deleteStream deletes the stream of prefix from the server at url, as a
// server that lost its data, on a connection of its own.
func deleteStream(t testing.TB, url, prefix string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Errorf("deleting stream %s: %v", prefix, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, prefix); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("deleting stream %s: %v", prefix, err)
	}
	// The snapshot stream and the idempotency bucket, if the test made them.
	if err := js.DeleteStream(ctx, prefix+"_snap"); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("deleting stream %s_snap: %v", prefix, err)
	}
	if err := js.DeleteKeyValue(ctx, prefix+"_idempotency"); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("deleting the idempotency bucket of %s: %v", prefix, err)
	}
}

// newBroker returns a broker on a new connection to url, with its own
// prefix, closed at the end of t.
func newBroker(t testing.TB, url string, opts *natsbroker.Options) (*natsbroker.Broker, *nats.Conn, string) {
	t.Helper()
	nc := connect(t, url)
	o := natsbroker.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = testPrefix(t, url)
	}
	if o.Logger == nil {
		o.Logger = servertest.Logger(t)
	}
	b := natsbroker.New(nc, &o)
	servertest.CloseAtEnd(t, b)
	return b, nc, o.Prefix
}

// channelName returns a channel no other test uses, with a dot and an
// equals sign, which must be escaped in subjects.
func channelName(t testing.TB) string { return servertest.ChannelNameWith(t, ".x=") }

// A node is one server process of an application: a Hub on its own broker
// and NATS connection, behind an HTTP server.
type node = servertest.BrokerNode[*natsbroker.Broker]

func newNode(t testing.TB, nc *nats.Conn, opts *natsbroker.Options) *node {
	t.Helper()
	o := *opts
	if o.Logger == nil {
		o.Logger = servertest.Logger(t)
	}
	return servertest.NewBrokerNode(t, natsbroker.New(nc, &o))
}

// A server is a private nats-server with JetStream, which the fault tests
// kill, stop and restart without disturbing the shared one.
type server struct {
	*servertest.Process
	store string
}

// natsServer is the binary the fault tests run.
const natsServer = "/usr/sbin/nats-server"

// startServer starts nats-server with JetStream on a free port, storing
// in a directory of t, or skips t if there is no nats-server.
func startServer(t testing.TB) *server {
	t.Helper()
	natsURL(t) // the NATS tests run only when asked for
	if _, err := os.Stat(natsServer); err != nil {
		t.Skipf("%s is not installed", natsServer)
	}
	s := &server{store: t.TempDir()}
	s.Process = servertest.StartProcess(t, servertest.ProcessOptions{
		Command: func(port int) *exec.Cmd {
			return exec.Command(natsServer, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", s.store)
		},
		Ready: func(ctx context.Context, port int) error {
			nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.NoReconnect())
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			_, err = js.AccountInfo(ctx)
			return err
		},
	})
	return s
}

// url returns the server's URL. Killing the server keeps what it stored
// in its store directory.
func (s *server) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.Port) }

// wipe empties the store, as a server that lost its disk.
func (s *server) wipe(t testing.TB) {
	t.Helper()
	if err := os.RemoveAll(s.store); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.store, 0o755); err != nil {
		t.Fatal(err)
	}
}
