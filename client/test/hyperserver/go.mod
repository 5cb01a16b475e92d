module github.com/go-live/live/client/test/hyperserver

go 1.26.0

replace (
	github.com/go-live/live => ../../..
	github.com/go-live/live/redis => ../../../redis
)

require (
	github.com/go-live/live v0.0.0-00010101000000-000000000000
	github.com/go-live/live/redis v0.0.0-00010101000000-000000000000
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/coder/websocket v1.8.15 // indirect
	github.com/redis/go-redis/v9 v9.23.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
