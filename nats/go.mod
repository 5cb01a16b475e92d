module github.com/go-live/live/nats

go 1.26.0

replace github.com/go-live/live => ../

require (
	github.com/go-live/live v0.0.0-00010101000000-000000000000
	github.com/google/go-cmp v0.7.0
	github.com/nats-io/nats.go v1.55.0
)

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/klauspost/compress v1.20.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
