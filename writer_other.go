//go:build !unix

package live

import "errors"

// writeNonblocking is not available here; writers fall back to blocking
// writes on a goroutine of the connection's own.
func writeNonblocking(fd uintptr, b []byte) (int, error) {
	return 0, errors.New("live: no non-blocking writes on this platform")
}

func readable(fd uintptr) bool { return true }
