package pgbroker_test

import (
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	pgbroker "github.com/go-live/live/postgres"
)

// Two nodes on a private PostgreSQL take writes through a Hook while the
// server is killed for 5 s and restarted, then frozen (the postmaster and
// every backend) for 10 s: every write answered 201 reaches every page of
// both nodes once, in order, and no page is reset.
func TestWritesSurviveOutage(t *testing.T) {
	servertest.ExpectWritesSurviveOutages(t, false, func(t *testing.T) (*servertest.Process, []*servertest.Node) {
		srv := startCluster(t)
		var nodes []*servertest.Node
		for range 2 {
			nodes = append(nodes, newNode(t, newPool(t, srv.url()), &pgbroker.Options{StallTimeout: time.Second}).Node)
		}
		return srv.Process, nodes
	})
}
