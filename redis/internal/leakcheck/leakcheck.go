// Package leakcheck fails a test binary whose tests leave goroutines
// running. Call it from TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
//
// It copies github.com/go-live/live/internal/leakcheck, which this module
// cannot import.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then waits up to five seconds for goroutines the
// tests started to end, and fails the binary if some are still running.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := wait(5 * time.Second); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leakcheck: %d goroutines still running after the tests:\n\n%s\n",
				len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// wait polls until only expected goroutines remain or d passes. Goroutines
// end asynchronously after a test returns (closed connections, stopped
// timers), so one look is not enough.
func wait(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		leaked := Goroutines()
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Goroutines returns the stacks of the running goroutines that are not
// part of the runtime or the testing framework.
func Goroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if expected(g) {
			continue
		}
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// expected reports whether a goroutine belongs to the runtime, the test
// framework or http.Client's idle connection pool rather than to a test.
func expected(stack string) bool {
	for _, s := range []string{
		"leakcheck.Goroutines",
		"testing.(*M).",
		"testing.runTests",
		"os/signal.signal_recv",
		"net/http.(*persistConn).readLoop",
		"net/http.(*persistConn).writeLoop",
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
