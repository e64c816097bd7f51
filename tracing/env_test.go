package tracing

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestFromEnvOffByDefault(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, // no exporter, no endpoint
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
	} {
		tr, err := FromEnv(context.Background(), Options{Getenv: envOf(env)})
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		if tr.Enabled() || tr.Provider() != nil || tr.String() != "off" {
			t.Errorf("%v: tracing on (%s), want off", env, tr)
		}
	}
}

func TestFromEnvRefusesWhatItCannotUse(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://x"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		_, err := FromEnv(context.Background(), Options{Getenv: envOf(c.env)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one naming %s", c.env, err, c.want)
		}
	}
}

func TestFromEnvSampler(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "sampler parentbased_traceidratio 0.01 (default)"},
		{map[string]string{"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "sampler parentbased_traceidratio 0.25 (default)"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio"}, "sampler traceidratio 1"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "ParentBased_Always_On"}, "sampler parentbased_always_on"},
	} {
		c.env["OTEL_TRACES_EXPORTER"] = "console"
		var out bytes.Buffer
		tr, err := FromEnv(context.Background(), Options{Getenv: envOf(c.env), Console: &out})
		if err != nil {
			t.Fatal(err)
		}
		if !tr.Enabled() || tr.String() != "console, "+c.want {
			t.Errorf("%v: %q, want %q", c.env, tr.String(), "console, "+c.want)
		}
		_ = tr.Shutdown(context.Background())
	}
}

// TestFromEnvExportsOTLP: OTEL_EXPORTER_OTLP_ENDPOINT alone switches
// tracing on; spans reach the collector over OTLP/HTTP with the service
// name of OTEL_SERVICE_NAME.
func TestFromEnvExportsOTLP(t *testing.T) {
	col, err := NewCollector()
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.Endpoint())
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_SERVICE_NAME", "rides-test")
	tr, err := FromEnv(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tr.String(), "otlp http/protobuf to "+col.Endpoint()) {
		t.Errorf("set up %q", tr)
	}
	_, span := tr.Provider().Tracer("test").Start(context.Background(), "hello")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if col.Spans() != 1 {
		t.Fatalf("collector received %d spans, want 1", col.Spans())
	}
	last := col.Last()
	rs := last.GetResourceSpans()[0]
	name := ""
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" {
			name = kv.GetValue().GetStringValue()
		}
	}
	if name != "rides-test" || rs.GetScopeSpans()[0].GetSpans()[0].GetName() != "hello" {
		t.Errorf("service.name %q, span %q", name, rs.GetScopeSpans()[0].GetSpans()[0].GetName())
	}
}

func TestFromEnvConsole(t *testing.T) {
	var out bytes.Buffer
	tr, err := FromEnv(context.Background(), Options{Getenv: envOf(map[string]string{
		"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_on"}), Console: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider().Tracer("test").Start(context.Background(), "to-the-console")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"Name":"to-the-console"`) {
		t.Errorf("console output: %.300s", out.String())
	}
}
