// Package liveprom serves the metrics of a live.Hub from the
// application's own Prometheus registry: the hub's counters and gauges,
// read from Hub.Stats at each scrape, and histograms of the latencies the
// hub reports through live.Options.Observe.
//
//	m := liveprom.New(nil)
//	hub := live.NewHub(&live.Options{Observe: m.Hooks()})
//	m.Watch(hub)
//	prometheus.MustRegister(m)
//
// The hooks go into the hub's Options before the hub exists, and Watch
// gives the collector the hub whose Stats it reads; until then it serves
// only its histograms.
//
// # Cardinality
//
// No metric is labelled with a channel's name: an application has as many
// channels as it has documents, users or rooms, and each label value is a
// time series kept by Prometheus. Labels take few values: transport
// (sse, sse-mux, ws, poll), reason (of a reset), op (of a control
// message). The one exception is opt-in: Options.ChannelTemplate maps a
// channel to its template ("doc:42" to "doc:{id}"), which then labels
// live_publish_seconds; what it returns must come from a small fixed set,
// and past Options.MaxTemplates distinct values the rest are labelled
// "other".
//
// The metrics are those of Hub.MetricsHandler, under the same names,
// plus the histograms; docs/operations.md lists them all.
package liveprom

import (
	"sync/atomic"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/metricdef"
	"github.com/go-live/live/observe"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Collector. A nil *Options, or a zero field, means
// the default documented on the field.
type Options struct {
	// ChannelTemplate, if set, maps a channel to the template it is an
	// instance of, such as "doc:{id}" for "doc:42", which labels
	// live_publish_seconds as channel; "" leaves a channel unlabelled
	// (channel=""). Never return the channel's name itself where
	// channels are many: see the package documentation. Default: none,
	// and live_publish_seconds has no channel label.
	ChannelTemplate func(channel string) string

	// MaxTemplates bounds the distinct values ChannelTemplate may give;
	// channels beyond are labelled "other". Default 100.
	MaxTemplates int

	// ConstLabels are added to every metric, to tell apart several hubs
	// of one process that share a registry.
	ConstLabels prometheus.Labels
}

// A Collector is a prometheus.Collector of one Hub's metrics.
type Collector struct {
	hub atomic.Pointer[live.Hub]

	template func(string) string

	stats map[*metricdef.Metric]*prometheus.Desc

	publish     *prometheus.HistogramVec
	publishAll  prometheus.Observer // without ChannelTemplate
	byTemplate  *metricdef.Templates[prometheus.Observer]
	writeLat    *prometheus.HistogramVec
	writeFrames *prometheus.HistogramVec
	// latency and frames per transport, indexed as metricdef.TransportIndex
	latency, frames  [4]prometheus.Observer
	wait, poll, ping prometheus.Histogram
}

// New returns a Collector configured by opts, which may be nil.
func New(opts *Options) *Collector {
	var o Options
	if opts != nil {
		o = *opts
	}
	c := &Collector{
		template: o.ChannelTemplate,
		stats:    make(map[*metricdef.Metric]*prometheus.Desc, len(metricdef.Stats)),
	}
	for _, m := range metricdef.Stats {
		var labels []string
		if m.Label != "" {
			labels = []string{m.Label}
		}
		c.stats[m] = prometheus.NewDesc(m.Name, m.Help, labels, o.ConstLabels)
	}
	hist := func(m *metricdef.Metric, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: m.Name, Help: m.Help, Buckets: m.Buckets, ConstLabels: o.ConstLabels,
		}, labels)
	}
	if c.template != nil {
		c.publish = hist(metricdef.PublishSeconds, metricdef.PublishSeconds.Label)
		c.byTemplate = metricdef.NewTemplates(o.MaxTemplates, func(t string) prometheus.Observer {
			return c.publish.WithLabelValues(t)
		})
	} else {
		c.publish = hist(metricdef.PublishSeconds)
		c.publishAll = c.publish.WithLabelValues()
	}
	c.writeLat = hist(metricdef.WriteLatencySeconds, metricdef.WriteLatencySeconds.Label)
	c.writeFrames = hist(metricdef.WriteFrames, metricdef.WriteFrames.Label)
	for i, tr := range metricdef.Transports {
		c.latency[i] = c.writeLat.WithLabelValues(tr)
		c.frames[i] = c.writeFrames.WithLabelValues(tr)
	}
	one := func(m *metricdef.Metric) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: m.Name, Help: m.Help, Buckets: m.Buckets, ConstLabels: o.ConstLabels,
		})
	}
	c.wait = one(metricdef.WriterWaitSeconds)
	c.poll = one(metricdef.PollHoldSeconds)
	c.ping = one(metricdef.PingRTTSeconds)
	return c
}

// Hooks returns the hooks that feed the Collector's histograms, for
// live.Options.Observe. Each call returns new hooks feeding the same
// histograms.
func (c *Collector) Hooks() *observe.Hooks {
	return &observe.Hooks{
		Published: c.published,
		Wrote: func(transport string, frames int, latency time.Duration) {
			i := metricdef.TransportIndex(transport)
			c.frames[i].Observe(float64(frames))
			if latency > 0 {
				c.latency[i].Observe(latency.Seconds())
			}
		},
		Waited:   func(d time.Duration) { c.wait.Observe(d.Seconds()) },
		PollHeld: func(d time.Duration) { c.poll.Observe(d.Seconds()) },
		Pong:     func(rtt time.Duration) { c.ping.Observe(rtt.Seconds()) },
	}
}

// published observes a publication's round trip to the broker.
func (c *Collector) published(channel string, took time.Duration, _ error) {
	if c.template == nil {
		c.publishAll.Observe(took.Seconds())
		return
	}
	c.byTemplate.Get(c.template(channel)).Observe(took.Seconds())
}

// Watch makes the Collector read hub's Stats at each scrape. hub should be
// the one whose Options.Observe holds the Collector's Hooks.
func (c *Collector) Watch(hub *live.Hub) { c.hub.Store(hub) }

// Describe sends the descriptors of every metric the Collector serves.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metricdef.Stats {
		ch <- c.stats[m]
	}
	c.publish.Describe(ch)
	c.writeLat.Describe(ch)
	c.writeFrames.Describe(ch)
	c.wait.Describe(ch)
	c.poll.Describe(ch)
	c.ping.Describe(ch)
}

// Collect sends the hub's Stats as they are now, and the histograms.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if hub := c.hub.Load(); hub != nil {
		metricdef.Read(hub.Stats(), func(m *metricdef.Metric, label string, v float64) {
			kind := prometheus.GaugeValue
			if m.Kind == metricdef.Counter {
				kind = prometheus.CounterValue
			}
			if m.Label == "" {
				ch <- prometheus.MustNewConstMetric(c.stats[m], kind, v)
			} else {
				ch <- prometheus.MustNewConstMetric(c.stats[m], kind, v, label)
			}
		})
	}
	c.publish.Collect(ch)
	c.writeLat.Collect(ch)
	c.writeFrames.Collect(ch)
	c.wait.Collect(ch)
	c.poll.Collect(ch)
	c.ping.Collect(ch)
}
