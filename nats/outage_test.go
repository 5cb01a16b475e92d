package natsbroker_test

import (
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
	natsbroker "github.com/go-live/live/nats"
)

// Two nodes on a private JetStream server take writes through a Hook
// while the server is killed for 5 s and restarted on its store, then
// frozen for 10 s: every write answered 201 reaches every page of both
// nodes once, in order, and no page is reset.
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
			srv := startServer(t)
			var nodes []*servertest.Node
			for range 2 {
				n := newNode(t, connect(t, srv.url()), &natsbroker.Options{StallTimeout: time.Second})
				nodes = append(nodes, n.Node)
			}
			servertest.ExpectWritesSurvive(t, nodes, tc.fault(srv.Process))
		})
	}
}
