// Package redisbroker is a [live.Broker] with [live.History] on Redis, so
// that several processes, each with its own [live.Hub], serve the same
// channels and every client can resume on any of them.
//
// Use [Open] with a Redis URL, or [New] with a client you configured
// (a *redis.Client, a Sentinel *redis.Client from redis.NewFailoverClient,
// or a *redis.ClusterClient), and give the broker to the Hub:
//
//	b, err := redisbroker.Open("redis://localhost:6379/0", nil)
//	if err != nil { … }
//	defer b.Close()
//	hub := live.NewHub(&live.Options{Broker: b})
//	defer hub.Close(context.Background())
//
// # What Redis holds
//
// Redis numbers the publications, so every process agrees on them. Each
// channel has these names, all starting with [Options].Prefix and holding
// the channel in a Redis Cluster hash tag, so that they share a slot:
//
//   - "live:{name}:head", a hash with the channel's epoch, the Seq of its
//     latest publication, a time no later than its oldest entry's and,
//     while it holds idempotency keys, a Seq no later than their first;
//   - "live:{name}:log", a stream of recent publications, entry id
//     "<seq>-0", with fields d (the data), t (Redis time in ms), for a
//     publication with meta ([live.Message].Meta) m, and for one under an
//     idempotency key k;
//   - "live:{name}:keys", a sorted set of the idempotency keys
//     ([live.PublishKey]) of the publications in the stream, scored by
//     their Seq, made by the first keyed publication and expiring
//     HistoryAge after the last;
//   - "live:{name}:pub", the pub/sub channel that announces publications;
//   - "live:{name}:snap", a hash with the latest value a [live.State] wrote
//     on the channel, its epoch and Seq ([live.Snapshots]), made by the
//     first State write and expiring with the head.
//
// Publish runs a Lua script, one call for the publications waiting
// together, that for each increments the Seq, appends to the
// stream, trims it to exactly [Options].HistorySize entries and publishes the
// announcement, so numbering and history never diverge. The epoch is made
// on first use; if Redis loses its data (a restart without persistence,
// FLUSHALL, eviction) the next use makes a new one and older cursors
// reset instead of resuming into the wrong numbering.
//
// # Idempotency keys
//
// A publication under an idempotency key ([live.WithPublishKey]) that the
// channel took already, whose publication is still in its history, takes
// nothing: Publish returns the position of the one taken, announces
// nothing, and appends nothing. The script looks the key up and appends in
// the same atomic step, so of calls under one key, by any processes and
// in one batch or several, one publishes. Keys are per channel and kept
// as long as their publication is in history: until [Options].HistorySize
// later publications push it out of the stream, or it is older than
// [Options].HistoryAge. A channel that starts a new epoch (its data lost,
// a restart or a failover) forgets its keys: a publication sent again
// then is published anew, in the new epoch. With no history
// (HistorySize < 0) keys are not kept. A publication without a key costs
// Redis a few percent more in the script (one more name and argument),
// and trims the keys of a channel with keyed publications in history.
//
// # Redis Cluster
//
// Given a *redis.ClusterClient, the broker shards channels over the
// cluster by their hash tags: a channel's numbering, history and
// announcements live on the master that owns its slot. Announcements use
// sharded pub/sub (SPUBLISH, SSUBSCRIBE), so they never cross the cluster
// bus, and the broker keeps one pub/sub connection per master it
// subscribes on. Each channel remembers which master numbered it: when
// another master takes the slot over (a failover, in which a replica
// that missed the latest publications is promoted, or a resharding), the
// channel starts a new epoch there, so clients reset instead of resuming
// into numbers that were handed out twice. In cluster mode channel names
// must not contain '{' or '}'. Requires Redis 7.0 or later.
//
// # Failures
//
// All subscriptions of a Broker on one Redis server share one pub/sub
// connection. When it breaks, is re-established, or stays silent for
// [Options].StallTimeout although pinged, every Subscribe call on it
// returns an error, and the Hub subscribes again and fills the hole from
// history. Publish returns an error when Redis does not confirm a
// publication.
//
// Requires Redis 6.2 or later.
package redisbroker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/redis/go-redis/v9"
)

// Options configures a Broker. The zero value, or nil, means the defaults
// documented on each field. Brokers sharing a Redis database must agree on
// Prefix, and should on HistorySize and HistoryAge.
type Options struct {
	// HistorySize is how many recent publications each channel keeps for
	// resuming clients: the channel's stream is trimmed to exactly this
	// many entries on every publication. The idempotency keys of these
	// publications are kept with them ([live.PublishKey]). Default 1024;
	// negative keeps none, and no keys.
	HistorySize int

	// HistoryAge drops publications older than this from history (by
	// Redis's clock), and their idempotency keys with them: a publication
	// sent again under its key after HistoryAge is published anew.
	// Default 10 minutes; negative keeps them until
	// HistorySize pushes them out, and channels forever. With an age
	// limit, a channel on which nothing is published and no Subscribe call
	// starts for HistoryAge or 24 hours, whichever is longer, is
	// forgotten: its next publication starts a new epoch, and its clients
	// refetch.
	HistoryAge time.Duration

	// Prefix starts every Redis key and pub/sub channel name the broker
	// uses, so that several applications can share a database. It must
	// not contain '{' or '}'. Default "live:".
	Prefix string

	// StallTimeout is how long the pub/sub connection may stay silent,
	// although pinged, before the broker takes Redis for stalled and ends
	// every Subscribe call with an error. It is pinged after a quarter of
	// that time without traffic. Default 5 seconds.
	StallTimeout time.Duration
}

// Broker is a [live.Broker] and [live.History] on Redis. It is safe for
// concurrent use. From New or Open until Close it runs a goroutine that
// pings its pub/sub connections, and one that reads each connection while
// some Subscribe call uses it.
type Broker struct {
	client  redis.UniversalClient
	cluster *redis.ClusterClient // client, in cluster mode; else nil
	batch   *batcher             // publications on their way
	own     bool                 // Close closes client
	size    int
	age     time.Duration // <= 0: no age limit
	ttl     time.Duration // of a channel's head key; <= 0: none
	prefix  string
	stall   time.Duration

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the pinger and the readers

	mu      sync.Mutex // guards closed, conns, heads, heading and the pub/sub bookkeeping (see psConn and follower)
	closed  bool
	conns   map[string]*psConn // the pub/sub connections in use, by server address ("" but in cluster mode)
	heads   []*follower        // active followers waiting for their head, oldest first
	heading bool               // the head reader runs
}

var (
	_ live.Broker       = (*Broker)(nil)
	_ live.History      = (*Broker)(nil)
	_ live.PagedHistory = (*Broker)(nil)
	_ live.Snapshots    = (*Broker)(nil)
	_ live.Conditional  = (*Broker)(nil)
	_ live.Follower     = (*Broker)(nil)
)

const (
	defaultHistorySize = 1024
	defaultHistoryAge  = 10 * time.Minute
	defaultPrefix      = "live:"
	defaultStall       = 5 * time.Second
	minChannelTTL      = 24 * time.Hour

	// inlineMax is the largest data carried inside a pub/sub
	// announcement; larger data is fetched from the stream, which keeps
	// the shared pub/sub connection's buffers small.
	inlineMax = 64 << 10
)

// checkOptions reports options New cannot work with; Open returns it as
// an error, New panics with it.
func checkOptions(o *Options) error {
	if strings.ContainsAny(o.Prefix, "{}") {
		return fmt.Errorf("redisbroker: Options.Prefix %q contains a brace, which would break the Redis Cluster hash tags", o.Prefix)
	}
	return nil
}

// New returns a broker that uses client, a *redis.Client (to one server,
// or to Sentinel's current master) or a *redis.ClusterClient. The broker
// never closes client; close it after the broker. It panics on options
// Open would refuse, and on other clients (a *redis.Ring cannot keep a
// channel's keys and announcements together).
//
// Publish is not idempotent without an idempotency key
// ([live.WithPublishKey]): if client retries a command whose reply was
// lost, a publication may be taken twice. Set MaxRetries: -1 in the
// client's options to prevent that (and MaxRedirects: -1 for a cluster,
// whose client otherwise also retries on another node), and
// ContextTimeoutEnabled: true so that Publish and Since honour their
// context's deadline. Open does both.
func New(client redis.UniversalClient, opts *Options) *Broker {
	var cluster *redis.ClusterClient
	switch c := client.(type) {
	case *redis.Client:
		if c == nil {
			panic("redisbroker: New with a nil client")
		}
	case *redis.ClusterClient:
		if c == nil {
			panic("redisbroker: New with a nil client")
		}
		cluster = c
	default:
		panic(fmt.Sprintf("redisbroker: New with a %T; want a *redis.Client or *redis.ClusterClient", client))
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.HistorySize == 0 {
		o.HistorySize = defaultHistorySize
	}
	if o.HistorySize < 0 {
		o.HistorySize = 0
	}
	if o.HistoryAge == 0 {
		o.HistoryAge = defaultHistoryAge
	}
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if err := checkOptions(&o); err != nil {
		panic(err.Error())
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = defaultStall
	}
	b := &Broker{
		client:  client,
		cluster: cluster,
		size:    o.HistorySize,
		prefix:  o.Prefix,
		stall:   o.StallTimeout,
		conns:   make(map[string]*psConn),
	}
	if o.HistoryAge > 0 {
		b.age = o.HistoryAge
		b.ttl = max(o.HistoryAge, minChannelTTL)
	}
	inline := inlineMax
	if b.size == 0 {
		inline = -1 // nothing to fetch from: always inline
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.batch = newBatcher(b.ctx, client, cluster, []any{b.size, b.age.Milliseconds(), inline, b.ttl.Milliseconds(), b.clusterArg()})
	b.wg.Add(1)
	go b.ping()
	return b
}

// Open returns a broker on a client it makes from url, in the form
// redis://[[user]:password@]host[:port][/db] (or rediss:// for TLS; see
// redis.ParseURL for the query parameters). A URL that names more nodes
// with addr parameters, redis://host1:6379?addr=host2:6379&addr=host3:6379,
// is a Redis Cluster's (see redis.ParseClusterURL). Like sql.Open, it
// does not connect: the first Publish or Subscribe does. Close closes the
// client.
func Open(url string, opts *Options) (*Broker, error) {
	if opts != nil {
		if err := checkOptions(opts); err != nil {
			return nil, err
		}
	}
	var client redis.UniversalClient
	if isClusterURL(url) {
		o, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, fmt.Errorf("redisbroker: %w", err)
		}
		// A retried publication could be taken twice, on this node or
		// on another.
		if o.MaxRetries == 0 {
			o.MaxRetries = -1
		}
		if o.MaxRedirects == 0 {
			o.MaxRedirects = -1
		}
		o.ContextTimeoutEnabled = true
		client = redis.NewClusterClient(o)
	} else {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redisbroker: %w", err)
		}
		if o.MaxRetries == 0 {
			o.MaxRetries = -1 // a retried publication could be taken twice
		}
		o.ContextTimeoutEnabled = true
		client = redis.NewClient(o)
	}
	b := New(client, opts)
	b.own = true
	return b, nil
}

// isClusterURL reports whether url names several nodes (addr parameters).
func isClusterURL(rawURL string) bool {
	u, err := neturl.Parse(rawURL)
	return err == nil && u.Query().Has("addr")
}

// Close ends every subscription with an error matching [live.ErrClosed],
// makes later calls fail with it, waits for the broker's goroutines and
// closes the client if Open made it. Calling it again does nothing.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	conns := b.conns
	b.conns, b.heads = nil, nil
	var fs []*follower
	for _, c := range conns {
		c.dead = true
		fs = append(fs, c.followersLocked()...)
	}
	b.mu.Unlock()
	for _, f := range fs {
		f.end(live.ErrClosed)
	}

	b.cancel()
	for _, c := range conns {
		c.ps.Close()
	}
	b.batch.queue.Close()
	b.wg.Wait()
	if b.own {
		return b.client.Close()
	}
	return nil
}

// isClosed reports whether Close has been called.
func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// keys returns the Redis keys of channel: its head hash, its stream and
// the sorted set of its publications' idempotency keys.
func (b *Broker) keys(channel string) []string {
	tag := b.prefix + "{" + channel + "}"
	return []string{tag + ":head", tag + ":log", tag + ":keys"}
}

// names returns the names a publication on channel uses: its head, log
// and keys, and its pub/sub channel (see keys and pubsubName), made in
// one allocation, since every publication needs them.
func (b *Broker) names(channel string) (head, log, keys, pubsub string) {
	var sb strings.Builder
	sb.Grow(4*(len(b.prefix)+len(channel)+2) + len(":head:log:keys:pub"))
	var ends [4]int
	for i, suffix := range [...]string{":head", ":log", ":keys", ":pub"} {
		sb.WriteString(b.prefix)
		sb.WriteByte('{')
		sb.WriteString(channel)
		sb.WriteByte('}')
		sb.WriteString(suffix)
		ends[i] = sb.Len()
	}
	all := sb.String()
	return all[:ends[0]], all[ends[0]:ends[1]], all[ends[1]:ends[2]], all[ends[2]:]
}

// pubsubName returns the pub/sub channel that announces channel's
// publications.
func (b *Broker) pubsubName(channel string) string {
	return b.prefix + "{" + channel + "}:pub"
}

// clusterArg tells the publish script whether it runs on a cluster, where
// it announces with SPUBLISH.
func (b *Broker) clusterArg() string {
	if b.cluster != nil {
		return "1"
	}
	return "0"
}

// checkName refuses, in cluster mode, a channel name that would break its
// hash tag and so spread its keys over several slots.
func (b *Broker) checkName(channel string) error {
	if b.cluster != nil && strings.ContainsAny(channel, "{}") {
		return errors.New("a channel name with '{' or '}' cannot be used on Redis Cluster")
	}
	return nil
}

// newEpoch returns a random epoch: 12 characters of [a-z2-7], 60 bits.
func newEpoch() string {
	return strings.ToLower(rand.Text()[:12])
}

// Publish implements [live.Broker]. It returns an error, never a false
// success, when Redis does not confirm the publication. Under an
// idempotency key ([live.PublishKey]) the channel took while its
// publication is in history, it takes nothing and returns that
// publication's position (see the package doc).
func (b *Broker) Publish(ctx context.Context, channel string, data []byte) (live.Position, error) {
	return b.publish(ctx, channel, "", data)
}

// PublishIf implements [live.Conditional]: the publish script compares
// the channel's head with head before it appends, in the same atomic
// call, so concurrent publications of every process, batched or not,
// come either before the comparison or after the append. A head numbered
// by another Redis process (before a restart or a failover) is never
// current: the channel starts a new epoch there.
func (b *Broker) PublishIf(ctx context.Context, channel string, head live.Position, data []byte) (live.Position, error) {
	return b.publish(ctx, channel, head.Epoch+" "+strconv.FormatUint(head.Seq, 10), data)
}

// publish publishes data on channel, on condition cond as the publish
// script takes it ("" for none), under ctx's idempotency key if any.
func (b *Broker) publish(ctx context.Context, channel, cond string, data []byte) (live.Position, error) {
	if err := ctx.Err(); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	if b.isClosed() {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, live.ErrClosed)
	}
	if err := b.checkName(channel); err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	data, meta, err := live.CheckPublish(ctx, channel, data)
	if err != nil {
		return live.Position{}, err
	}
	p := &publication{data: data, meta: meta, cond: cond, key: live.PublishKey(ctx)}
	p.head, p.log, p.keys, p.pubsub = b.names(channel)
	pos, err := b.batch.publish(ctx, p)
	if err != nil && b.isClosed() {
		err = live.ErrClosed
	}
	if err != nil {
		return live.Position{}, fmt.Errorf("live: publish %q: %w", channel, err)
	}
	return pos, nil
}
