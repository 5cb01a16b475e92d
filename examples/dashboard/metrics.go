package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-live/live"
)

// metricsChannel carries partial updates: each names only the numbers that
// moved, and clients merge them into what they have.
const metricsChannel = "metrics:dashboard"

// metrics is the dashboard's numbers, the fold of the updates published on
// metricsChannel. The numbers move only when an update is applied, so
// every node sharing a broker shows the same ones.
type metrics struct {
	mu        sync.Mutex // guards values, updatedAt and appliedAt
	values    map[string]float64
	updatedAt int64     // the latest update's updatedAt, Unix ms; 0 before any
	appliedAt time.Time // when this node last applied an update
}

func newMetrics() *metrics {
	return &metrics{values: map[string]float64{
		"activeUsers": 1280, "requestsPerSecond": 340, "errorRate": 0.4, "p95LatencyMs": 182,
	}}
}

func (m *metrics) snapshot() map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]any, len(m.values)+1)
	for k, v := range m.values {
		out[k] = v
	}
	out["updatedAt"] = m.updatedAt
	if m.updatedAt == 0 {
		out["updatedAt"] = time.Now().UnixMilli()
	}
	return out
}

// apply folds one update in. Members other than the known numbers and
// updatedAt are ignored.
func (m *metrics) apply(msg live.Message) {
	var update map[string]any
	if err := json.Unmarshal(msg.Data, &update); err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range update {
		f, ok := v.(float64)
		if !ok {
			continue
		}
		if k == "updatedAt" {
			m.updatedAt = int64(f)
		} else if _, known := m.values[k]; known {
			m.values[k] = f
		}
	}
	m.appliedAt = time.Now()
}

// step returns an update that moves a random subset of the numbers.
func (m *metrics) step(r *rand.Rand) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := map[string]any{"updatedAt": time.Now().UnixMilli()}
	for k, v := range m.values {
		if r.IntN(2) == 0 {
			continue
		}
		switch k {
		case "activeUsers":
			v = max(0, v+float64(r.IntN(41)-20))
		case "requestsPerSecond":
			v = max(0, v+float64(r.IntN(31)-15))
		case "errorRate":
			v = min(5, max(0, v+(r.Float64()-0.5)/5))
		case "p95LatencyMs":
			v = max(20, v+float64(r.IntN(21)-10))
		}
		changed[k] = v
	}
	return changed
}

// recent reports whether an update was applied less than d ago.
func (m *metrics) recent(d time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Since(m.appliedAt) < d
}

// run publishes an update every interval until ctx ends. A tick is skipped
// when an update came in during the last three quarters of an interval,
// so several nodes sharing a broker publish about one update per interval
// between them rather than one each.
func (m *metrics) run(ctx context.Context, hub *live.Hub, interval time.Duration, logger *slog.Logger) error {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if m.recent(interval * 3 / 4) {
			continue
		}
		if _, err := hub.Publish(ctx, metricsChannel, m.step(r)); err != nil {
			if errors.Is(err, live.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			logger.Warn("dashboard: publishing metrics", "err", err)
		}
	}
}
