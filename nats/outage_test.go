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
	servertest.ExpectWritesSurviveOutages(t, false, func(t *testing.T) (*servertest.Process, []*servertest.Node) {
		srv := startServer(t)
		var nodes []*servertest.Node
		for range 2 {
			nodes = append(nodes, newNode(t, connect(t, srv.url()), &natsbroker.Options{StallTimeout: time.Second}).Node)
		}
		return srv.Process, nodes
	})
}
