package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-live/live"

	liveprom "github.com/go-live/live/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The channel every subscriber of the load test reads.
const loadChannel = "load"

// serve runs the server side: a Hub on the data address, and the control
// endpoints the load side drives it with on a second address, so that
// dropping every client connection never drops the control connection.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "address for the clients")
	control := fs.String("control", "127.0.0.1:0", "address for the control endpoints")
	brokerKind := fs.String("broker", "memory", "the broker: memory, redis, nats or postgres")
	brokerAt := fs.String("broker-url", "", "the broker's URL (default: its LIVE_*_URL variable, or a local server)")
	node := fs.Int("node", 0, "this server's index among the nodes, carried in its publications")
	presence := fs.String("presence", "", "give the load channel presence: members or count; subscribers name their user with ?u=")
	authorize := fs.Bool("authorize", false, "give the hub an Authorize of the application's, which allows everything")
	server := fs.String("server", "live", "the server under load: live, or a peer (r3labs, gosse, melody, centrifuge)")
	metrics := fs.Bool("metrics", false, "observe the hub with the Prometheus collector (module github.com/go-live/live/prometheus), served at the control address's /metrics")
	channels := fs.String("channels", "", "the many-channel scenario's: a peer serves a channel per subscriber (own), and a shared one (own+shared)")
	maxSubs := fs.Int("max-subscriptions", 0, "the hub's Options.MaxSubscriptions, the channels one connection may follow (default: live's)")
	fs.Parse(args)

	data, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	ctl, err := net.Listen("tcp", *control)
	if err != nil {
		return err
	}
	broker, err := openBroker(*brokerKind, *brokerAt)
	if err != nil {
		return err
	}
	defer broker.(interface{ Close() error }).Close()
	opts := &live.Options{
		Broker:           broker,
		MaxConnsPerIP:    -1,
		MaxSubscriptions: *maxSubs,
	}
	if *authorize {
		opts.Authorize = func(*http.Request, string, live.Op) error { return nil }
	}
	if *presence != "" {
		mode := live.PresenceCount
		if *presence == "members" {
			mode = live.PresenceMembers
		}
		opts.Identify = func(r *http.Request) (live.Identity, error) {
			u := r.URL.Query().Get("u")
			return live.Identity{User: u, Info: map[string]string{"name": "user " + u}}, nil
		}
		opts.Presence = func(channel string) live.PresenceMode {
			if channel == loadChannel {
				return mode
			}
			return live.PresenceOff
		}
	}
	var t target
	var reg *prometheus.Registry
	var m *liveprom.Collector
	if *metrics {
		m = liveprom.New(nil)
		opts.Observe = m.Hooks()
		reg = prometheus.NewRegistry()
		reg.MustRegister(m)
	}
	if *server == "live" {
		hub := live.NewHub(opts)
		if m != nil {
			m.Watch(hub)
		}
		mux := http.NewServeMux()
		mux.Handle("/live/", hub)
		mux.Handle("/ws", hub.WebSocketHandler())
		t = &hubTarget{hub: hub, mux: mux}
	} else if t, err = newPeer(*server, *channels != ""); err != nil {
		return err
	}
	s := &loadServer{t: t, conns: make(map[net.Conn]struct{}), node: *node}
	dataSrv := &http.Server{Handler: t.handler(), ConnState: s.track, ErrorLog: log.New(io.Discard, "", 0)}

	cmux := http.NewServeMux()
	cmux.HandleFunc("GET /stats", s.stats)
	cmux.HandleFunc("POST /publish", s.publish)
	cmux.HandleFunc("POST /publishmany", s.publishMany)
	cmux.HandleFunc("POST /drop", s.drop)
	if reg != nil {
		cmux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	cmux.HandleFunc("POST /mark", s.setMark)
	cmux.HandleFunc("GET /arrivals", s.getArrivals)
	if h, ok := t.(*hubTarget); ok {
		cmux.HandleFunc("POST /drain", h.leave) // ?ms=<window>: Hub.Drain, then Close
		cmux.HandleFunc("POST /close", h.leave) // Hub.Close at once
	}
	cmux.HandleFunc("GET /debug/pprof/", pprof.Index)
	cmux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	cmux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	ctlSrv := &http.Server{Handler: cmux}

	// The load side reads these two lines to find the server.
	fmt.Printf("data %s\ncontrol %s\n", data.Addr(), ctl.Addr())

	errc := make(chan error, 2)
	go func() { errc <- dataSrv.Serve(data) }()
	go func() { errc <- ctlSrv.Serve(ctl) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case err = <-errc:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.close(ctx)
	s.closeAll()
	dataSrv.Close()
	ctlSrv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

type loadServer struct {
	t    target
	node int // carried in each publication

	mu    sync.Mutex
	conns map[net.Conn]struct{} // every client connection, also hijacked ones

	// Connections accepted per 100 ms from mark (unix ns), for the drain
	// scenario's count of arrivals.
	mark     atomic.Int64
	arrivals [6000]atomic.Int64

	// The many-channel scenario's publications (many.go): the index of
	// the next one on each own channel.
	manyMu sync.Mutex // guards seqs, and keeps one /publishmany at a time
	seqs   []int64
}

func (s *loadServer) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns[c] = struct{}{}
		if m := s.mark.Load(); m != 0 {
			if k := (time.Now().UnixNano() - m) / int64(100*time.Millisecond); k >= 0 && k < int64(len(s.arrivals)) {
				s.arrivals[k].Add(1)
			}
		}
	case http.StateClosed:
		delete(s.conns, c)
	}
}

// closeAll closes every client connection at once: the reconnect storm.
func (s *loadServer) closeAll() int {
	s.mu.Lock()
	conns := s.conns
	s.conns = make(map[net.Conn]struct{})
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	return len(conns)
}

// setMark starts counting accepted connections per 100 ms from ?at= (unix ns).
func (s *loadServer) setMark(w http.ResponseWriter, r *http.Request) {
	at, _ := strconv.ParseInt(r.URL.Query().Get("at"), 10, 64)
	for i := range s.arrivals {
		s.arrivals[i].Store(0)
	}
	s.mark.Store(at)
	writeJSON(w, map[string]int64{"mark": at})
}

// getArrivals reports the connections accepted in each 100 ms since the mark.
func (s *loadServer) getArrivals(w http.ResponseWriter, r *http.Request) {
	out := make([]int64, len(s.arrivals))
	last := 0
	for i := range s.arrivals {
		if out[i] = s.arrivals[i].Load(); out[i] > 0 {
			last = i + 1
		}
	}
	writeJSON(w, out[:last])
}

func (s *loadServer) drop(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]int{"dropped": s.closeAll()})
}

// serverStats is what GET /stats reports. With ?gc=1 the heap is
// collected and returned to the system first, so idle figures compare.
type serverStats struct {
	Goroutines    int   `json:"goroutines"`
	HeapInuse     int64 `json:"heapInuse"`
	StackInuse    int64 `json:"stackInuse"`
	RSS           int64 `json:"rss"`
	CPUNanos      int64 `json:"cpuNanos"`
	Connections   int64 `json:"connections"`
	Subscriptions int64 `json:"subscriptions"`
	Channels      int64 `json:"channels"`
	Delivered     int64 `json:"delivered"`
	Writes        int64 `json:"writes"`
	Published     int64 `json:"published"`
	Resets        int64 `json:"resets"`
	SlowClients   int64 `json:"slowClients"`
}

func (s *loadServer) stats(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("gc") {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	tc := s.t.counts()
	writeJSON(w, serverStats{
		Goroutines:    runtime.NumGoroutine(),
		HeapInuse:     int64(ms.HeapInuse),
		StackInuse:    int64(ms.StackInuse),
		RSS:           rss(),
		CPUNanos:      cpuNanos(),
		Subscriptions: tc.subscriptions,
		Channels:      tc.channels,
		Delivered:     tc.delivered,
		Writes:        tc.writes,
		Published:     tc.published,
		Resets:        tc.resets,
		SlowClients:   tc.slow,
	})
}

// publish publishes n messages on the load channel, rate per second
// (0: as fast as possible), each carrying its publication time and index
// so that the load side measures latency and checks for loss.
func (s *loadServer) publish(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	rate, _ := strconv.ParseFloat(q.Get("rate"), 64)
	size, _ := strconv.Atoi(q.Get("size"))
	first, _ := strconv.Atoi(q.Get("first"))
	step, _ := strconv.Atoi(q.Get("step"))
	step = max(step, 1)
	pad := padding(size)
	start := time.Now()
	var buf []byte
	for k := range n {
		if rate > 0 {
			due := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		buf = s.payload(buf[:0], int64(first+k*step), pad)
		if err := s.t.publish(buf); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	writeJSON(w, map[string]any{"published": n, "seconds": time.Since(start).Seconds()})
}

// payload appends a publication to buf: its time, its index i, the node
// that published it, and pad.
func (s *loadServer) payload(buf []byte, i int64, pad []byte) []byte {
	buf = append(buf, `{"t":`...)
	buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
	buf = append(buf, `,"i":`...)
	buf = strconv.AppendInt(buf, i, 10)
	buf = append(buf, `,"n":`...)
	buf = strconv.AppendInt(buf, int64(s.node), 10)
	buf = append(buf, `,"p":"`...)
	buf = append(buf, pad...)
	return append(buf, `"}`...)
}

// padding is what fills a publication up to size bytes.
func padding(size int) []byte {
	pad := make([]byte, max(size-40, 0))
	for i := range pad {
		pad[i] = 'x'
	}
	return pad
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// rss is the process's resident set in bytes, from /proc (Linux).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	fmt.Sscan(string(b), &size, &resident)
	return resident * int64(os.Getpagesize())
}
