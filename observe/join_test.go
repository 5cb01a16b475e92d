package observe_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-live/live/observe"
)

func TestJoin(t *testing.T) {
	var calls []string
	a := &observe.Hooks{
		Waited: func(time.Duration) { calls = append(calls, "a.Waited") },
		Inject: func(context.Context, string) (string, func(error)) {
			return "", func(error) { calls = append(calls, "a.injected") }
		},
		FanOut: func(string, string) func() { return func() { calls = append(calls, "a.done") } },
	}
	b := &observe.Hooks{
		Waited: func(time.Duration) { calls = append(calls, "b.Waited") },
		Pong:   func(time.Duration) { calls = append(calls, "b.Pong") },
		Inject: func(context.Context, string) (string, func(error)) {
			return "b", func(error) { calls = append(calls, "b.injected") }
		},
		FanOut: func(string, string) func() { return func() { calls = append(calls, "b.done") } },
	}
	j := observe.Join(a, nil, b)
	if j.Published != nil || j.Wrote != nil || j.PollHeld != nil {
		t.Error("Join set a hook that none of its hooks sets")
	}
	j.Waited(0)
	j.Pong(0)
	got, done := j.Inject(context.Background(), "c")
	if got != "b" {
		t.Errorf("Inject = %q, want the first non-empty, b", got)
	}
	done(nil)
	j.FanOut("c", "b")()
	want := []string{"a.Waited", "b.Waited", "b.Pong", "a.injected", "b.injected", "a.done", "b.done"}
	if len(calls) != len(want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("calls %v, want %v", calls, want)
		}
	}
	if observe.Join().FanOut != nil {
		t.Error("Join of nothing sets FanOut")
	}
}
