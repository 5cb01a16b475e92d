package main

import (
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// A cluster is the control endpoints of every node of a run; one node
// serves alone unless -nodes says otherwise.
type cluster []*control

// stats sums the nodes' figures.
func (cl cluster) stats(gc bool) (serverStats, error) {
	var sum serverStats
	for _, c := range cl {
		st, err := c.stats(gc)
		if err != nil {
			return sum, err
		}
		sum.Goroutines += st.Goroutines
		sum.HeapInuse += st.HeapInuse
		sum.StackInuse += st.StackInuse
		sum.RSS += st.RSS
		sum.CPUNanos += st.CPUNanos
		sum.Connections += st.Connections
		sum.Subscriptions += st.Subscriptions
		sum.Channels += st.Channels
		sum.Delivered += st.Delivered
		sum.Writes += st.Writes
		sum.Published += st.Published
		sum.Resets += st.Resets
		sum.SlowClients += st.SlowClients
	}
	return sum, nil
}

// waitSubscriptions waits until the nodes have want subscriptions in all.
func (cl cluster) waitSubscriptions(want int64) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := cl.stats(false)
		if err != nil {
			return err
		}
		if st.Subscriptions >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("servers have %d of %d subscriptions", st.Subscriptions, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publish publishes n messages on the first node, indexed from first.
func (cl cluster) publish(n int, rate float64, size, first int) error {
	return cl[0].publish(n, rate, size, first, 1)
}

// publishAll publishes n messages at rate in all, each node its share at
// the same time: node k the indexes first+k, first+k+len(cl), …
func (cl cluster) publishAll(n int, rate float64, size, first int) error {
	var g errgroup.Group
	for k, c := range cl {
		share := n / len(cl)
		if k < n%len(cl) {
			share++
		}
		g.Go(func() error { return c.publish(share, rate/float64(len(cl)), size, first+k, len(cl)) })
	}
	return g.Wait()
}

// drop drops every client connection of every node.
func (cl cluster) drop() error {
	for _, c := range cl {
		if err := c.drop(); err != nil {
			return err
		}
	}
	return nil
}
