package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/go-live/live"
	redisbroker "github.com/go-live/live/redis"
)

// brokerFlags name the broker the nodes of a dashboard share. None set
// means the in-memory broker: one process.
type brokerFlags struct {
	redis  string
	prefix string
}

func (bf *brokerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&bf.redis, "redis", "", "share the dashboard through Redis at this URL (redis://host:port/db)")
	fs.StringVar(&bf.prefix, "prefix", "", "start the broker's keys with this, so several dashboards can share one server (default \"live:\")")
}

// name says which broker the flags chose, for the logs.
func (bf brokerFlags) name() string {
	if bf.redis != "" {
		return "redis"
	}
	return "in memory"
}

// open opens the chosen broker; a nil broker means in memory. close is
// to be called after the app is closed.
func (bf brokerFlags) open() (b live.Broker, close func() error, err error) {
	if bf.redis == "" {
		if bf.prefix != "" {
			return nil, nil, fmt.Errorf("-prefix needs a shared broker (-redis)")
		}
		return nil, func() error { return nil }, nil
	}
	if strings.ContainsAny(bf.prefix, "{}") {
		return nil, nil, fmt.Errorf("-prefix %q: braces are not allowed in Redis key prefixes", bf.prefix)
	}
	rb, err := redisbroker.Open(bf.redis, &redisbroker.Options{
		Prefix: bf.prefix,
		// A node that starts rebuilds the board and the feed from their
		// first publications, so keep history until its size pushes it
		// out rather than for a limited time.
		HistoryAge: -1,
	})
	if err != nil {
		return nil, nil, err
	}
	return rb, rb.Close, nil
}
