package main

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/go-live/live"
	natsbroker "github.com/go-live/live/nats"
	pgbroker "github.com/go-live/live/postgres"
	redisbroker "github.com/go-live/live/redis"
)

// brokerFlags name the broker the nodes of a dashboard share. None set
// means the in-memory broker: one process.
type brokerFlags struct {
	redis    string
	nats     string
	postgres string
	prefix   string
}

func (bf *brokerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&bf.redis, "redis", "", "share the dashboard through Redis at this URL (redis://host:port/db)")
	fs.StringVar(&bf.nats, "nats", "", "share the dashboard through NATS JetStream at this URL (nats://host:port)")
	fs.StringVar(&bf.postgres, "postgres", "", "share the dashboard through PostgreSQL at this URL (postgres://user@host:port/db)")
	fs.StringVar(&bf.prefix, "prefix", "", "keep this dashboard apart from others on the same server: the Redis key prefix (default \"live:\"), the NATS stream (default \"live\") or the PostgreSQL schema (default \"live\")")
}

// name says which broker the flags chose, for the logs.
func (bf brokerFlags) name() string {
	switch {
	case bf.redis != "":
		return "redis"
	case bf.nats != "":
		return "nats"
	case bf.postgres != "":
		return "postgres"
	}
	return "in memory"
}

var (
	schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,31}$`)
	streamName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// open opens the chosen broker; a nil broker means in memory. close is
// to be called after the app is closed.
//
// A node that starts rebuilds the board and the feed from their first
// publications, so the shared brokers keep history until its size pushes
// it out, not for a limited time.
func (bf brokerFlags) open() (b live.Broker, close func() error, err error) {
	chosen := 0
	for _, u := range []string{bf.redis, bf.nats, bf.postgres} {
		if u != "" {
			chosen++
		}
	}
	if chosen > 1 {
		return nil, nil, errors.New("choose one of -redis, -nats and -postgres")
	}
	switch {
	case bf.redis != "":
		if strings.ContainsAny(bf.prefix, "{}") {
			return nil, nil, fmt.Errorf("-prefix %q: Redis key prefixes may not contain braces", bf.prefix)
		}
		rb, err := redisbroker.Open(bf.redis, &redisbroker.Options{Prefix: bf.prefix, HistoryAge: -1})
		if err != nil {
			return nil, nil, err
		}
		return rb, rb.Close, nil
	case bf.nats != "":
		if bf.prefix != "" && !streamName.MatchString(bf.prefix) {
			return nil, nil, fmt.Errorf("-prefix %q: a NATS stream name is 1 to 64 characters of [A-Za-z0-9_-]", bf.prefix)
		}
		nb, err := natsbroker.Open(bf.nats, &natsbroker.Options{Prefix: bf.prefix, HistoryAge: -1})
		if err != nil {
			return nil, nil, err
		}
		return nb, nb.Close, nil
	case bf.postgres != "":
		if bf.prefix != "" && !schemaName.MatchString(bf.prefix) {
			return nil, nil, fmt.Errorf("-prefix %q: a PostgreSQL schema is 1 to 32 characters of [a-z0-9_], not starting with a digit", bf.prefix)
		}
		pb, err := pgbroker.Open(bf.postgres, &pgbroker.Options{Schema: bf.prefix, HistoryAge: -1})
		if err != nil {
			return nil, nil, err
		}
		return pb, pb.Close, nil
	}
	if bf.prefix != "" {
		return nil, nil, errors.New("-prefix needs a shared broker: -redis, -nats or -postgres")
	}
	return nil, func() error { return nil }, nil
}
