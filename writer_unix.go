//go:build unix && !live_blocking

package live

import "syscall"

// nonblocking reports whether writers write sockets without waiting.
const nonblocking = true

// writeNonblocking writes b to the non-blocking socket fd until it is
// written or the socket is full.
func writeNonblocking(fd uintptr, b []byte) (n int, err error) {
	for n < len(b) {
		m, err := syscall.Write(int(fd), b[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return n, nil
		case err != nil:
			return n, err
		case m == 0:
			return n, nil
		}
	}
	return n, nil
}

// readable reports whether the socket fd has data, or an end, to read.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
	return err != syscall.EAGAIN
}
