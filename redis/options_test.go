package redisbroker_test

import (
	"strings"
	"testing"

	redisbroker "github.com/go-live/live/redis"
)

// TestOpenRefusesBadOptions needs no server: options are checked first.
func TestOpenRefusesBadOptions(t *testing.T) {
	b, err := redisbroker.Open("redis://127.0.0.1:1/0", &redisbroker.Options{Prefix: "app{1}:"})
	if err == nil {
		b.Close()
		t.Fatal("Open accepted a prefix with braces")
	}
	if !strings.Contains(err.Error(), "Prefix") {
		t.Errorf("error %q does not name the option", err)
	}
}
