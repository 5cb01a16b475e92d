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
	for _, tc := range []struct {
		name  string
		fault func(*servertest.Process) servertest.ServerFault
	}{
		{"Killed", func(p *servertest.Process) servertest.ServerFault {
			return servertest.ServerFault{Down: p.Kill, Up: p.Start, Hold: 5 * time.Second}
		}},
		{"Stopped", func(p *servertest.Process) servertest.ServerFault {
			return servertest.ServerFault{Down: p.Stop, Up: p.Cont, Hold: 10 * time.Second}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startCluster(t)
			var nodes []*servertest.Node
			for range 2 {
				n := newNode(t, newPool(t, srv.url()), &pgbroker.Options{StallTimeout: time.Second})
				nodes = append(nodes, n.Node)
			}
			servertest.ExpectWritesSurvive(t, nodes, tc.fault(srv.Process))
		})
	}
}
