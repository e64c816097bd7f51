package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestDrawRoots: roots are started at the ratio, a root not drawn
// allocates nothing, and spans with a parent follow it.
func TestDrawRoots(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	defer sdk.Shutdown(context.Background())
	tr := drawRoots(sdk, 0.25).Tracer("test")
	ctx := context.Background()
	const n = 4000
	drawn := 0
	for i := 0; i < n; i++ {
		_, span := tr.Start(ctx, "root")
		if span.IsRecording() {
			drawn++
		}
		span.End()
	}
	if drawn < n/4-300 || drawn > n/4+300 {
		t.Errorf("%d roots of %d started at ratio 0.25", drawn, n)
	}
	if got := len(exp.GetSpans()); got != drawn {
		t.Errorf("%d spans exported, %d drawn", got, drawn)
	}

	never := drawRoots(sdk, 1e-12).Tracer("test")
	if a := testing.AllocsPerRun(1000, func() {
		c, span := never.Start(ctx, "root")
		if span.IsRecording() || c != ctx {
			panic("drawn")
		}
		span.End()
	}); a != 0 {
		t.Errorf("a root not drawn: %v allocations, want 0", a)
	}

	for _, flags := range []trace.TraceFlags{trace.FlagsSampled, 0} {
		parent := trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: flags, Remote: true}))
		_, span := never.Start(parent, "child")
		if span.IsRecording() != flags.IsSampled() || span.SpanContext().TraceID() != (trace.TraceID{1}) {
			t.Errorf("child of a parent with flags %v: recording %v, trace %s", flags, span.IsRecording(), span.SpanContext().TraceID())
		}
		span.End()
	}
}

func TestDefaultSamplerDrawsRoots(t *testing.T) {
	for _, c := range []struct {
		env   map[string]string
		drawn bool
	}{
		{map[string]string{}, true},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, true},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}, false}, // ratio 1
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, false},
		{map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}, false},
	} {
		c.env["OTEL_TRACES_EXPORTER"] = "console"
		tr, err := FromEnv(context.Background(), Options{Getenv: envOf(c.env), Console: discard{}})
		if err != nil {
			t.Fatal(err)
		}
		_, wrapped := tr.Provider().(*rootRatio)
		if wrapped != c.drawn {
			t.Errorf("%v: roots drawn before the SDK %v, want %v", c.env, wrapped, c.drawn)
		}
		_ = tr.Shutdown(context.Background())
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
