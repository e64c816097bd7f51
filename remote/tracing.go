package remote

import (
	"context"
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. A batch whose invocation attempt is traced (RemoteBatch.Trace
// valid) gets a client span per HTTP attempt, a child of the invocation's
// span, when the client has a tracer (Options.TracerProvider); each attempt
// sends its span's context as the W3C traceparent header, so a StateFun
// SDK that traces continues the trace, and an endpoint that keeps failing
// shows one failed span per attempt while the batch waits. Without a
// tracer of its own the client still sends the invocation span's context.
// An untraced batch costs nothing.

// TracerName is the instrumentation scope of the client's spans.
const TracerName = "github.com/shardfn/shardfn/remote"

var traceparent = propagation.TraceContext{}

// traceAttempt starts the span of one HTTP attempt of k (nil when k is not
// traced or the client has no tracer) and returns the attempt's context,
// which carries the span context that attempt sends.
func (f *Function) traceAttempt(ctx context.Context, k *call) (context.Context, trace.Span) {
	if !k.b.Trace.IsValid() {
		return ctx, nil
	}
	ctx = trace.ContextWithRemoteSpanContext(ctx, k.b.Trace)
	if f.c.tracer == nil {
		return ctx, nil
	}
	ctx, span := f.c.tracer.Start(ctx, "POST "+k.b.Target.FunctionType(), trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("http.request.method", http.MethodPost),
			attribute.String("url.full", k.u),
			attribute.String("shardfn.target", k.b.Target.String()),
			attribute.Int("shardfn.attempt", k.failures+1),
			attribute.Int("shardfn.batch.size", k.to-k.from),
		)
	}
	return ctx, span
}

// traceAttemptEnd ends an attempt's span with its outcome.
func traceAttemptEnd(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil && span.IsRecording() {
		var ae *attemptError
		if errors.As(err, &ae) {
			span.SetAttributes(attribute.String("error.type", ae.reason))
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// injectTrace sets the traceparent header of a request whose context
// carries a span context.
func injectTrace(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		traceparent.Inject(ctx, propagation.HeaderCarrier(h))
	}
}
