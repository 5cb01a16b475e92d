//go:build !linux || live_blocking

package live

import "syscall"

// closeWatcher, elsewhere than on Linux, watches nothing: every SSE stream
// and WebSocket keeps a reader goroutine.
type closeWatcher struct{ h *Hub }

func (w *closeWatcher) watch(*conn, syscall.RawConn) bool { return false }

func (w *closeWatcher) park(*conn) bool { return false }

func (w *closeWatcher) unwatch(*conn, syscall.RawConn, int32) {}
