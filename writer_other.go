//go:build !unix || live_blocking

package live

import "errors"

// nonblocking reports whether writers write sockets without waiting. Not
// here: where it is false (systems other than Unix, and Unix builds with
// the live_blocking tag, which the tests use to run this path on Linux)
// each write goes through the connection's net.Conn from a goroutine of
// its own, bounded by Options.WriteTimeout, as on TLS connections.
const nonblocking = false

func writeNonblocking(fd uintptr, b []byte) (int, error) {
	return 0, errors.New("live: no non-blocking writes on this platform")
}

func readable(fd uintptr) bool { return true }
