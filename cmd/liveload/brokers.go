package main

import (
	"fmt"
	"os"
	"time"

	"github.com/go-live/live"
	natsbroker "github.com/go-live/live/nats"
	pgbroker "github.com/go-live/live/postgres"
	redisbroker "github.com/go-live/live/redis"
)

// The brokers -broker names, with the URL each uses when -broker-url is
// empty: the environment's (as the broker modules' tests read it), or a
// local server's.
var brokerURLs = map[string]struct{ env, local string }{
	"redis":    {"LIVE_REDIS_URL", "redis://127.0.0.1:6379/0"},
	"nats":     {"LIVE_NATS_URL", "nats://127.0.0.1:4222"},
	"postgres": {"LIVE_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
}

func brokerURL(kind, url string) string {
	if url != "" {
		return url
	}
	u := brokerURLs[kind]
	if v := os.Getenv(u.env); v != "" {
		return v
	}
	return u.local
}

// loadPrefix names what the harness keeps in a shared broker (keys,
// stream, schema), apart from any application's.
const loadPrefix = "liveload"

// openBroker opens the broker every node of a run shares.
func openBroker(kind, url string) (live.Broker, error) {
	url = brokerURL(kind, url)
	switch kind {
	case "", "memory":
		return live.NewMemoryBroker(&live.MemoryOptions{HistorySize: 100000, HistoryAge: time.Hour}), nil
	case "redis":
		return redisbroker.Open(url, &redisbroker.Options{Prefix: loadPrefix})
	case "nats":
		return natsbroker.Open(url, &natsbroker.Options{Prefix: loadPrefix})
	case "postgres":
		return pgbroker.Open(url, &pgbroker.Options{Schema: loadPrefix})
	}
	return nil, fmt.Errorf("unknown broker %q: memory, redis, nats or postgres", kind)
}
