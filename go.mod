module github.com/go-live/live

go 1.26.0

require (
	github.com/coder/websocket v1.8.15
	golang.org/x/sync v0.25.0
)

require github.com/google/go-cmp v0.7.0
