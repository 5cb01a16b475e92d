package metricdef

import (
	"sync"

	"github.com/go-live/live/observe"
)

// Transports are the transports the hooks name, in the order TransportIndex
// gives them, for arrays of per-transport instruments.
var Transports = [4]string{observe.SSE, observe.SSEMux, observe.WebSocket, observe.Poll}

// TransportIndex returns the index of transport tr in Transports; an
// unknown name counts as the last.
func TransportIndex(tr string) int {
	switch tr {
	case observe.SSE:
		return 0
	case observe.SSEMux:
		return 1
	case observe.WebSocket:
		return 2
	}
	return 3
}

// Other is the template that channels share once a Templates is full.
const Other = "other"

// DefaultMaxTemplates is the number of channel templates kept apart when
// the application sets no bound.
const DefaultMaxTemplates = 100

// Templates holds one value per channel template, made on first use, for
// at most max templates: once it holds max, every new template shares the
// value of Other, so a template function that returns raw channel names
// cannot grow a metric without bound. It is safe for concurrent use.
type Templates[V any] struct {
	make func(template string) V
	max  int

	mu sync.RWMutex
	m  map[string]V
}

// NewTemplates returns a Templates of at most max templates (the default
// when max is not positive), whose values newValue makes.
func NewTemplates[V any](max int, newValue func(template string) V) *Templates[V] {
	if max <= 0 {
		max = DefaultMaxTemplates
	}
	return &Templates[V]{make: newValue, max: max, m: make(map[string]V)}
}

// Get returns the value of template, or of Other once the Templates is full.
func (t *Templates[V]) Get(template string) V {
	t.mu.RLock()
	v, ok := t.m[template]
	t.mu.RUnlock()
	if ok {
		return v
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok = t.m[template]; ok {
		return v
	}
	if len(t.m) >= t.max {
		template = Other
		if v, ok = t.m[template]; ok {
			return v
		}
	}
	v = t.make(template)
	t.m[template] = v
	return v
}
