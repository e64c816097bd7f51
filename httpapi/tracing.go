package httpapi

import (
	"context"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/propagation"
)

// Tracing: an ingress request (a message or a batch) with a W3C
// traceparent header (and tracestate) makes the engine's span of the call
// a child of the caller's span, so the trace goes on from the client
// through every invocation the message causes (engine/tracing.go). A
// request without one costs one header look-up.

var traceContext = propagation.TraceContext{}

// headerCarrier reads a fasthttp request's headers for the propagator.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string {
	if v := c.h.Peek(key); len(v) > 0 {
		return string(v)
	}
	return ""
}

func (c headerCarrier) Set(string, string) {}
func (c headerCarrier) Keys() []string     { return []string{"traceparent", "tracestate"} }

// callCtx is the context of the engine call of an ingress request: base,
// with the caller's span context when the request carries a valid
// traceparent header.
func callCtx(base context.Context, ctx *fasthttp.RequestCtx) context.Context {
	if len(ctx.Request.Header.Peek("traceparent")) == 0 {
		return base
	}
	return traceContext.Extract(base, headerCarrier{&ctx.Request.Header})
}
