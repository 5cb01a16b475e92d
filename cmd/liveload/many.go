package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// The many-channel scenario (-channels own or own+shared) is the shape of
// an application where every user has a channel of their own
// (notifications, a document, a room): each of -n subscribers follows its
// own channel, and with own+shared also one channel they all share, on
// the same connection (live: a multiplexed SSE stream or a WebSocket with
// two subscriptions; Centrifuge and go-sse likewise). Once all are in, it
// reports the idle cost per connection; then -publishers publish -rate
// publications per second in all for -duration, each on an own channel
// drawn at random, so each reaches one subscriber, and it reports the
// latency, the server's CPU per delivery (the publishing included, since
// every publication makes one delivery), losses and duplicates. The
// shared channel stays silent: what it costs here is a second
// subscription per connection.
//
// The follow mode (-follow K) measures instead what one server pays for
// each channel it follows on a broker: K channels, each with one
// subscriber, so the hub holds K channels and as many broker
// subscriptions. The subscriptions come in multiplexed SSE streams of
// -follow-per-stream channels each, from the load side's process, so
// 100 000 channels need 100 connections rather than 100 000 descriptors;
// the streams' own cost, counted in the figures, is a connection's per
// stream, small beside a thousand channels'.

// sharedChannel is the channel every subscriber also follows with
// -channels own+shared.
const sharedChannel = "shared"

// ownChannel is the name of subscriber k's own channel.
func ownChannel(k int) string { return "u" + strconv.Itoa(k) }

// manySSEPath is where an SSE subscriber of the many-channel scenario
// connects.
func (s *subscriber) manySSEPath() string {
	switch s.l.peer {
	case "r3labs":
		return "/events?stream=" + s.own
	case "gosse":
		if s.l.shared {
			return "/events?topic=" + s.own + "&topic=" + sharedChannel
		}
		return "/events?topic=" + s.own
	}
	if s.l.shared {
		return "/live/?channels=" + s.own + "," + sharedChannel
	}
	return "/live/" + s.own
}

// manyResult is what one run of the many-channel scenario measured;
// -json writes it.
type manyResult struct {
	Machine   string `json:"machine"`
	Server    string `json:"server"`
	Transport string `json:"transport"`
	Channels  string `json:"channels"`
	N         int    `json:"subscribers"`
	Broker    string `json:"broker"`

	ConnectSeconds    float64 `json:"connectSeconds"`
	IdleRSSPerConn    float64 `json:"idleRSSBytesPerConn"`
	IdleHeapPerConn   float64 `json:"idleHeapBytesPerConn"`
	IdleHeapStack     float64 `json:"idleHeapStackBytesPerConn"`
	GoroutinesPerConn float64 `json:"goroutinesPerConn"`

	Rate           float64 `json:"publicationsPerSecond"`
	Publishers     int     `json:"publishers"`
	Published      int64   `json:"published"`
	PublishSeconds float64 `json:"publishSeconds"`
	Delivered      int64   `json:"delivered"`
	CPUPerDelivery float64 `json:"cpuNanosPerDelivery"`
	P50ms          float64 `json:"latencyP50ms"`
	P99ms          float64 `json:"latencyP99ms"`
	Maxms          float64 `json:"latencyMaxms"`
	Lost           int64   `json:"lost"`
	Dups           int64   `json:"duplicates"`
	Resets         int64   `json:"resets"`
}

// manyServers are the servers the many-channel scenario runs against
// with -peers, in order, each on its transport. Melody has no channels: a
// channel per subscriber there would be a filter over every session for
// each publication, which is not how an application would use it.
var manyServers = []struct{ server, transport string }{
	{"live", "sse"}, {"live", "ws"},
	{"r3labs", peerRoutes["r3labs"].transport},
	{"gosse", peerRoutes["gosse"].transport},
	{"centrifuge", peerRoutes["centrifuge"].transport},
}

// manyRefusal says why a server cannot run the many-channel scenario as
// p asks, or "" when it can.
func manyRefusal(p params) string {
	switch {
	case p.server == "melody":
		return "melody has no channels, only sessions to filter on each publication"
	case p.server == "r3labs" && p.channels == "own+shared":
		return "r3labs serves one stream per request: -channels own only"
	}
	return ""
}

// runMany runs the many-channel scenario against one server.
func runMany(p params) (*manyResult, error) {
	if why := manyRefusal(p); why != "" {
		return nil, errors.New(why)
	}
	addrs, ctl, stop, err := startNodes(p)
	if err != nil {
		return nil, err
	}
	defer stop()
	r := newRunner(p, addrs, ctl)
	l := r.l
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	what := "a channel of its own"
	if p.channels == "own+shared" {
		what += " and one shared channel, on one connection"
	}
	fmt.Printf("liveload: %d %s subscribers, each following %s; %s\n", p.n, strings.ToUpper(p.transport), what, r.res.Machine)
	if err := r.idle(ctx); err != nil {
		return nil, err
	}
	fn := float64(p.n)
	res := &manyResult{Machine: r.res.Machine, Server: p.server, Transport: p.transport, Channels: p.channels, N: p.n, Broker: p.broker,
		ConnectSeconds: r.res.ConnectSeconds, IdleRSSPerConn: r.res.IdleRSSPerConn, IdleHeapStack: r.res.IdleHeapPerConn,
		IdleHeapPerConn: float64(r.quiet.HeapInuse-r.base.HeapInuse) / fn, GoroutinesPerConn: r.res.GoroutinesPerCon,
		Rate: p.rate, Publishers: p.publishers}
	fmt.Printf("%-34s heap %.1f KiB per connection (heap and stacks %.1f KiB, above)\n", "", res.IdleHeapPerConn/1024, res.IdleHeapStack/1024)

	msgs := int(p.rate * p.duration.Seconds())
	l.hist.reset()
	l.received.Store(0)
	dups0, resets0 := l.dups(), l.resets()
	before, err := ctl.stats(false)
	if err != nil {
		return nil, err
	}
	secs, err := ctl[0].publishMany(msgs, p.rate, p.size, p.n, p.publishers)
	if err != nil {
		return nil, err
	}
	unique := func() int64 { return l.received.Load() - (l.dups() - dups0) }
	settle(unique, int64(msgs))
	after, err := ctl.stats(false)
	if err != nil {
		return nil, err
	}
	res.Published, res.PublishSeconds = int64(msgs), secs
	res.Delivered = unique()
	res.Dups, res.Resets = l.dups()-dups0, l.resets()-resets0
	res.Lost = max(res.Published-res.Delivered, 0)
	res.CPUPerDelivery = float64(after.CPUNanos-before.CPUNanos) / float64(max(res.Delivered, 1))
	res.P50ms, res.P99ms, res.Maxms = ms(l.hist.quantile(0.5)), ms(l.hist.quantile(0.99)), ms(time.Duration(l.hist.max.Load()))
	fmt.Printf("%-34s published %d in %.1f s (%.0f/s), %d publishers, each publication for one subscriber\n",
		fmt.Sprintf("publish %g/s on own channels", p.rate), res.Published, secs, float64(msgs)/secs, p.publishers)
	fmt.Printf("%-34s p50 %.1f ms, p99 %.1f ms, max %.1f ms; server CPU %.2f µs per delivery (publishing included); delivered %d; lost %d, duplicates %d, resets %d\n",
		"", res.P50ms, res.P99ms, res.Maxms, res.CPUPerDelivery/1000, res.Delivered, res.Lost, res.Dups, res.Resets)
	cancel()
	if p.jsonOut != "" {
		if err := writeJSONFile(p.jsonOut, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// settle waits until got reaches want, or stops moving for 10 s.
func settle(got func() int64, want int64) {
	last, since := int64(-1), time.Now()
	for {
		n := got()
		if n >= want {
			return
		}
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 10*time.Second {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// compareManyPeers runs the many-channel scenario against live over SSE
// and over WebSocket, then each peer that has channels, and prints live's
// figures over the best peer's.
func compareManyPeers(p params) error {
	jsonOut := p.jsonOut
	p.jsonOut = ""
	var results []*manyResult
	for _, run := range manyServers {
		q := p
		q.server, q.transport = run.server, run.transport
		fmt.Printf("\n== %s (%s)\n", q.server, q.transport)
		if why := manyRefusal(q); why != "" {
			fmt.Printf("%s: not run: %s\n", q.server, why)
			continue
		}
		res, err := runMany(q)
		if err != nil {
			fmt.Printf("%s: %v\n", q.server, err)
			continue
		}
		results = append(results, res)
	}
	fmt.Printf("\n%d subscribers, -channels %s, %g publications/s\n", p.n, p.channels, p.rate)
	fmt.Printf("%-12s %-5s %10s %10s %10s %10s %10s %10s %8s %6s\n", "server", "", "RSS KiB", "heap KiB", "heap+stk", "gor/conn", "CPU µs", "p99 ms", "lost", "dups")
	for _, r := range results {
		fmt.Printf("%-12s %-5s %10.1f %10.1f %10.1f %10.2f %10.2f %10.1f %8d %6d\n", r.Server, r.Transport, r.IdleRSSPerConn/1024,
			r.IdleHeapPerConn/1024, r.IdleHeapStack/1024, r.GoroutinesPerConn, r.CPUPerDelivery/1000, r.P99ms, r.Lost, r.Dups)
	}
	fmt.Printf("\nlive ÷ best peer (below 1: live is ahead)\n")
	for _, m := range []struct {
		name string
		f    func(*manyResult) float64
	}{
		{"idle memory per connection (RSS)", func(r *manyResult) float64 { return r.IdleRSSPerConn }},
		{"idle heap and stacks per connection", func(r *manyResult) float64 { return r.IdleHeapStack }},
		{"server CPU per delivery", func(r *manyResult) float64 { return r.CPUPerDelivery }},
		{fmt.Sprintf("p99 at %g publications/s", p.rate), func(r *manyResult) float64 { return r.P99ms }},
	} {
		v, who := 0.0, ""
		for _, r := range results {
			if x := m.f(r); r.Server != "live" && (who == "" || x < v) {
				v, who = x, r.Server
			}
		}
		if who == "" || v <= 0 {
			continue
		}
		for _, r := range results {
			if r.Server == "live" {
				fmt.Printf("  %-36s live %-3s %.2f (best peer: %s)\n", m.name, r.Transport, m.f(r)/v, who)
			}
		}
	}
	if jsonOut != "" {
		return writeJSONFile(jsonOut, map[string]any{"runs": results})
	}
	return nil
}

// followResult is what the follow mode measured; -json writes it.
type followResult struct {
	Machine  string `json:"machine"`
	Broker   string `json:"broker"`
	Channels int    `json:"channels"`
	Measured string `json:"measured"`
	Streams  int    `json:"streams"`

	FollowSeconds       float64 `json:"followSeconds"`
	HubChannels         int64   `json:"hubChannels"`
	HeapPerChannel      float64 `json:"heapBytesPerChannel"`
	StackPerChannel     float64 `json:"stackBytesPerChannel"`
	HeapStackPerChannel float64 `json:"heapStackBytesPerChannel"`
	RSSPerChannel       float64 `json:"rssBytesPerChannel"`
	GoroutinesPerChan   float64 `json:"goroutinesPerChannel"`

	IdleSeconds      float64 `json:"idleSeconds"`
	IdleCPUPerSecond float64 `json:"idleCPUNanosPerSecond"`

	CheckPublished int64 `json:"checkPublished"`
	CheckDelivered int64 `json:"checkDelivered"`
	StreamErrors   int64 `json:"streamErrors"`
}

// followScenario has one server of live follow k channels on p's broker,
// through multiplexed SSE streams of per channels each, and reports the
// time until all are followed, what each costs idle, and the server's
// CPU while nothing happens. It then publishes once on up to 1000 of the
// channels, at random, to check that they are followed.
func followScenario(p params, k, per int, idle time.Duration) error {
	if p.server != "live" || p.nodes > 1 || p.target != "" {
		return fmt.Errorf("-follow runs one server of live: not with -server, -nodes or -target")
	}
	per = max(1, min(per, k))
	p.maxSubs = per
	addrs, ctl, stop, err := startNodes(p)
	if err != nil {
		return err
	}
	defer stop()
	streams := (k + per - 1) / per
	res := &followResult{Machine: machine(), Broker: p.broker, Channels: k, Streams: streams,
		Measured: fmt.Sprintf("one hub following %d channels on the %s broker, each with one subscription, carried by %d multiplexed SSE streams of up to %d channels from the load process (the streams' connections included, divided over the channels)",
			k, p.broker, streams, per)}
	fmt.Printf("liveload: follow: %s; %s\n", res.Measured, res.Machine)

	base, err := ctl.stats(true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &follower{addr: addrs[0]}
	var g errgroup.Group
	defer g.Wait()
	defer cancel()
	start := time.Now()
	for j := range streams {
		var chs []string
		for c := j * per; c < min((j+1)*per, k); c++ {
			chs = append(chs, ownChannel(c))
		}
		g.Go(func() error { f.stream(ctx, chs); return nil })
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st, err := ctl.stats(false)
		if err != nil {
			return err
		}
		if st.Subscriptions-base.Subscriptions >= int64(k) {
			break
		}
		if n := f.errors.Load(); n > 0 {
			return fmt.Errorf("follow: %d streams failed, %d of %d channels followed: %v", n, st.Subscriptions-base.Subscriptions, k, f.lastErr.Load())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("follow: %d of %d channels followed after 10 minutes", st.Subscriptions-base.Subscriptions, k)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.FollowSeconds = time.Since(start).Seconds()
	time.Sleep(time.Second) // let the setup's garbage become garbage
	st, err := ctl.stats(true)
	if err != nil {
		return err
	}
	if n := st.Subscriptions - base.Subscriptions; n < int64(k) || f.errors.Load() > 0 {
		// A stream's acknowledgements wait in its queue until the head
		// is written: more channels than the queue holds frames
		// (Options.QueueMessages) end it as a slow client.
		return fmt.Errorf("follow: %d of %d channels still followed once all were, %d streams failed (%v); fewer channels per stream?",
			n, k, f.errors.Load(), f.lastErr.Load())
	}
	fk := float64(k)
	res.HubChannels = st.Channels - base.Channels
	res.HeapPerChannel = float64(st.HeapInuse-base.HeapInuse) / fk
	res.StackPerChannel = float64(st.StackInuse-base.StackInuse) / fk
	res.HeapStackPerChannel = res.HeapPerChannel + res.StackPerChannel
	res.RSSPerChannel = float64(st.RSS-base.RSS) / fk
	res.GoroutinesPerChan = float64(st.Goroutines-base.Goroutines) / fk
	fmt.Printf("%-34s %d followed in %.2f s (the hub holds %d channels)\n", fmt.Sprintf("follow %d on %s", k, p.broker), k, res.FollowSeconds, res.HubChannels)
	fmt.Printf("%-34s heap %.0f B, stacks %.0f B, heap+stacks %.0f B, RSS %.0f B, goroutines %.2f per channel\n",
		"", res.HeapPerChannel, res.StackPerChannel, res.HeapStackPerChannel, res.RSSPerChannel, res.GoroutinesPerChan)

	before, err := ctl.stats(false)
	if err != nil {
		return err
	}
	t0 := time.Now()
	time.Sleep(idle)
	after, err := ctl.stats(false)
	if err != nil {
		return err
	}
	res.IdleSeconds = time.Since(t0).Seconds()
	res.IdleCPUPerSecond = float64(after.CPUNanos-before.CPUNanos) / res.IdleSeconds
	fmt.Printf("%-34s server CPU %.2f ms per second (%.2f%% of a core) over %.1f s; the broker's own is not counted\n",
		"idle", res.IdleCPUPerSecond/1e6, res.IdleCPUPerSecond/1e7, res.IdleSeconds)

	check := min(k, 1000)
	if _, err := ctl[0].publishMany(check, 0, p.size, k, min(p.publishers, k)); err != nil {
		return err
	}
	settle(f.received.Load, int64(check))
	res.CheckPublished, res.CheckDelivered, res.StreamErrors = int64(check), f.received.Load(), f.errors.Load()
	fmt.Printf("%-34s %d published on channels drawn at random, %d delivered; %d streams failed\n",
		"check", res.CheckPublished, res.CheckDelivered, res.StreamErrors)
	cancel()
	if p.jsonOut != "" {
		return writeJSONFile(p.jsonOut, res)
	}
	return nil
}

// A follower holds the follow mode's streams and counts what they
// deliver.
type follower struct {
	addr     string
	received atomic.Int64
	errors   atomic.Int64 // streams that ended before ctx, or error frames
	lastErr  atomic.Value
}

// stream subscribes to chs in one multiplexed SSE stream and reads it
// until ctx ends.
func (f *follower) stream(ctx context.Context, chs []string) {
	err := f.read(ctx, chs)
	if ctx.Err() == nil {
		f.errors.Add(1)
		f.lastErr.Store(fmt.Sprint(err))
	}
}

func (f *follower) read(ctx context.Context, chs []string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	q := url.Values{"channels": {strings.Join(chs, ",")}}
	if _, err := io.WriteString(c, "GET /live/?"+q.Encode()+" HTTP/1.1\r\nHost: "+f.addr+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("SSE: %s %s", resp.Status, b)
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		switch string(field(data, `"type":"`)) {
		case "data":
			f.received.Add(1)
		case "error":
			f.errors.Add(1)
			f.lastErr.Store(string(data))
		}
	}
}

// publishMany has the server publish n messages at rate in all (0: as
// fast as it can) on the own channels of channels subscribers, from
// publishers at once; it returns the seconds publishing took.
func (c *control) publishMany(n int, rate float64, size, channels, publishers int) (float64, error) {
	q := url.Values{}
	q.Set("n", fmt.Sprint(n))
	q.Set("rate", fmt.Sprint(rate))
	q.Set("size", fmt.Sprint(size))
	q.Set("channels", fmt.Sprint(channels))
	q.Set("publishers", fmt.Sprint(publishers))
	resp, err := c.c.Post(c.base+"/publishmany?"+q.Encode(), "", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("/publishmany: %s %s", resp.Status, b)
	}
	var out struct{ Seconds float64 }
	return out.Seconds, json.NewDecoder(resp.Body).Decode(&out)
}

// publishMany publishes n messages, rate per second in all (0: as fast
// as it can), each on an own channel drawn at random among those of
// ?channels= subscribers, from ?publishers= goroutines at once. Each
// publisher owns the channels whose number leaves its own remainder when
// divided by their count, so a channel's publications, indexed per
// channel, leave in order, and a subscriber tells a loss or a duplicate
// from its channel's indexes.
func (s *loadServer) publishMany(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	rate, _ := strconv.ParseFloat(q.Get("rate"), 64)
	size, _ := strconv.Atoi(q.Get("size"))
	channels, _ := strconv.Atoi(q.Get("channels"))
	publishers, _ := strconv.Atoi(q.Get("publishers"))
	if channels <= 0 {
		http.Error(w, "channels must be positive", http.StatusBadRequest)
		return
	}
	publishers = max(1, min(publishers, channels))
	s.manyMu.Lock()
	defer s.manyMu.Unlock()
	if len(s.seqs) < channels {
		s.seqs = append(s.seqs, make([]int64, channels-len(s.seqs))...)
	}
	pad := padding(size)
	start := time.Now()
	var g errgroup.Group
	for j := range publishers {
		share := n / publishers
		if j < n%publishers {
			share++
		}
		mine := (channels - j + publishers - 1) / publishers // channels c < channels with c%publishers == j
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(j), uint64(start.UnixNano())))
			prate := rate / float64(publishers)
			var buf []byte
			for m := range share {
				if prate > 0 {
					due := start.Add(time.Duration(float64(m) / prate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				c := j + rng.IntN(mine)*publishers
				buf = s.payload(buf[:0], s.seqs[c], pad)
				s.seqs[c]++
				if err := s.t.publishTo(ownChannel(c), buf); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{"published": n, "seconds": time.Since(start).Seconds()})
}

// writeJSONFile writes v to name as indented JSON.
func writeJSONFile(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}
