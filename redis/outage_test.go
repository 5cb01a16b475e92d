package redisbroker_test

import (
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
)

// Two nodes on a Redis that keeps every write on disk before answering
// (appendfsync always) take writes through a Hook while Redis is killed
// for 5 s and restarted, then frozen for 10 s: every write answered 201
// reaches every page of both nodes once. After the restart a new Redis
// process numbers the channel anew, so pages are reset and refetch.
func TestWritesSurviveOutage(t *testing.T) {
	servertest.ExpectWritesSurviveOutages(t, true, func(t *testing.T) (*servertest.Process, []*servertest.Node) {
		srv := startDurableServer(t)
		var nodes []*servertest.Node
		for range 2 {
			nodes = append(nodes, newNode(t, newClient(t, srv.url()), &redisbroker.Options{StallTimeout: time.Second}).Node)
		}
		return srv.Process, nodes
	})
}

// startDurableServer starts redis-server on a free port with the append
// only file synced on every write, so that a crash loses nothing it
// answered for.
func startDurableServer(t testing.TB) *server {
	t.Helper()
	dir := t.TempDir()
	return &server{startRedis(t, func(int) []string {
		return []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir, "--loglevel", "warning"}
	})}
}
