package telemetry

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otelVars lists every OTEL_ variable the environment may hold, so that a
// test starts from none of them set.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}

func clearEnv(t *testing.T) {
	for _, v := range otelVars {
		t.Setenv(v, "")
	}
}

// With nothing set, tracing is off: no provider, and a span is free.
func TestOffByDefault(t *testing.T) {
	clearEnv(t)
	tel, err := Setup(context.Background(), "floodgate-test", os.Getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if tel.TracerProvider() != nil || len(tel.Exporters) != 0 {
		t.Fatalf("tracing on with no variable set: %+v", tel)
	}
	tr := NewTracer(tel.TracerProvider())
	if tr.On() {
		t.Fatal("tracer on")
	}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, span := tr.Start(ctx, "x")
		if c != ctx || span.IsRecording() {
			t.Fatal("a span with tracing off")
		}
		span.End()
	})
	if allocs != 0 {
		t.Errorf("a span with tracing off allocates %v times", allocs)
	}
	if err := tel.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

func TestOffWhenAsked(t *testing.T) {
	for _, env := range [][2]string{
		{"OTEL_TRACES_EXPORTER", "none"},
		{"OTEL_SDK_DISABLED", "true"},
	} {
		clearEnv(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv(env[0], env[1])
		tel, err := Setup(context.Background(), "floodgate-test", os.Getenv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if tel.TracerProvider() != nil {
			t.Errorf("%s=%s: tracing on", env[0], env[1])
		}
	}
}

func TestBadSettings(t *testing.T) {
	for _, env := range [][2]string{
		{"OTEL_TRACES_EXPORTER", "zipkin"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon"},
	} {
		clearEnv(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		t.Setenv(env[0], env[1])
		if _, err := Setup(context.Background(), "floodgate-test", os.Getenv, io.Discard); err == nil {
			t.Errorf("%s=%s: no error", env[0], env[1])
		}
	}
}

// The console exporter writes the spans, with OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES in their resource.
func TestConsole(t *testing.T) {
	clearEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_SERVICE_NAME", "worker-eu-1")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
	var out bytes.Buffer
	tel, err := Setup(context.Background(), "floodgate-test", os.Getenv, &out)
	if err != nil {
		t.Fatal(err)
	}
	_, span := NewTracer(tel.TracerProvider()).Start(context.Background(), "floodgate.enqueue")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Name":"floodgate.enqueue"`, "worker-eu-1", "staging"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console output lacks %s:\n%s", want, out.String())
		}
	}
}

// service.name: OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES', else
// the default.
func TestServiceName(t *testing.T) {
	for _, c := range []struct{ name, attrs, want string }{
		{"", "", "floodgate-test"},
		{"", "service.name=from-attrs", "from-attrs"},
		{"from-name", "service.name=from-attrs", "from-name"},
	} {
		clearEnv(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "console")
		t.Setenv("OTEL_SERVICE_NAME", c.name)
		t.Setenv("OTEL_RESOURCE_ATTRIBUTES", c.attrs)
		var out bytes.Buffer
		tel, err := Setup(context.Background(), "floodgate-test", os.Getenv, &out)
		if err != nil {
			t.Fatal(err)
		}
		_, span := NewTracer(tel.TracerProvider()).Start(context.Background(), "x")
		span.End()
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if want := `"Key":"service.name","Value":{"Type":"STRING","Value":"` + c.want + `"}`; !strings.Contains(out.String(), want) {
			t.Errorf("%+v: output lacks %s:\n%s", c, want, out.String())
		}
	}
}

// An endpoint alone turns OTLP over HTTP on; Shutdown flushes the spans to
// the collector, named by the default service name.
func TestOTLPHTTP(t *testing.T) {
	clearEnv(t)
	got := make(chan *coltracepb.ExportTraceServiceRequest, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		got <- req
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	exportOne(t, got, "floodgate-test")
}

// OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports to a gRPC collector.
func TestOTLPGRPC(t *testing.T) {
	clearEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *coltracepb.ExportTraceServiceRequest, 4)
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, &collector{got: got})
	go gs.Serve(ln)
	defer gs.Stop()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_SERVICE_NAME", "enqueue-batch")
	exportOne(t, got, "enqueue-batch")
}

type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	got chan *coltracepb.ExportTraceServiceRequest
}

func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.got <- req
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// exportOne sets tracing up from the environment, ends one span, shuts
// down, and checks that the collector received it from service.
func exportOne(t *testing.T, got <-chan *coltracepb.ExportTraceServiceRequest, service string) {
	t.Helper()
	tel, err := Setup(context.Background(), "floodgate-test", os.Getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(tel.Exporters) != 1 || tel.Exporters[0] != "otlp" {
		t.Fatalf("exporters %v, want otlp", tel.Exporters)
	}
	_, span := NewTracer(tel.TracerProvider()).Start(context.Background(), "smtp.send")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var req *coltracepb.ExportTraceServiceRequest
	select {
	case req = <-got:
	default:
		t.Fatal("the collector received nothing by Shutdown")
	}
	rs := req.GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Fatalf("request %v, want one span", req)
	}
	if name := rs[0].GetScopeSpans()[0].GetSpans()[0].GetName(); name != "smtp.send" {
		t.Errorf("span %q, want smtp.send", name)
	}
	var svc string
	for _, kv := range rs[0].GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" {
			svc = kv.GetValue().GetStringValue()
		}
	}
	if svc != service {
		t.Errorf("service.name %q, want %q", svc, service)
	}
}

// A traceparent written by one process parents the spans of another.
func TestTraceparentRoundTrip(t *testing.T) {
	clearEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	tel, err := Setup(context.Background(), "floodgate-test", os.Getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	tr := NewTracer(tel.TracerProvider())
	ctx, span := tr.Start(context.Background(), "floodgate.enqueue")
	tp := Traceparent(ctx)
	span.End()
	if !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`).MatchString(tp) {
		t.Fatalf("traceparent %q", tp)
	}
	_, child := tr.Start(WithTraceparent(context.Background(), tp), "floodgate.process")
	defer child.End()
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Errorf("child in trace %s, want %s", child.SpanContext().TraceID(), span.SpanContext().TraceID())
	}
	if Traceparent(context.Background()) != "" {
		t.Error("a traceparent without a span")
	}
	for _, bad := range []string{"", "garbage", "00-" + strings.Repeat("0", 32) + "-" + strings.Repeat("0", 16) + "-01"} {
		if c := WithTraceparent(context.Background(), bad); Traceparent(c) != "" {
			t.Errorf("WithTraceparent(%q) gave a parent", bad)
		}
	}
}

// Every OTEL_ variable this package reads is in the usage.
func TestUsageListsEveryVariable(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`getenv\("(OTEL_[A-Z_]+)"\)`)
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			n++
			if !strings.Contains(EnvUsage, m[1]) {
				t.Errorf("%s reads %s, which EnvUsage does not list", f, m[1])
			}
		}
	}
	if n == 0 {
		t.Error("found no variable read")
	}
}
