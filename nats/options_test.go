package natsbroker_test

import (
	"strings"
	"testing"

	natsbroker "github.com/go-live/live/nats"
)

// TestOpenRefusesBadOptions needs no server: options are checked first.
func TestOpenRefusesBadOptions(t *testing.T) {
	b, err := natsbroker.Open("nats://127.0.0.1:1", &natsbroker.Options{Prefix: "has.dots"})
	if err == nil {
		b.Close()
		t.Fatal("Open accepted a prefix with dots")
	}
	if !strings.Contains(err.Error(), "Prefix") {
		t.Errorf("error %q does not name the option", err)
	}
}
