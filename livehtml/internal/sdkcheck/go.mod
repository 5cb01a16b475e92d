module github.com/go-live/live/livehtml/internal/sdkcheck

go 1.26.0

require (
	github.com/go-live/live v0.0.0
	github.com/starfederation/datastar-go v1.2.2
)

require (
	github.com/CAFxX/httpcompression v0.0.9 // indirect
	github.com/andybalholm/brotli v1.2.0 // indirect
	github.com/coder/websocket v1.8.15 // indirect
	github.com/klauspost/compress v1.18.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
)

replace github.com/go-live/live => ../../..
