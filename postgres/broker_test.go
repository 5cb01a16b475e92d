package pgbroker_test

import (
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/brokertest"
	pgbroker "github.com/go-live/live/postgres"
)

func TestConformance(t *testing.T) {
	url := pgURL(t)
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) live.Broker {
			pool := newPool(t, url)
			return pgbroker.New(pool, &pgbroker.Options{HistorySize: 64, Schema: testSchema(t, pool), Logger: testLogger(t)})
		},
		HistorySize: 64,
	})
}
