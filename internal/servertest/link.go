package servertest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// A Link carries TCP connections between a broker and its server, so that
// a test can cut the network between them and heal it again while the
// server goes on running (and other tests go on using it).
type Link struct {
	// Addr is the host:port brokers dial instead of the server's.
	Addr string

	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accepting goroutine and the copying ones

	mu    sync.Mutex // guards cut and conns
	cut   bool
	conns map[net.Conn]struct{}
}

// NewLink listens on a free port of 127.0.0.1 and forwards every
// connection to target. It ends with t, closing what it carries.
func NewLink(t testing.TB, target string) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Link{Addr: ln.Addr().String(), target: target, ln: ln, conns: make(map[net.Conn]struct{})}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(func() {
		ln.Close()
		l.Cut()
		l.wg.Wait()
	})
	return l
}

// Cut closes every connection the link carries, and closes new ones as
// they arrive, until Heal: to both ends the network is gone.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
}

// Heal lets connections through again.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go l.carry(c)
	}
}

// carry forwards c to the target and back until either side ends or the
// link is cut.
func (l *Link) carry(c net.Conn) {
	defer l.wg.Done()
	s, err := net.Dial("tcp", l.target)
	if err != nil {
		c.Close()
		return
	}
	if !l.track(c, s) {
		c.Close()
		s.Close()
		return
	}
	var both sync.WaitGroup
	both.Add(2)
	pipe := func(dst, src net.Conn) {
		defer both.Done()
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	go pipe(s, c)
	go pipe(c, s)
	both.Wait()
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, s)
	l.mu.Unlock()
}

// track records both ends of a connection, unless the link is cut.
func (l *Link) track(c, s net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return false
	}
	l.conns[c] = struct{}{}
	l.conns[s] = struct{}{}
	return true
}
