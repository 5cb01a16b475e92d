package liveotel_test

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-live/live"
	liveotel "github.com/go-live/live/otel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Give every hub sharing a broker a Telemetry. A publication made in an
// HTTP handler wrapped by otelhttp.NewHandler (or any middleware that puts
// a span in the request's context), as a Hook's event is, is a child of
// the request's span; its delivery on every node continues the trace.
func Example() {
	// The application's providers, with their exporters (OTLP, say).
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider()
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	tel := liveotel.New(&liveotel.Options{
		// "doc:42" → "doc:{id}": messaging.destination.template, and the
		// spans' names. Without it, nothing names a channel.
		ChannelTemplate: func(channel string) string {
			kind, _, _ := strings.Cut(channel, ":")
			return kind + ":{id}"
		},
	})
	hub := live.NewHub(&live.Options{Observe: tel.Hooks()}) // and Broker, shared by the nodes
	tel.Watch(hub)
	defer hub.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/live/", hub)
	save := hub.Hook(live.HookOptions{Channel: func(r *http.Request) string { return "doc:" + r.PathValue("id") }})
	mux.Handle("PUT /api/docs/{id}", save(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"42"}`))
	})))
	_ = mux // served through otelhttp.NewHandler(mux, "app")
}
