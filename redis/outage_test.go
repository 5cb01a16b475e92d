package redisbroker_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
)

// Two nodes on a Redis that keeps every write on disk before answering
// (appendfsync always) take writes through a Hook while Redis is killed
// for 5 s and restarted, then frozen for 10 s: every write answered 201
// reaches every page of both nodes once. After the restart a new Redis
// process numbers the channel anew, so pages are reset and refetch.
func TestWritesSurviveOutage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*servertest.Process) servertest.ServerFault
	}{
		{"Killed", func(p *servertest.Process) servertest.ServerFault {
			return servertest.ServerFault{Down: p.Kill, Up: p.Start, Hold: 5 * time.Second, Resets: true}
		}},
		{"Stopped", func(p *servertest.Process) servertest.ServerFault {
			return servertest.ServerFault{Down: p.Stop, Up: p.Cont, Hold: 10 * time.Second}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDurableServer(t)
			var nodes []*servertest.Node
			for range 2 {
				n := newNode(t, newClient(t, srv.url()), &redisbroker.Options{StallTimeout: time.Second})
				nodes = append(nodes, n.Node)
			}
			servertest.ExpectWritesSurvive(t, nodes, tc.fault(srv.Process))
		})
	}
}

// startDurableServer starts redis-server on a free port with the append
// only file synced on every write, so that a crash loses nothing it
// answered for.
func startDurableServer(t testing.TB) *server {
	t.Helper()
	redisURL(t) // the Redis tests run only when asked for
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	dir := t.TempDir()
	return &server{servertest.StartProcess(t, servertest.ProcessOptions{
		Command: func(port int) *exec.Cmd {
			return exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir, "--loglevel", "warning")
		},
		Ready: func(ctx context.Context, port int) error {
			c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
			defer c.Close()
			return c.Ping(ctx).Err()
		},
	})}
}
