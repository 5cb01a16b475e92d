// Command liveload measures a live Hub under load: idle memory and
// goroutines per connection, server CPU per delivered message in a burst,
// publish-to-receive latency at a fixed offered load, and a reconnect
// storm. It runs the server in a child process (liveload serve) and the
// subscribers in its own, so each side's figures are its own. With -drain
// it measures instead a node leaving, closed at once and then drained;
// with -channels, subscribers that each follow a channel of their own;
// with -follow, what a node pays per channel it follows (many.go).
//
//	go run ./cmd/liveload -n 10000 -transport sse
//	go run ./cmd/liveload -n 10000 -transport ws -json ws.json
//	go run ./cmd/liveload -drain -nodes 3 -broker redis -n 9000 -transport ws
//	go run ./cmd/liveload -n 10000 -transport ws -channels own+shared
//	go run ./cmd/liveload -follow 100000 -broker redis
//
// Open files: each side needs one descriptor per connection; raise the
// limit (ulimit -n) above n plus a few hundred.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		err = serve(os.Args[2:])
	} else {
		err = load(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "liveload:", err)
		os.Exit(1)
	}
}

// result is everything one run measured; -json writes it.
type result struct {
	Machine   string `json:"machine"`
	Server    string `json:"server"`
	Transport string `json:"transport"`
	N         int    `json:"subscribers"`
	Nodes     int    `json:"nodes"`
	Broker    string `json:"broker"`

	Presence        string  `json:"presence,omitempty"`
	PresenceFrames  float64 `json:"presenceFramesPerSubscriber,omitempty"`
	PresenceBytes   float64 `json:"presenceBytesPerSubscriber,omitempty"`
	PresenceSettled int     `json:"presenceSettled,omitempty"`

	IdleRSSPerConn   float64 `json:"idleRSSBytesPerConn"`
	IdleHeapPerConn  float64 `json:"idleHeapStackBytesPerConn"`
	GoroutinesPerCon float64 `json:"goroutinesPerConn"`
	ConnectSeconds   float64 `json:"connectSeconds"`

	BurstMessages       int     `json:"burstMessages"`
	BurstCPUPerDelivery float64 `json:"burstCPUNanosPerDelivery"`
	BurstPerSecond      float64 `json:"burstDeliveriesPerSecond"`
	BurstLost           int64   `json:"burstLost"`

	Rate           float64 `json:"latencyRatePerSecond"`
	Offered        float64 `json:"latencyOfferedDeliveriesPerSecond"`
	LatencyCPU     float64 `json:"latencyCPUNanosPerDelivery"`
	P50, P99, Max  float64 `json:"-"`
	P50ms          float64 `json:"latencyP50ms"`
	P99ms          float64 `json:"latencyP99ms"`
	Maxms          float64 `json:"latencyMaxms"`
	LatencyLost    int64   `json:"latencyLost"`
	CrossP99ms     float64 `json:"latencyCrossNodeP99ms,omitempty"`
	AllP50ms       float64 `json:"allNodesLatencyP50ms,omitempty"`
	AllP99ms       float64 `json:"allNodesLatencyP99ms,omitempty"`
	AllCrossP99ms  float64 `json:"allNodesLatencyCrossNodeP99ms,omitempty"`
	AllLost        int64   `json:"allNodesLatencyLost,omitempty"`
	SlowClients    int     `json:"slowClients"`
	SlowP50ms      float64 `json:"slowLatencyP50ms,omitempty"`
	SlowP99ms      float64 `json:"slowLatencyP99ms,omitempty"`
	SlowMaxms      float64 `json:"slowLatencyMaxms,omitempty"`
	SlowLost       int64   `json:"slowLatencyLost,omitempty"`
	StormSeconds   float64 `json:"stormBackSeconds"`
	StormLost      int64   `json:"stormLost"`
	StormDups      int64   `json:"stormDuplicates"`
	StormResets    int64   `json:"stormResets"`
	StormDelivered int64   `json:"stormDelivered"`
}

func load(args []string) error {
	fs := flag.NewFlagSet("liveload", flag.ExitOnError)
	n := fs.Int("n", 10000, "subscribers")
	transport := fs.String("transport", "sse", "sse, ws or poll (long-polling)")
	burst := fs.Int("burst", 200, "messages in the burst")
	rate := fs.Float64("rate", 20, "messages per second in the latency run")
	duration := fs.Duration("duration", 10*time.Second, "length of the latency run")
	size := fs.Int("size", 100, "bytes per message")
	slow := fs.Int("slow", 0, "extra subscribers that never read, for a second latency run")
	storm := fs.Bool("storm", true, "run the reconnect storm")
	jsonOut := fs.String("json", "", "also write the results to this file as JSON")
	target := fs.String("target", "", "data,control addresses of a running 'liveload serve' (default: start one)")
	verbose := fs.Bool("v", false, "log subscriber errors")
	wsClient := fs.String("wsclient", "raw", "the WebSocket subscribers' client: raw (the generator's own, parsing frames in place) or library (coder/websocket)")
	presence := fs.String("presence", "", "give the channel presence, members or count, each subscriber a user of its own; reports what presence costs")
	server := fs.String("server", "live", "the server under load: live, or a peer library (r3labs, gosse, melody, centrifuge), each on its own transport")
	nodes := fs.Int("nodes", 1, "server processes sharing the broker; subscribers are spread over them, and publications come from the first, then from all")
	brokerKind := fs.String("broker", "memory", "the broker the servers share: memory (one node only), redis, nats or postgres")
	brokerAt := fs.String("broker-url", "", "the broker's URL (default: its LIVE_REDIS_URL, LIVE_NATS_URL or LIVE_POSTGRES_URL, or a local server)")
	metrics := fs.Bool("metrics", false, "observe the hub with the Prometheus collector's hooks, as an application that exports its metrics does")
	authorize := fs.Bool("authorize", false, "give the hub an Authorize of the application's (allowing everything), so connections keep their request for Hub.Reauthorize")
	peers := fs.Bool("peers", false, "run live (SSE and WebSocket) and every peer one after another, and print live's figures over the best peer's")
	drain := fs.Bool("drain", false, "instead of the other phases, take the last of -nodes out while publishing at -rate: closed at once, then drained (see drain.go)")
	drainWindow := fs.Duration("drain-window", 10*time.Second, "the window Hub.Drain spreads the endings over, with -drain")
	channels := fs.String("channels", "", "instead of one channel for all, the many-channel scenario (see many.go): each subscriber follows a channel of its own (own), and also one shared channel (own+shared); -rate is then publications per second in all (default 20000), each on a random own channel")
	publishers := fs.Int("publishers", 4, "with -channels: the publishers, each on its share of the own channels")
	follow := fs.Int("follow", 0, "instead of the other phases, have one server follow this many channels on -broker (see many.go), and report what each costs")
	followStreams := fs.Int("follow-per-stream", 1000, "with -follow: the channels each multiplexed SSE stream carries")
	followIdle := fs.Duration("follow-idle", 10*time.Second, "with -follow: how long the server's idle CPU is measured once all are followed")
	fs.Parse(args)
	if *presence != "" && *presence != "members" && *presence != "count" {
		return fmt.Errorf("-presence must be members or count")
	}
	if *nodes > 1 && (*brokerKind == "memory" || *brokerKind == "") {
		return fmt.Errorf("-nodes %d needs a broker they share: -broker redis, nats or postgres", *nodes)
	}
	if *nodes > 1 && (*target != "" || *peers) {
		return fmt.Errorf("-nodes runs its own servers of live: not with -target or -peers")
	}
	if *transport != "sse" && *transport != "ws" && *transport != "poll" {
		return fmt.Errorf("-transport must be sse, ws or poll")
	}
	if r, ok := peerRoutes[*server]; ok {
		*transport = r.transport
	} else if *server != "live" {
		return fmt.Errorf("-server must be live, r3labs, gosse, melody or centrifuge")
	}
	rateSet := false
	fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate" })
	if *channels != "" && !rateSet {
		*rate = 20000
	}
	p := params{n: *n, transport: *transport, burst: *burst, rate: *rate, duration: *duration, size: *size, slow: *slow,
		storm: *storm, jsonOut: *jsonOut, target: *target, verbose: *verbose, wsClient: *wsClient, presence: *presence, server: *server, authorize: *authorize, metrics: *metrics,
		nodes: max(*nodes, 1), broker: *brokerKind, brokerURL: *brokerAt, channels: *channels, publishers: max(*publishers, 1)}
	if *follow > 0 {
		return followScenario(p, *follow, *followStreams, *followIdle)
	}
	if *channels != "" {
		if *channels != "own" && *channels != "own+shared" {
			return fmt.Errorf("-channels must be own or own+shared")
		}
		if *nodes > 1 || *presence != "" || *drain {
			return fmt.Errorf("-channels runs one server: not with -nodes, -presence or -drain (with -target, start it with 'liveload serve -channels')")
		}
		if *transport == "poll" {
			return fmt.Errorf("-channels runs on SSE or WebSocket, not long-polling")
		}
		if *peers {
			return compareManyPeers(p)
		}
		_, err := runMany(p)
		return err
	}
	if *peers {
		return comparePeers(p)
	}
	if *drain {
		return drainScenario(p, *drainWindow)
	}
	_, err := runOne(p)
	return err
}

// params are one run's settings, from the flags.
type params struct {
	n, burst, size, slow                                   int
	rate                                                   float64
	duration                                               time.Duration
	storm, verbose, authorize, metrics                     bool
	transport, jsonOut, target, wsClient, presence, server string
	nodes                                                  int
	broker, brokerURL                                      string

	// The many-channel scenario's (many.go).
	channels   string // own or own+shared; "" for the one-channel scenario
	publishers int
	maxSubs    int // the hub's MaxSubscriptions, with -follow
}

// subsPer is how many subscriptions a subscriber makes, as the server
// counts them: a channel of live or Centrifuge is one; a stream of the
// SSE peers counts as one whatever it carries.
func (p params) subsPer() int {
	if p.channels == "own+shared" && (p.server == "live" || p.server == "centrifuge") {
		return 2
	}
	return 1
}

// peer returns the peer library under load, or "" for live.
func (p params) peer() string {
	if p.server == "live" {
		return ""
	}
	return p.server
}

// runOne runs every phase against one server and reports its figures.
func runOne(p params) (*result, error) {
	addrs, ctl, stop, err := startNodes(p)
	if err != nil {
		return nil, err
	}
	defer stop()
	r := newRunner(p, addrs, ctl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fmt.Printf("liveload: %d %s subscribers; %s\n", p.n, strings.ToUpper(p.transport), r.res.Machine)
	if len(addrs) > 1 {
		fmt.Printf("%d nodes on %s; subscribers spread over them; figures per connection are the nodes' sums over all\n", len(addrs), p.broker)
	}
	for _, phase := range []func(context.Context) error{r.idle, r.burst, r.latency, r.slowClients, r.storm} {
		if err := phase(ctx); err != nil {
			return nil, err
		}
	}
	cancel()
	if p.jsonOut != "" {
		b, _ := json.MarshalIndent(r.res, "", "  ")
		if err := os.WriteFile(p.jsonOut, append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return r.res, nil
}

// startNodes starts the servers of a run, or takes the one -target names,
// and returns their data addresses and control endpoints, and stop, which
// ends the servers it started.
func startNodes(p params) (addrs []string, ctl cluster, stop func(), err error) {
	var started []*exec.Cmd
	stop = func() {
		for _, srv := range slices.Backward(started) {
			srv.Process.Signal(syscall.SIGTERM)
			srv.Wait()
		}
	}
	addNode := func(data, ctlAddr string) {
		addrs = append(addrs, data)
		ctl = append(ctl, &control{base: "http://" + ctlAddr, c: &http.Client{Timeout: 5 * time.Minute}})
	}
	if p.target != "" {
		d, c, ok := strings.Cut(p.target, ",")
		if !ok {
			return nil, nil, nil, errors.New("-target wants data,control")
		}
		addNode(d, c)
		return addrs, ctl, stop, nil
	}
	for k := range p.nodes {
		srv, d, c, err := startServer(p, k)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		started = append(started, srv)
		addNode(d, c)
	}
	return addrs, ctl, stop, nil
}

// A runner is what the phases of one run share: the servers, the
// subscribers, and the figures so far.
type runner struct {
	p     params
	addrs []string
	ctl   cluster
	l     *loader
	res   *result
	base  serverStats // the servers before anyone connected
	quiet serverStats // the servers once everyone subscribed
	next  int         // the index of the next publication
	msgs  int         // publications in a latency run
}

// newRunner sets up the subscribers of a run on the servers at addrs.
func newRunner(p params, addrs []string, ctl cluster) *runner {
	l := &loader{
		addrs: addrs, sources: len(addrs), transport: p.transport, verbose: p.verbose, presence: p.presence, wsLibrary: p.wsClient == "library",
		own: p.channels != "", shared: p.channels == "own+shared",
		peer:  p.peer(),
		http:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableKeepAlives: true}},
		polls: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: p.n + 64}},
	}
	res := &result{Machine: machine(), Server: p.server, Transport: p.transport, N: p.n, Presence: p.presence,
		Nodes: len(addrs), Broker: p.broker}
	return &runner{p: p, addrs: addrs, ctl: ctl, l: l, res: res, msgs: int(p.rate * p.duration.Seconds())}
}

// deliveries is how many deliveries msgs publications make.
func (r *runner) deliveries(msgs int) int64 { return int64(msgs) * int64(r.p.n) }

// idle connects everyone, then compares the collected heaps; with
// presence, it also counts what the joins cost.
func (r *runner) idle(ctx context.Context) error {
	p, l, res := r.p, r.l, r.res
	base, err := r.ctl.stats(true)
	if err != nil {
		return err
	}
	r.base = base
	start := time.Now()
	if err := l.connect(ctx, p.n); err != nil {
		return err
	}
	if err := r.ctl.waitSubscriptions(int64(p.n*p.subsPer()) + base.Subscriptions); err != nil {
		return err
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	time.Sleep(time.Second) // let connection setup garbage become garbage
	idle, err := r.ctl.stats(true)
	if err != nil {
		return err
	}
	r.quiet = idle
	fn := float64(p.n)
	res.IdleRSSPerConn = float64(idle.RSS-base.RSS) / fn
	res.IdleHeapPerConn = float64(idle.HeapInuse+idle.StackInuse-base.HeapInuse-base.StackInuse) / fn
	res.GoroutinesPerCon = float64(idle.Goroutines-base.Goroutines) / fn
	fmt.Printf("%-34s %d connected in %.1f s; RSS %.1f KiB, heap+stacks %.1f KiB, goroutines %.2f per connection\n",
		"idle", p.n, res.ConnectSeconds, res.IdleRSSPerConn/1024, res.IdleHeapPerConn/1024, res.GoroutinesPerCon)
	if p.presence != "" {
		var frames, bytes int64
		settled := 0
		for _, s := range l.subs {
			frames += s.presFrames.Load()
			bytes += s.presBytes.Load()
			if s.presCount.Load() == int64(p.n) {
				settled++
			}
		}
		res.PresenceFrames, res.PresenceBytes = float64(frames)/fn, float64(bytes)/fn
		res.PresenceSettled = settled
		fmt.Printf("%-34s %.1f frames, %.1f KiB per subscriber while %d joined; %d of them count %d\n",
			"presence ("+p.presence+")", res.PresenceFrames, res.PresenceBytes/1024, p.n, settled, p.n)
	}
	return nil
}

// burst publishes as fast as possible and counts server CPU.
func (r *runner) burst(context.Context) error {
	p, l, res := r.p, r.l, r.res
	res.BurstMessages = p.burst
	before, _ := r.ctl.stats(false)
	l.received.Store(0)
	start := time.Now()
	if err := r.ctl.publish(p.burst, 0, p.size, r.next); err != nil {
		return err
	}
	r.next += p.burst
	if err := l.waitReceived(r.deliveries(p.burst), time.Minute); err != nil {
		return err
	}
	elapsed := time.Since(start)
	after, _ := r.ctl.stats(false)
	res.BurstCPUPerDelivery = float64(after.CPUNanos-before.CPUNanos) / float64(r.deliveries(p.burst))
	res.BurstPerSecond = float64(r.deliveries(p.burst)) / elapsed.Seconds()
	res.BurstLost = l.lost()
	fmt.Printf("%-34s server CPU %.2f µs per delivery; %.0f deliveries/s; lost %d\n",
		fmt.Sprintf("burst %d × %d", p.burst, p.n), res.BurstCPUPerDelivery/1000, res.BurstPerSecond, res.BurstLost)
	return nil
}

// latencies are the figures of one latency run.
type latencies struct {
	p50, p99, max time.Duration
	cpu           float64 // server CPU nanoseconds per delivery
	lost          int64
}

// measureLatency publishes r.msgs at the fixed rate, from the first node
// or from every node, and measures the time to each delivery.
func (r *runner) measureLatency(allNodes bool) (latencies, error) {
	l := r.l
	l.hist.reset()
	l.cross.reset()
	l.received.Store(0)
	lost0 := l.lost()
	before, _ := r.ctl.stats(false)
	publish := r.ctl.publish
	if allNodes {
		publish = r.ctl.publishAll
	}
	if err := publish(r.msgs, r.p.rate, r.p.size, r.next); err != nil {
		return latencies{}, err
	}
	r.next += r.msgs
	if err := l.waitReceived(r.deliveries(r.msgs), time.Minute); err != nil {
		return latencies{}, err
	}
	after, _ := r.ctl.stats(false)
	cpu := float64(after.CPUNanos-before.CPUNanos) / float64(r.deliveries(r.msgs))
	if w := after.Writes - before.Writes; w > 0 {
		fmt.Printf("%-34s %.2f deliveries per write\n", "", float64(after.Delivered-before.Delivered)/float64(w))
	}
	return latencies{l.hist.quantile(0.5), l.hist.quantile(0.99), time.Duration(l.hist.max.Load()), cpu, l.lost() - lost0}, nil
}

// latency measures publish-to-receive latency at a fixed offered load;
// with several nodes, publishing on the first and then on every node.
func (r *runner) latency(context.Context) error {
	p, res := r.p, r.res
	res.Rate, res.Offered = p.rate, p.rate*float64(p.n)
	m, err := r.measureLatency(false)
	if err != nil {
		return err
	}
	res.P50ms, res.P99ms, res.Maxms, res.LatencyCPU, res.LatencyLost = ms(m.p50), ms(m.p99), ms(m.max), m.cpu, m.lost
	fmt.Printf("%-34s p50 %.1f ms, p99 %.1f ms, max %.1f ms; server CPU %.2f µs per delivery; lost %d\n",
		fmt.Sprintf("latency %g/s × %d = %.0f/s", p.rate, p.n, res.Offered), res.P50ms, res.P99ms, res.Maxms, m.cpu/1000, m.lost)
	if len(r.addrs) == 1 {
		return nil
	}
	res.CrossP99ms = ms(r.l.cross.quantile(0.99))
	fmt.Printf("%-34s p99 %.1f ms for the subscribers of the other nodes\n", "  published on node 0", res.CrossP99ms)
	r.msgs -= r.msgs % len(r.addrs)
	m, err = r.measureLatency(true)
	if err != nil {
		return err
	}
	res.AllP50ms, res.AllP99ms, res.AllCrossP99ms, res.AllLost = ms(m.p50), ms(m.p99), ms(r.l.cross.quantile(0.99)), m.lost
	fmt.Printf("%-34s p50 %.1f ms, p99 %.1f ms, p99 %.1f ms across nodes; lost %d\n",
		"  the same published on every node", res.AllP50ms, res.AllP99ms, res.AllCrossP99ms, m.lost)
	return nil
}

// slowClients measures latency again with -slow clients that never read.
func (r *runner) slowClients(ctx context.Context) error {
	p, res := r.p, r.res
	if p.slow == 0 {
		return nil
	}
	res.SlowClients = p.slow
	stop, err := stalled(ctx, r.addrs[0], p.slow)
	if err != nil {
		return err
	}
	if err := r.ctl.waitSubscriptions(int64(p.n+p.slow) + r.base.Subscriptions); err != nil {
		stop()
		return err
	}
	m, err := r.measureLatency(false)
	stop()
	if err != nil {
		return err
	}
	res.SlowP50ms, res.SlowP99ms, res.SlowMaxms, res.SlowLost = ms(m.p50), ms(m.p99), ms(m.max), m.lost
	fmt.Printf("%-34s p50 %.1f ms, p99 %.1f ms, max %.1f ms; lost %d\n",
		fmt.Sprintf("  same, with %d clients not reading", p.slow), res.SlowP50ms, res.SlowP99ms, res.SlowMaxms, m.lost)
	return nil
}

// storm drops every connection while publishing; everyone resumes with
// its cursor at once.
func (r *runner) storm(context.Context) error {
	p, l, res := r.p, r.l, r.res
	if !p.storm {
		return nil
	}
	l.received.Store(0)
	lost0, dups0, resets0 := l.lost(), l.dups(), l.resets()
	connects0 := l.connects()
	stormMsgs := int(p.rate * 6)
	pubErr := make(chan error, 1)
	go func() { pubErr <- r.ctl.publish(stormMsgs, p.rate, p.size, r.next) }()
	time.Sleep(2 * time.Second)
	start := time.Now()
	if err := r.ctl.drop(); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for l.connects() < connects0+int64(p.n) || l.live.Load() < int64(p.n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("storm: %d of %d back after 2 minutes", l.live.Load(), p.n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.StormSeconds = time.Since(start).Seconds()
	if err := <-pubErr; err != nil {
		return err
	}
	r.next += stormMsgs
	if err := l.waitReceived(r.deliveries(stormMsgs), time.Minute); err != nil {
		return err
	}
	res.StormLost, res.StormDups, res.StormResets = l.lost()-lost0, l.dups()-dups0, l.resets()-resets0
	res.StormDelivered = l.received.Load()
	fmt.Printf("%-34s all back in %.2f s; delivered %d; lost %d, duplicates %d, resets %d\n",
		fmt.Sprintf("reconnect storm × %d", p.n), res.StormSeconds, res.StormDelivered, res.StormLost, res.StormDups, res.StormResets)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// connect starts n subscribers and waits until each has subscribed,
// opening at most 256 connections at a time.
func (l *loader) connect(ctx context.Context, n int) error {
	ready := make(chan struct{}, n)
	const wave = 256
	for i := 0; i < n; i += wave {
		k := min(wave, n-i)
		for range k {
			node := len(l.subs) % len(l.addrs)
			s := &subscriber{l: l, node: node, addr: l.addrs[node]}
			if l.presence != "" {
				s.user = strconv.Itoa(len(l.subs))
			}
			if l.own {
				s.own = ownChannel(len(l.subs))
			}
			l.subs = append(l.subs, s)
			go s.run(ctx, ready)
		}
		for range k {
			select {
			case <-ready:
			case <-time.After(time.Minute):
				return fmt.Errorf("connecting: only %d of %d subscribed", i, n)
			}
		}
	}
	return nil
}

func (l *loader) waitReceived(want int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for l.received.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("received %d of %d deliveries in %v", l.received.Load(), want, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

func (l *loader) sum(f func(*subscriber) int64) int64 {
	var t int64
	for _, s := range l.subs {
		t += f(s)
	}
	return t
}

func (l *loader) lost() int64   { return l.sum(func(s *subscriber) int64 { return s.lost.Load() }) }
func (l *loader) dups() int64   { return l.sum(func(s *subscriber) int64 { return s.dups.Load() }) }
func (l *loader) resets() int64 { return l.sum(func(s *subscriber) int64 { return s.resets.Load() }) }
func (l *loader) connects() int64 {
	return l.sum(func(s *subscriber) int64 { return s.connects.Load() })
}

// stalled opens n SSE streams that never read, each with a small receive
// buffer, so the server's queues for them fill.
func stalled(ctx context.Context, addr string, n int) (stop func(), err error) {
	var conns []net.Conn
	stop = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			stop()
			return nil, err
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /live/%s HTTP/1.1\r\nHost: %s\r\n\r\n", loadChannel, addr)
	}
	return stop, nil
}

// control drives the server's control endpoints.
type control struct {
	base string
	c    *http.Client
}

func (c *control) stats(gc bool) (serverStats, error) {
	u := c.base + "/stats"
	if gc {
		u += "?gc=1"
	}
	var st serverStats
	resp, err := c.c.Get(u)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// publish has the server publish n messages at rate, indexed from first
// by step.
func (c *control) publish(n int, rate float64, size, first, step int) error {
	q := url.Values{}
	q.Set("n", fmt.Sprint(n))
	q.Set("rate", fmt.Sprint(rate))
	q.Set("size", fmt.Sprint(size))
	q.Set("first", fmt.Sprint(first))
	q.Set("step", fmt.Sprint(step))
	return c.post("/publish?" + q.Encode())
}

func (c *control) drop() error { return c.post("/drop") }

// getJSON reads a control endpoint's JSON answer into v.
func (c *control) getJSON(path string, v any) error {
	resp, err := c.c.Get(c.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (c *control) post(path string) error {
	resp, err := c.c.Post(c.base+path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", path, resp.Status, b)
	}
	return nil
}

// startServer runs "liveload serve" as a child process and reads its
// addresses.
func startServer(p params, node int) (*exec.Cmd, string, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(self, "serve", "-presence", p.presence, "-server", p.server, "-authorize="+strconv.FormatBool(p.authorize), "-metrics="+strconv.FormatBool(p.metrics),
		"-broker", p.broker, "-broker-url", p.brokerURL, "-node", strconv.Itoa(node),
		"-channels", p.channels, "-max-subscriptions", strconv.Itoa(p.maxSubs))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", err
	}
	br := bufio.NewReader(out)
	var data, ctl string
	for data == "" || ctl == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, "", "", fmt.Errorf("server: %w", err)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "data "); ok {
			data = v
		} else if v, ok := strings.CutPrefix(strings.TrimSpace(line), "control "); ok {
			ctl = v
		}
	}
	go io.Copy(io.Discard, br)
	return cmd, data, ctl, nil
}

// machine describes where the figures come from.
func machine() string {
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s %s/%s", cpu, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// comparePeers runs live over SSE and over WebSocket, then each peer
// library, with the same phases and the same generator, and prints live's
// figures over the best peer's: below 1 is better for live everywhere.
func comparePeers(p params) error {
	p.storm, p.slow, p.jsonOut = false, 0, ""
	runs := []struct{ server, transport string }{{"live", "sse"}, {"live", "ws"}}
	for _, name := range []string{"r3labs", "gosse", "melody", "centrifuge"} {
		runs = append(runs, struct{ server, transport string }{name, peerRoutes[name].transport})
	}
	var results []*result
	for _, r := range runs {
		q := p
		q.server, q.transport = r.server, r.transport
		fmt.Printf("\n== %s (%s)\n", r.server, r.transport)
		res, err := runOne(q)
		if err != nil {
			fmt.Printf("%s: %v\n", r.server, err)
			continue
		}
		results = append(results, res)
	}
	fmt.Printf("\n%-14s %-5s %12s %12s %10s %10s %8s\n", "server", "", "idle KiB", "burst µs", "p99 ms", "lost", "")
	for _, r := range results {
		fmt.Printf("%-14s %-5s %12.1f %12.2f %10.1f %10d\n", r.Server, r.Transport, r.IdleRSSPerConn/1024, r.BurstCPUPerDelivery/1000, r.P99ms, r.BurstLost+r.LatencyLost)
	}
	best := func(f func(*result) float64) (float64, string) {
		v, who := 0.0, ""
		for _, r := range results {
			if r.Server == "live" {
				continue
			}
			if x := f(r); who == "" || x < v {
				v, who = x, r.Server
			}
		}
		return v, who
	}
	fmt.Printf("\nlive ÷ best peer (below 1: live is ahead)\n")
	for _, m := range []struct {
		name string
		f    func(*result) float64
	}{
		{"idle memory per connection", func(r *result) float64 { return r.IdleRSSPerConn }},
		{"server CPU per delivery, burst", func(r *result) float64 { return r.BurstCPUPerDelivery }},
		{fmt.Sprintf("p99 at %g msg/s × %d", p.rate, p.n), func(r *result) float64 { return r.P99ms }},
	} {
		v, who := best(m.f)
		if who == "" {
			continue
		}
		for _, r := range results {
			if r.Server == "live" {
				fmt.Printf("  %-34s live %-3s %.2f (best peer: %s)\n", m.name, r.Transport, m.f(r)/v, who)
			}
		}
	}
	return nil
}
