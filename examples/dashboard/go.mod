module github.com/go-live/live/examples/dashboard

go 1.26.0

replace (
	github.com/go-live/live => ../..
	github.com/go-live/live/nats => ../../nats
	github.com/go-live/live/postgres => ../../postgres
	github.com/go-live/live/prometheus => ../../prometheus
	github.com/go-live/live/redis => ../../redis
)

require (
	github.com/coder/websocket v1.8.15
	github.com/go-live/live v0.0.0-00010101000000-000000000000
	github.com/go-live/live/nats v0.0.0-00010101000000-000000000000
	github.com/go-live/live/postgres v0.0.0-00010101000000-000000000000
	github.com/go-live/live/prometheus v0.0.0-00010101000000-000000000000
	github.com/go-live/live/redis v0.0.0-00010101000000-000000000000
	github.com/jackc/pgx/v5 v5.12.0
	github.com/nats-io/nats.go v1.55.0
	github.com/prometheus/client_golang v1.25.0
	github.com/redis/go-redis/v9 v9.23.0
	golang.org/x/sync v0.25.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
