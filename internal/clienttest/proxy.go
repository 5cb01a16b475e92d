package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// proxy stands between the browser and the server as the networks users
// sit behind do, by mode (POST /test/proxy?mode=a,b):
//
//	refuse-upgrade   WebSocket handshakes get 502
//	buffer           responses are held until they end (proxy_buffering on)
//	drop=<duration>  every connection through it is closed that often
//	offline          every connection is closed, and so is every new one,
//	                 but for the page and live.js (so that it reloads)
//
// No mode passes everything through as it comes.
type proxy struct {
	rp *httputil.ReverseProxy

	mu            sync.Mutex // guards the fields below
	refuseUpgrade bool
	buffer        bool
	offline       bool
	conns         map[net.Conn]struct{}
	stopDrops     chan struct{} // closed to end the dropping goroutine; nil when none runs
}

func newProxy(target string) *proxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // pass streams through as they come
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		w.WriteHeader(http.StatusBadGateway) // the server went away, or the client did
	}
	return &proxy{rp: rp, conns: make(map[net.Conn]struct{})}
}

// track is the proxy server's ConnState: it keeps every client
// connection, hijacked ones (WebSockets) too, for drops.
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
	p.mu.Lock()
	refuse, buffer, offline := p.refuseUpgrade, p.buffer, p.offline
	p.mu.Unlock()
	upgrade := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	page := r.Method == http.MethodGet && (r.URL.Path == "/" || r.URL.Path == "/live.js")
	switch {
	case offline && !page:
		// No answer at all: the browser sees a network error.
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	case upgrade && refuse:
		http.Error(w, "this proxy does not pass upgrades", http.StatusBadGateway)
	case buffer && !upgrade:
		bw := &heldResponse{header: make(http.Header)}
		p.rp.ServeHTTP(bw, r)
		for k, v := range bw.header {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		if bw.status == 0 {
			bw.status = http.StatusOK
		}
		w.WriteHeader(bw.status)
		w.Write(bw.body.Bytes())
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// setMode sets the proxy's modes from a comma-separated list.
func (p *proxy) setMode(w http.ResponseWriter, r *http.Request) {
	refuse, buffer, offline, every := false, false, false, time.Duration(0)
	for m := range strings.SplitSeq(r.URL.Query().Get("mode"), ",") {
		switch {
		case m == "":
		case m == "refuse-upgrade":
			refuse = true
		case m == "buffer":
			buffer = true
		case m == "offline":
			offline = true
		case strings.HasPrefix(m, "drop="):
			d, err := time.ParseDuration(m[5:])
			if err != nil || d <= 0 {
				http.Error(w, "drop= takes a duration", http.StatusBadRequest)
				return
			}
			every = d
		default:
			http.Error(w, "unknown mode "+m, http.StatusBadRequest)
			return
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuseUpgrade, p.buffer, p.offline = refuse, buffer, offline
	if offline {
		for c := range p.conns {
			c.Close()
			delete(p.conns, c)
		}
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

// dropEvery closes every connection through the proxy every d, until stop
// is closed.
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
		for c := range p.conns {
			c.Close()
			delete(p.conns, c)
		}
		p.mu.Unlock()
	}
}

// heldResponse keeps a response until its handler returns.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *heldResponse) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(b)
}

// Flush holds on: the point of this proxy.
func (h *heldResponse) Flush() {}
