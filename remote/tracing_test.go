package remote

import (
	"net/http"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"

	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// TestTraceparentWithoutTracer: a client with no tracer of its own sends
// the batch's span (RemoteBatch.Trace) as traceparent; an untraced batch
// sends no traceparent.
func TestTraceparentWithoutTracer(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := newFnServer(t, func(_ int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
		mu.Lock()
		got = append(got, r.Header.Get("traceparent"))
		mu.Unlock()
		return reply{from: okResult()}
	})
	c := newTestClient(t)
	f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
	b := oneBatch()
	b.Trace = trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xaa, 1}, SpanID: trace.SpanID{0xbb, 2}, TraceFlags: trace.FlagsSampled, Remote: true})
	if res := invoke(t, f, b); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := invoke(t, f, oneBatch()); res.Err != nil {
		t.Fatal(res.Err)
	}
	want := "00-aa010000000000000000000000000000-bb02000000000000-01"
	if len(got) != 2 || got[0] != want || got[1] != "" {
		t.Fatalf("traceparent headers %q, want [%q \"\"]", got, want)
	}
}
