package tracing

import (
	"context"
	"math"
	"math/rand/v2"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Root sampling without allocation. Under the default sampler
// (parentbased_traceidratio) most ingress calls start no trace, and the
// SDK would still build a non-recording span and a context for each (two
// allocations and a few hundred nanoseconds on the hot ingress path). So
// for parentbased_traceidratio the SDK is given ParentBased(AlwaysSample)
// and the tracer provider is wrapped: a span with no parent in its context
// (a root) is started only with probability ratio, drawn here; a root not
// drawn gets the shared no-op span and the caller's context back, and
// costs nothing more. Spans with a parent go to the SDK, which follows
// the parent's decision, as parentbased_traceidratio does. (The draw is
// random rather than a function of the trace id, which for a new root
// makes no difference. A span started with trace.WithNewRoot in a context
// that has a parent is not drawn: shardfn starts none.)

// noSpan is the no-op span of a root not drawn (shared, allocation-free).
var noSpan = trace.SpanFromContext(context.Background())

// rootRatio is a TracerProvider that draws roots (see above).
type rootRatio struct {
	embedded.TracerProvider
	tp        trace.TracerProvider
	threshold uint64 // a root is drawn when a uniform uint64 is below it
}

// drawRoots wraps tp, whose sampler must sample every root it is given,
// so that roots are started with probability ratio (0 < ratio < 1).
func drawRoots(tp trace.TracerProvider, ratio float64) trace.TracerProvider {
	return &rootRatio{tp: tp, threshold: uint64(ratio * math.Exp2(64))}
}

func (p *rootRatio) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return &rootRatioTracer{t: p.tp.Tracer(name, opts...), threshold: p.threshold}
}

type rootRatioTracer struct {
	embedded.Tracer
	t         trace.Tracer
	threshold uint64
}

func (t *rootRatioTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() && rand.Uint64() >= t.threshold {
		return ctx, noSpan
	}
	return t.t.Start(ctx, name, opts...)
}
