// Command hyperserver is the server of the hypermedia browser tests
// (client/test/hypermedia.test.js): pages for htmx 2, htmx 4 and Turbo
// that stream a channel's one-channel SSE stream through package
// livehtml, with the clients' scripts served from client/node_modules,
// and a proxy in front of it that drops or cuts connections.
//
//	GET  /page/{client}?channel=&user=  a page (client: htmx2, htmx4, turbo)
//	GET  /rows?channel=                 the rows published so far, as <li>s (a refetch)
//	GET  /js/{name}                     a client script from node_modules
//	GET  /live/{channel}                the hub
//	POST /publish?channel=&kind=&n=     publishes the channel's next n rows, as kind
//	POST /disconnect?user=              Hub.Disconnect
//	POST /proxy?mode=                   drop=<duration>, offline, fail-once, or "" (pass through)
//	GET  /stats?channel=                {"streams":…,"refetches":…,"pages":…,"failed":…}
//
// It prints its URL, then "proxy <url>", on stdout, and stops when stdin
// closes. -redis shares the hub through Redis; -history sets how many
// publications a channel keeps.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/livehtml"
	redisbroker "github.com/go-live/live/redis"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	modules := flag.String("modules", "../../node_modules", "the client's node_modules")
	redisURL := flag.String("redis", "", "share the hub through Redis at this URL")
	prefix := flag.String("prefix", "", "Redis key prefix")
	history := flag.Int("history", 1024, "publications each channel keeps")
	flag.Parse()

	var broker live.Broker
	if *redisURL != "" {
		rb, err := redisbroker.Open(*redisURL, &redisbroker.Options{Prefix: *prefix, HistorySize: *history, HistoryAge: -1})
		if err != nil {
			log.Fatal(err)
		}
		defer rb.Close()
		broker = rb
	} else {
		broker = live.NewMemoryBroker(&live.MemoryOptions{HistorySize: *history, HistoryAge: -1})
	}
	s := &server{modules: *modules, rows: map[string][]int{}, stats: map[string]*stats{}}
	refresh := livehtml.MustText(livehtml.TurboStream{Action: "refresh"})
	s.hub = live.NewHub(&live.Options{
		Broker: broker,
		Identify: func(r *http.Request) (live.Identity, error) {
			if c, err := r.Cookie("user"); err == nil {
				return live.Identity{User: c.Value}, nil
			}
			return live.Identity{}, nil
		},
		ResetText: func(channel string) live.Text {
			if strings.HasPrefix(channel, "turbo") {
				return refresh
			}
			return live.Text{}
		},
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	p := newProxy("http://" + ln.Addr().String())
	p.failed = func(channel string) { s.stat(channel, func(st *stats) { st.Failed++ }) }
	s.proxy = p
	srv := &http.Server{Handler: s.routes()}
	go srv.Serve(ln)
	psrv := &http.Server{Handler: p, ConnState: p.track}
	go psrv.Serve(pln)
	fmt.Printf("http://%s\nproxy http://%s\n", ln.Addr(), pln.Addr())

	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s.hub.Close(ctx)
	srv.Close()
	psrv.Close()
}

type stats struct {
	Streams   int `json:"streams"`
	Refetches int `json:"refetches"`
	Pages     int `json:"pages"`
	Failed    int `json:"failed"` // stream requests the proxy answered 502
}

type server struct {
	hub     *live.Hub
	proxy   *proxy
	modules string

	mu    sync.Mutex
	rows  map[string][]int // the rows published by this process, by channel
	stats map[string]*stats
}

func (s *server) stat(channel string, f func(*stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats[channel]
	if st == nil {
		st = &stats{}
		s.stats[channel] = st
	}
	f(st)
}

var scripts = map[string]string{
	"htmx2.js":  "htmx2/dist/htmx.js",
	"sse.js":    "htmx-ext-sse/dist/sse.js",
	"htmx4.js":  "htmx4/dist/htmx.js",
	"hx-sse.js": "htmx4/dist/ext/hx-sse.js",
	"turbo.js":  "@hotwired/turbo/dist/turbo.es2017-umd.js",
}

var pages = template.Must(template.New("").Parse(`
{{define "rows"}}{{range .}}<li id="r-{{.}}">{{.}}</li>{{end}}{{end}}
{{define "htmx2"}}<!doctype html><html><head><title>htmx 2</title>
<script src="/js/htmx2.js"></script><script src="/js/sse.js"></script></head>
<body hx-headers='{{.Live.Headers}}'>
<div id="feed" hx-ext="sse" sse-connect="/live/{{.Channel}}?{{.Live.Query}}" sse-close="refused">
  <ul id="rows" sse-swap="row" hx-swap="beforeend">{{template "rows" .Rows}}</ul>
  <div hx-get="/rows?channel={{.Channel}}" hx-trigger="sse:reset" hx-target="#rows" hx-swap="innerHTML"></div>
</div>
</body></html>{{end}}
{{define "htmx4"}}<!doctype html><html><head><title>htmx 4</title>
<script src="/js/htmx4.js"></script><script src="/js/hx-sse.js"></script></head>
<body>
<div id="feed" hx-sse:connect="/live/{{.Channel}}?{{.Live.Query}}" hx-sse:close="refused" hx-target="#rows" hx-swap="beforeend"></div>
<ul id="rows">{{template "rows" .Rows}}</ul>
<div hx-get="/rows?channel={{.Channel}}" hx-trigger="reset from:#feed" hx-target="#rows" hx-swap="innerHTML"></div>
</body></html>{{end}}
{{define "turbo"}}<!doctype html><html><head><title>Turbo</title>
<script src="/js/turbo.js"></script></head>
<body>
<turbo-stream-source src="/live/{{.Channel}}?{{.Live.Query}}"></turbo-stream-source>
<ul id="rows">{{template "rows" .Rows}}</ul>
</body></html>{{end}}
`))

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /page/{client}", func(w http.ResponseWriter, r *http.Request) {
		client, channel := r.PathValue("client"), r.URL.Query().Get("channel")
		if pages.Lookup(client) == nil || client == "rows" || channel == "" {
			http.Error(w, "no such page", http.StatusNotFound)
			return
		}
		if u := r.URL.Query().Get("user"); u != "" {
			http.SetCookie(w, &http.Cookie{Name: "user", Value: u, Path: "/"})
		}
		p, err := livehtml.NewPage(r.Context(), s.hub, channel)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.stat(channel, func(st *stats) { st.Pages++ })
		s.mu.Lock()
		rows := append([]int(nil), s.rows[channel]...)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		pages.ExecuteTemplate(w, client, struct {
			Live    livehtml.Page
			Channel string
			Rows    []int
		}{p, channel, rows})
	})
	mux.HandleFunc("GET /rows", func(w http.ResponseWriter, r *http.Request) {
		channel := r.URL.Query().Get("channel")
		s.stat(channel, func(st *stats) { st.Refetches++ })
		s.mu.Lock()
		rows := append([]int(nil), s.rows[channel]...)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		pages.ExecuteTemplate(w, "rows", rows)
	})
	mux.HandleFunc("GET /js/{name}", func(w http.ResponseWriter, r *http.Request) {
		path, ok := scripts[r.PathValue("name")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(w, r, filepath.Join(s.modules, path))
	})
	mux.Handle("/live/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			s.stat(strings.TrimPrefix(r.URL.Path, "/live/"), func(st *stats) { st.Streams++ })
		}
		s.hub.ServeHTTP(w, r)
	}))
	mux.HandleFunc("POST /publish", s.publish)
	mux.HandleFunc("POST /disconnect", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.hub.Disconnect(ctx, r.URL.Query().Get("user")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("POST /proxy", s.proxy.setMode)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		var out stats
		s.stat(r.URL.Query().Get("channel"), func(st *stats) { out = *st })
		json.NewEncoder(w).Encode(out)
	})
	return mux
}

// publish publishes the channel's next n rows, one publication each, as
// the kind of page wants them: htmx2 (a "row" event), htmx4 (an unnamed
// fragment) or turbo (a Turbo Stream append).
func (s *server) publish(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	channel, kind := q.Get("channel"), q.Get("kind")
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 1 || channel == "" {
		http.Error(w, "publish needs channel and n", http.StatusBadRequest)
		return
	}
	for range n {
		s.mu.Lock()
		rows := s.rows[channel]
		row := len(rows) + 1
		s.rows[channel] = append(rows, row)
		s.mu.Unlock()
		li := livehtml.HTML(fmt.Sprintf(`<li id="r-%d">%d</li>`, row, row))
		var m livehtml.Message
		switch kind {
		case "htmx2":
			m = livehtml.Fragment{Event: "row", Content: li}
		case "htmx4":
			m = livehtml.Fragment{Content: li}
		case "turbo":
			m = livehtml.TurboStream{Action: "append", Target: "rows", Content: li}
		default:
			http.Error(w, "unknown kind", http.StatusBadRequest)
			return
		}
		if _, err := livehtml.Publish(r.Context(), s.hub, channel, m); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
}

// proxy stands between the browser and the server (POST /proxy?mode=):
// drop=<duration> closes every connection through it that often; offline
// closes every connection but page loads and scripts, and every new one;
// fail-once closes every connection and answers the next stream request
// 502, as a load balancer does while the node behind it is gone.
type proxy struct {
	rp     *httputil.ReverseProxy
	failed func(channel string) // counts a stream request answered 502

	mu        sync.Mutex
	offline   bool
	failNext  bool // answer the next stream request 502
	conns     map[net.Conn]struct{}
	stopDrops chan struct{}
}

func newProxy(target string) *proxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) }
	return &proxy{rp: rp, conns: make(map[net.Conn]struct{})}
}

func (p *proxy) track(c net.Conn, st http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch st {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed:
		delete(p.conns, c)
	}
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	stream := strings.HasPrefix(r.URL.Path, "/live/")
	p.mu.Lock()
	offline, fail := p.offline, p.failNext && stream
	if fail {
		p.failNext = false
	}
	p.mu.Unlock()
	if fail {
		p.failed(strings.TrimPrefix(r.URL.Path, "/live/"))
		http.Error(w, "the node behind this proxy is gone", http.StatusBadGateway)
		return
	}
	if offline && stream {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	p.rp.ServeHTTP(w, r)
}

func (p *proxy) setMode(w http.ResponseWriter, r *http.Request) {
	mode := r.URL.Query().Get("mode")
	var every time.Duration
	offline, failNext := mode == "offline", mode == "fail-once"
	if d, ok := strings.CutPrefix(mode, "drop="); ok {
		var err error
		if every, err = time.ParseDuration(d); err != nil || every <= 0 {
			http.Error(w, "drop= takes a duration", http.StatusBadRequest)
			return
		}
	} else if mode != "" && !offline && !failNext {
		http.Error(w, "unknown mode", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offline, p.failNext = offline, failNext
	if offline || failNext {
		p.closeAllLocked()
	}
	if p.stopDrops != nil {
		close(p.stopDrops)
		p.stopDrops = nil
	}
	if every > 0 {
		stop := make(chan struct{})
		p.stopDrops = stop
		go p.dropEvery(every, stop)
	}
}

func (p *proxy) closeAllLocked() {
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) dropEvery(d time.Duration, stop chan struct{}) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		p.closeAllLocked()
		p.mu.Unlock()
	}
}
