package pgbroker_test

import (
	"strings"
	"testing"

	pgbroker "github.com/go-live/live/postgres"
)

// TestOpenRefusesBadOptions needs no server: options are checked first.
func TestOpenRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts pgbroker.Options
		name string
	}{
		{pgbroker.Options{HistorySize: -1}, "HistorySize"},
		{pgbroker.Options{Schema: "Bad-Schema"}, "Schema"},
	} {
		b, err := pgbroker.Open("postgres://postgres@127.0.0.1:1/test?sslmode=disable", &tc.opts)
		if err == nil {
			b.Close()
			t.Fatalf("Open accepted %+v", tc.opts)
		}
		if !strings.Contains(err.Error(), tc.name) {
			t.Errorf("error %q does not name %s", err, tc.name)
		}
	}
}
