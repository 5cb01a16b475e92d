package follow

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestGateShutWaitsAndStops(t *testing.T) {
	var calls atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	g := New(func(int) {}, func(int) {
		calls.Add(1)
		close(entered)
		<-release
	}, func(error) { calls.Add(100) })
	go g.Deliver(1)
	<-entered
	shut := make(chan bool)
	go func() { shut <- g.Shut() }()
	select {
	case <-shut:
		t.Fatal("Shut returned while a callback ran")
	default:
	}
	close(release)
	if !<-shut {
		t.Error("Shut reported the gate shut already")
	}
	g.Deliver(2)
	g.Ready(0)
	g.End(errors.New("late"))
	if n := calls.Load(); n != 1 {
		t.Errorf("callbacks after Shut: %d calls in all, want 1", n)
	}
	if g.Shut() {
		t.Error("a shut gate reports itself open")
	}
}

func TestGateEndsOnce(t *testing.T) {
	var ended []error
	g := New(func(int) {}, func(int) {}, func(err error) { ended = append(ended, err) })
	first := errors.New("first")
	g.End(first)
	g.End(errors.New("second"))
	if len(ended) != 1 || ended[0] != first {
		t.Errorf("ended with %v, want [first]", ended)
	}
}

func TestSubscribe(t *testing.T) {
	broken := errors.New("broken")
	var stopped atomic.Int32
	start := func(ready func(int), deliver func(int), ended func(error)) (func(), error) {
		ready(7)
		deliver(8)
		go ended(broken)
		return func() { stopped.Add(1) }, nil
	}
	var got []int
	err := Subscribe(context.Background(), start, func(p int) { got = append(got, p) }, func(m int) { got = append(got, m) })
	if err != broken || len(got) != 2 || stopped.Load() != 1 {
		t.Errorf("Subscribe = %v after %v, stopped %d times; want broken after [7 8], stopped once", err, got, stopped.Load())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	idle := func(func(int), func(int), func(error)) (func(), error) { return func() { stopped.Add(1) }, nil }
	if err := Subscribe(ctx, idle, func(int) {}, func(int) {}); err != nil {
		t.Errorf("Subscribe with its context ended = %v, want nil", err)
	}
	refused := errors.New("refused")
	if err := Subscribe(context.Background(), func(func(int), func(int), func(error)) (func(), error) { return nil, refused }, func(int) {}, func(int) {}); err != refused {
		t.Errorf("Subscribe of a refused follow = %v, want refused", err)
	}
}
