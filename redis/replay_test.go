package redisbroker_test

import (
	"testing"

	"github.com/go-live/live/internal/servertest"
)

// TestResumeHeapWithinBound resumes ten clients from the first cursor of
// a 40 MB history, and they never read: the hub reads the history a page
// at a time as they drain.
func TestResumeHeapWithinBound(t *testing.T) {
	b, _, _ := newBroker(t, redisURL(t), nil)
	servertest.ExpectResumeHeapBounded(t, servertest.NewNode(t, b, nil), servertest.ChannelName(t))
}
