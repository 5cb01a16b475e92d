package redisbroker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
	"github.com/redis/go-redis/v9"
)

// A cluster is a private Redis Cluster of three masters, each with one
// replica, which the tests start themselves so that they can kill a
// master without disturbing the shared server.
type cluster struct {
	nodes    []*clusterNode // masters first, then their replicas in the same order
	replicas map[*clusterNode]*clusterNode
}

type clusterNode struct {
	*servertest.Process
	bus int           // the cluster bus port
	id  string        // its cluster node ID
	rc  *redis.Client // to the node alone
}

func (n *clusterNode) addr() string { return fmt.Sprintf("127.0.0.1:%d", n.Port) }

// startCluster starts a cluster of three masters and three replicas on
// free ports, with a node timeout of a second so that a failover takes a
// few seconds, or skips t if there is no redis-server.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	dir := t.TempDir()
	cl := &cluster{replicas: make(map[*clusterNode]*clusterNode)}
	for i := range 6 {
		bus := servertest.FreePort(t)
		p := startRedis(t, func(int) []string {
			return []string{"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
				"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
				"--dir", dir, "--save", "", "--appendonly", "no", "--loglevel", "warning"}
		})
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", p.Port), MaxRetries: -1})
		t.Cleanup(func() { rc.Close() })
		cl.nodes = append(cl.nodes, &clusterNode{Process: p, bus: bus, rc: rc})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	first := cl.nodes[0].rc
	for i, n := range cl.nodes {
		c := n.rc
		id, err := c.ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatalf("CLUSTER MYID on %s: %v", n.addr(), err)
		}
		n.id = id
		if i < 3 {
			lo, hi := i*16384/3, (i+1)*16384/3-1
			if err := c.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
				t.Fatalf("CLUSTER ADDSLOTSRANGE on %s: %v", n.addr(), err)
			}
		}
		if i > 0 {
			if err := first.Do(ctx, "cluster", "meet", "127.0.0.1", n.Port, n.bus).Err(); err != nil {
				t.Fatalf("CLUSTER MEET %s: %v", n.addr(), err)
			}
		}
	}
	for i, r := range cl.nodes[3:] {
		m := cl.nodes[i]
		cl.replicas[m] = r
		c := r.rc
		// The replica must know its master before it can follow it.
		awaitCluster(t, "the replica knows its master", func() bool {
			return strings.Contains(c.ClusterNodes(ctx).Val(), m.id)
		})
		if err := c.ClusterReplicate(ctx, m.id).Err(); err != nil {
			t.Fatalf("CLUSTER REPLICATE on %s: %v", r.addr(), err)
		}
	}
	for _, n := range cl.nodes {
		c := n.rc
		awaitCluster(t, n.addr()+" sees the cluster ready", func() bool {
			return strings.Contains(c.ClusterInfo(ctx).Val(), "cluster_state:ok") &&
				strings.Count(c.ClusterNodes(ctx).Val(), "master") == 3
		})
	}
	for _, r := range cl.nodes[3:] {
		c := r.rc
		awaitCluster(t, r.addr()+" replicates", func() bool {
			return strings.Contains(c.Info(ctx, "replication").Val(), "master_link_status:up")
		})
	}
	return cl
}

// awaitCluster polls cond, which asks the cluster how it is, until it
// holds; the cluster gives no notice of its changes.
func awaitCluster(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v until %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling the cluster's state
	}
}

// client returns a cluster client configured as the package documents,
// closed when t ends.
func (cl *cluster) client(t testing.TB) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 []string{cl.nodes[0].addr(), cl.nodes[1].addr()},
		MaxRetries:            -1,
		MaxRedirects:          -1,
		ContextTimeoutEnabled: true,
		ClientName:            "livetest-" + servertest.RandomName(),
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// master returns the master that owns key's slot now, as the cluster
// says.
func (cl *cluster) master(t testing.TB, key string) *clusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, n := range cl.nodes {
		slot, err := n.rc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			continue // killed
		}
		slots, err := n.rc.ClusterSlots(ctx).Result()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if s.Start <= int(slot) && int(slot) <= s.End {
				for _, x := range cl.nodes {
					if x.addr() == s.Nodes[0].Addr {
						return x
					}
				}
			}
		}
	}
	t.Fatalf("no master owns the slot of %q", key)
	return nil
}

// deleteClusterKeys deletes the keys under prefix on every master.
func deleteClusterKeys(t testing.TB, c *redis.ClusterClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, prefix+"*").Result()
		if err != nil || len(keys) == 0 {
			return err
		}
		for _, k := range keys { // one slot per DEL on a cluster
			if err := m.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("deleting the keys under %s: %v", prefix, err)
	}
}

// The suites run on a cluster too: each channel's numbering, history and
// announcements on the master of its slot, batches split by channel.
func TestClusterConformance(t *testing.T) {
	cl := startCluster(t)
	t.Run("Broker", func(t *testing.T) {
		brokertest.Run(t, brokertest.Config{
			New: func(t *testing.T) live.Broker {
				return redisbroker.New(cl.client(t), &redisbroker.Options{HistorySize: 64, Prefix: "livetest:" + servertest.RandomName() + ":"})
			},
			HistorySize: 64,
		})
	})
	t.Run("Open", func(t *testing.T) {
		// A URL with addr parameters opens a cluster client.
		url := fmt.Sprintf("redis://%s?addr=%s&addr=%s", cl.nodes[0].addr(), cl.nodes[1].addr(), cl.nodes[2].addr())
		b, err := redisbroker.Open(url, &redisbroker.Options{Prefix: "livetest:"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		channel := servertest.ChannelName(t)
		w := servertest.Watch(t, b, channel)
		w.Ready(t)
		pos := servertest.Publish(t, b, channel, `1`)
		if m := w.Next(t); m.Pos != pos {
			t.Errorf("delivered %+v, want %v", m, pos)
		}
		name := "livetest:{" + channel + "}:pub"
		subs, err := cl.master(t, name).rc.PubSubShardNumSub(t.Context(), name).Result()
		if err != nil || subs[name] != 1 {
			t.Errorf("PUBSUB SHARDNUMSUB %s = %v, %v; want 1 sharded subscriber", name, subs, err)
		}
	})
	t.Run("PublishKeyBatch", func(t *testing.T) {
		b := redisbroker.New(cl.client(t), &redisbroker.Options{Prefix: "livetest:" + servertest.RandomName() + ":"})
		t.Cleanup(func() { b.Close() })
		checkKeyBatch(t, b)
	})
	t.Run("Nodes", func(t *testing.T) {
		c := cl.client(t)
		prefix := "livetest:" + servertest.RandomName() + ":"
		brokertest.RunNodes(t, brokertest.Config{
			New: func(t *testing.T) live.Broker {
				return redisbroker.New(cl.client(t), &redisbroker.Options{HistorySize: 16, Prefix: prefix})
			},
			HistorySize: 16,
			LoseData:    func(t *testing.T) { deleteClusterKeys(t, c, prefix) },
		})
	})
}

// Channels spread over the masters; each master announces its own
// channels to one pub/sub connection of the broker's (sharded pub/sub),
// and a publication's announcement stays on its master.
func TestClusterSharding(t *testing.T) {
	cl := startCluster(t)
	c := cl.client(t)
	b := redisbroker.New(c, &redisbroker.Options{Prefix: "livetest:"})
	t.Cleanup(func() { b.Close() })
	ctx := t.Context()

	owners := make(map[*clusterNode][]string)
	for i := 0; len(owners) < 3 || i < 12; i++ {
		channel := fmt.Sprintf("%s-%d", servertest.ChannelName(t), i)
		m := cl.master(t, "{"+channel+"}")
		owners[m] = append(owners[m], channel)
	}
	var watchers []*servertest.Watcher
	for _, chans := range owners {
		for _, ch := range chans {
			w := servertest.Watch(t, b, ch)
			w.Ready(t)
			watchers = append(watchers, w)
		}
	}
	for m, chans := range owners {
		mc := m.rc
		clients, err := mc.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		conns := 0
		for _, line := range strings.Split(clients, "\n") {
			if strings.Contains(line, " name="+c.Options().ClientName+" ") && !strings.Contains(line, " ssub=0 ") {
				conns++
			}
		}
		if conns != 1 {
			t.Errorf("master %s: %d connections of the broker's with sharded subscriptions, want 1:\n%s", m.addr(), conns, clients)
		}
		names := make([]string, len(chans))
		for i, ch := range chans {
			names[i] = "livetest:{" + ch + "}:pub"
		}
		subs, err := mc.PubSubShardNumSub(ctx, names...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if subs[n] != 1 {
				t.Errorf("master %s: PUBSUB SHARDNUMSUB %s = %d, want 1", m.addr(), n, subs[n])
			}
		}
	}
	// A batch over every channel at once.
	i := 0
	errs := make(chan error, len(watchers))
	for _, chans := range owners {
		for _, ch := range chans {
			go func(data []byte) {
				_, err := b.Publish(ctx, ch, data)
				errs <- err
			}([]byte(strconv.Itoa(i)))
			i++
		}
	}
	for range watchers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range watchers {
		if m := w.Next(t); m.Pos.Seq != 1 {
			t.Errorf("delivered %+v, want the channel's first publication", m)
		}
	}
	if _, err := b.Publish(ctx, "a{b}", nil); err == nil || !strings.Contains(err.Error(), "Cluster") {
		t.Errorf("Publish on a channel with braces = %v, want an error about the cluster", err)
	}
}

// A master dies after announcing a publication its replica never
// received, and the replica takes over. The channel's numbers after the
// last one the replica has were handed out once already: the clients
// that saw them must be reset, live or resuming, never given other
// publications under the same numbers.
func TestClusterFailover(t *testing.T) {
	cl := startCluster(t)
	b := redisbroker.New(cl.client(t), &redisbroker.Options{StallTimeout: time.Second})
	t.Cleanup(func() { b.Close() })
	n := servertest.NewNode(t, b, nil)
	channel := servertest.ChannelName(t)
	m := cl.master(t, "{"+channel+"}")
	r := cl.replicas[m]
	mc, rc := m.rc, r.rc
	ctx, cancel := context.WithTimeout(t.Context(), 4*waitTimeout)
	defer cancel()

	s := servertest.OpenStream(t, n.SSE+channel, "")
	kept := n.Publish(t, channel, `"kept"`)
	s.ExpectNext(t, kept)
	// WAIT counts the replicas that have this connection's writes, so it
	// writes after the broker's, in the same slot, and waits for that.
	if err := mc.Set(ctx, "{"+channel+"}:replicated", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if acked, err := mc.Do(ctx, "wait", 1, waitTimeout.Milliseconds()).Int(); err != nil || acked != 1 {
		t.Fatalf("WAIT for the replica = %d, %v", acked, err)
	}
	// The replica, paused, cannot take the next publication from its
	// socket after the master is gone if the master drops it first.
	r.Stop()
	if err := mc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatalf("dropping the replica: %v", err)
	}
	lost := n.Publish(t, channel, `"lost"`)
	s.ExpectNext(t, lost)
	m.Kill()
	r.Cont()
	killed := time.Now()
	awaitCluster(t, "the replica takes over", func() bool {
		role, err := rc.Do(ctx, "role").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})
	t.Logf("the replica took over %v after the master died", time.Since(killed).Round(time.Millisecond))
	head := "live:{" + channel + "}:head"
	if seq, err := rc.HGet(ctx, head, "seq").Result(); err != nil || seq != strconv.FormatUint(kept.Seq, 10) {
		t.Fatalf("the new master's head is at %q (%v), want %d: the test needs the last publication lost", seq, err, kept.Seq)
	}

	expectRolledBack(t, n, s, channel, kept, lost, killed)
}

// expectRolledBack checks a client that reads s through n after the
// server lost the publication at lost, the one after kept, which the
// client received, in a failure at failed: the next publication starts a
// new epoch (publishing is retried until the server takes publications
// again), the client is reset to it, and a client resuming from lost is
// reset too.
func expectRolledBack(t testing.TB, n *servertest.Node, s *servertest.Stream, channel string, kept, lost live.Position, failed time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitTimeout)
	defer cancel()
	var early live.Position
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		pos, err := n.Hub.Publish(pctx, channel, []byte(`"early"`))
		cancel()
		if err == nil {
			early = pos
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publishing after the failure: %v", err)
		}
	}
	t.Logf("publishing again %v after the failure", time.Since(failed).Round(time.Millisecond))
	if early.Epoch == kept.Epoch {
		t.Errorf("first publication after the failure at %v, in the epoch that handed out %v already", early, lost)
	}
	servertest.ExpectEpochReset(t, n, s, channel, early)
	t.Logf("the client received again %v after the failure", time.Since(failed).Round(time.Millisecond))

	// A client that saw the lost publication resumes.
	s2 := servertest.OpenStream(t, n.SSE+channel, lost.String())
	if e := s2.Next(t); e.Event != "reset" {
		t.Errorf("resuming from %v after the failure: %+v, want a reset", lost, e)
	}
}
