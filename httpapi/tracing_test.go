package httpapi

import (
	"context"
	"testing"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// TestCallCtxReadsTraceparent: a valid traceparent header becomes the
// (remote) parent span of the engine call; a missing or malformed one
// leaves the base context.
func TestCallCtxReadsTraceparent(t *testing.T) {
	base := context.Background()
	for _, c := range []struct {
		header string
		valid  bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false}, // zero trace id
		{"not a traceparent", false},
	} {
		var ctx fasthttp.RequestCtx
		if c.header != "" {
			ctx.Request.Header.Set("Traceparent", c.header)
		}
		got := callCtx(base, &ctx)
		sc := trace.SpanContextFromContext(got)
		if sc.IsValid() != c.valid {
			t.Errorf("%q: span context valid %v, want %v", c.header, sc.IsValid(), c.valid)
		}
		if c.valid && (sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" || !sc.IsSampled() || !sc.IsRemote()) {
			t.Errorf("%q: %v", c.header, sc)
		}
		if !c.valid && got != base {
			t.Errorf("%q: a new context for no valid header", c.header)
		}
	}
}
