package liveotel

import (
	"context"
	"strings"

	"github.com/go-live/live/observe"
)

// The trace a publication carries is what the propagator writes: for W3C
// Trace Context with nothing but a traceparent, that header's value alone
// ("00-<trace id>-<span id>-<flags>", 55 bytes); otherwise its fields as
// lines "name=value" (a traceparent's value holds no '='), in the order
// the propagator writes them, the traceparent first. What does not fit in
// observe.MaxTrace bytes is left out, the fields after the first
// (tracestate, baggage) first; a first field that does not fit alone
// carries nothing.

// traceparent is the field of W3C Trace Context that may go alone.
const traceparent = "traceparent"

// carrier is a propagation.TextMapCarrier of a few fields, in order.
type carrier []field

type field struct{ key, value string }

// Get returns the value of key, "" if none.
func (c *carrier) Get(key string) string {
	for _, f := range *c {
		if f.key == key {
			return f.value
		}
	}
	return ""
}

// Set sets key to value.
func (c *carrier) Set(key, value string) {
	for i, f := range *c {
		if f.key == key {
			(*c)[i].value = value
			return
		}
	}
	*c = append(*c, field{key, value})
}

// Keys returns the keys set.
func (c *carrier) Keys() []string {
	keys := make([]string, len(*c))
	for i, f := range *c {
		keys[i] = f.key
	}
	return keys
}

// encode returns the trace of the span context in ctx.
func (t *Telemetry) encode(ctx context.Context) string {
	var buf [2]field
	c := carrier(buf[:0])
	t.prop.Inject(ctx, &c)
	switch {
	case len(c) == 0:
		return ""
	case len(c) == 1 && c[0].key == traceparent && !strings.Contains(c[0].value, "="):
		if len(c[0].value) > observe.MaxTrace {
			return ""
		}
		return c[0].value
	}
	// In the order the propagator wrote them (a composite one writes its
	// propagators' fields in turn), the traceparent first: the span's own
	// context goes before what may be left out. Fields() is no guide: a
	// composite propagator lists its fields in no fixed order.
	ordered := make(carrier, 0, len(c))
	for _, f := range c {
		if f.key == traceparent && f.value != "" {
			ordered = append(ordered, f)
		}
	}
	for _, f := range c {
		if f.key != traceparent && f.value != "" {
			ordered = append(ordered, f)
		}
	}
	var b strings.Builder
	for i, f := range ordered {
		if strings.ContainsAny(f.key, "=\n") || strings.Contains(f.value, "\n") {
			continue
		}
		n := len(f.key) + 1 + len(f.value)
		if i > 0 {
			n++
		}
		if b.Len()+n > observe.MaxTrace {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(f.key)
		b.WriteByte('=')
		b.WriteString(f.value)
	}
	return b.String()
}

// decode returns ctx with the span context the trace tr carries.
func (t *Telemetry) decode(ctx context.Context, tr string) context.Context {
	var buf [2]field
	c := carrier(buf[:0])
	if !strings.Contains(tr, "=") {
		c = append(c, field{traceparent, tr})
	} else {
		for line := range strings.SplitSeq(tr, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				c = append(c, field{k, v})
			}
		}
	}
	return t.prop.Extract(ctx, &c)
}
