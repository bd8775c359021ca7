// Package telemetry sets up floodgate's OpenTelemetry traces from the
// standard OTEL_* environment variables, and gives the packages that trace
// a cheap way to do so: with tracing off there is no exporter, no SDK, and
// a span costs a nil check.
//
// One email is one trace: the producer's floodgate.enqueue span (with the
// guard's guard.admit under it) writes its W3C traceparent into the task
// payload, and the worker continues the trace from it: queue.wait, then
// floodgate.process with guard.dispatch, render, dkim.sign, smtp.send and
// guard.settle under it. Spans carry ids, kinds, outcomes and reasons; a
// recipient appears, if at all, as the guard's keyed digest.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// EnvUsage lists the variables [Setup] honours, for a command's -h.
const EnvUsage = `Tracing (OpenTelemetry; off unless OTEL_TRACES_EXPORTER or an OTLP endpoint is set):
  OTEL_TRACES_EXPORTER           otlp, console (JSON spans on standard error) or none;
                                 comma-separated for several; default otlp when an
                                 OTLP endpoint is set, else none
  OTEL_EXPORTER_OTLP_ENDPOINT    OTLP collector base URL (http://host:4318, or
                                 host:4317 with grpc); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
                                 is the full traces URL
  OTEL_EXPORTER_OTLP_PROTOCOL    http/protobuf (default) or grpc;
                                 OTEL_EXPORTER_OTLP_TRACES_PROTOCOL overrides it
  OTEL_EXPORTER_OTLP_HEADERS     key=value,... sent with every export (also _TIMEOUT,
                                 _INSECURE, _CERTIFICATE, _COMPRESSION, each with a
                                 _TRACES_ variant)
  OTEL_SERVICE_NAME              service.name (default %s)
  OTEL_RESOURCE_ATTRIBUTES       key=value,... added to every span's resource
  OTEL_TRACES_SAMPLER            always_on, always_off, traceidratio, parentbased_*
                                 (default parentbased_always_on); OTEL_TRACES_SAMPLER_ARG
                                 is the ratio
  OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
  OTEL_BSP_EXPORT_TIMEOUT        the batching of exports
  OTEL_SDK_DISABLED              true turns tracing off whatever else is set
`

// Usage returns [EnvUsage] with the default service name filled in.
func Usage(service string) string { return fmt.Sprintf(EnvUsage, service) }

// Telemetry is the tracing a process set up. The zero value and nil are
// tracing off.
type Telemetry struct {
	// Exporters names the exporters in use, e.g. ["otlp"]; empty when off.
	Exporters []string
	tp        *sdktrace.TracerProvider
}

// TracerProvider returns the provider to give the packages that trace, or
// nil when tracing is off (they then create no spans at all).
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp
}

// Shutdown exports the spans still buffered and stops the exporters. It is
// a no-op when tracing is off.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Setup reads the OTEL_* variables through getenv and returns the process's
// tracing; service is the default service.name. With no exporter asked
// for it returns a Telemetry that is off, having created nothing. The
// SDK and the exporters read their own settings (endpoint, headers,
// sampler, batching, OTEL_RESOURCE_ATTRIBUTES) from the process
// environment, as the specification says.
func Setup(ctx context.Context, service string, getenv func(string) string, stderr io.Writer) (*Telemetry, error) {
	names, err := exporters(getenv)
	if err != nil || len(names) == 0 {
		return &Telemetry{}, err
	}
	// Later options win: the default name, then OTEL_RESOURCE_ATTRIBUTES,
	// then OTEL_SERVICE_NAME, as the specification orders them.
	ropts := []resource.Option{
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(),
	}
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		ropts = append(ropts, resource.WithAttributes(attribute.String("service.name", name)))
	}
	res, err := resource.New(ctx, ropts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	for _, name := range names {
		var exp sdktrace.SpanExporter
		switch name {
		case "otlp":
			exp, err = otlpExporter(ctx, getenv)
		case "console":
			exp, err = stdouttrace.New(stdouttrace.WithWriter(stderr))
		}
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s exporter: %w", name, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return &Telemetry{Exporters: names, tp: sdktrace.NewTracerProvider(opts...)}, nil
}

// exporters returns the exporters the environment asks for: none unless
// OTEL_TRACES_EXPORTER names some or an OTLP endpoint is set, so that a
// process configured with nothing sends nothing and pays nothing.
func exporters(getenv func(string) string) ([]string, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	if v == "" {
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			return []string{"otlp"}, nil
		}
		return nil, nil
	}
	var names []string
	for n := range strings.SplitSeq(v, ",") {
		switch n = strings.ToLower(strings.TrimSpace(n)); n {
		case "none":
			return nil, nil
		case "otlp", "console":
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		default:
			return nil, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER %q: want otlp, console or none", n)
		}
	}
	return names, nil
}

// otlpExporter returns the OTLP exporter of the configured protocol; the
// exporter reads its endpoint, headers, timeout and TLS from the
// environment itself.
func otlpExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch strings.TrimSpace(proto) {
	case "", "http/protobuf":
		return otlptracehttp.New(ctx)
	case "grpc":
		return otlptracegrpc.New(ctx)
	case "http/json":
		return nil, errors.New("OTEL_EXPORTER_OTLP_PROTOCOL http/json is not supported: use http/protobuf or grpc")
	}
	return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want http/protobuf or grpc", proto)
}
