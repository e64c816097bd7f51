package tracing_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi"
	"github.com/shardfn/shardfn/remote"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// statefunServer is a StateFun request-reply endpoint: its first request is
// answered 503 (so the client retries), later ones with a message to d/z.
// It keeps the traceparent header of every request.
type statefunServer struct {
	mu           sync.Mutex
	traceparents []string
}

func (s *statefunServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var to pb.ToFunction
	if err := proto.Unmarshal(body, &to); err != nil || to.GetInvocation() == nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.traceparents = append(s.traceparents, r.Header.Get("traceparent"))
	n := len(s.traceparents)
	s.mu.Unlock()
	if n == 1 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	out, _ := proto.Marshal(&pb.FromFunction{Response: &pb.FromFunction_InvocationResult{
		InvocationResult: &pb.FromFunction_InvocationResponse{
			OutgoingMessages: []*pb.FromFunction_Invocation{{
				Target:   &pb.Address{Namespace: "t", Type: "d", Id: "z"},
				Argument: &pb.TypedValue{Typename: "done", HasValue: true, Value: []byte("ok")},
			}},
		}}})
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(out)
}

func (s *statefunServer) headers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.traceparents...)
}

// TestOneTraceThroughEverything: an HTTP ingress request with a traceparent
// header; an embedded invocation (t/a) that sends to another instance
// (t/b), which sends a delayed message to a remote function (t/r) whose
// endpoint fails once and then answers with a message to t/d. Every span
// is in the client's trace, each with the right parent, and the endpoint
// received the traceparent of each HTTP attempt's span.
func TestOneTraceThroughEverything(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	t.Cleanup(func() { tp.Shutdown(context.Background()) }) // after the engine closed
	fn := &statefunServer{}
	addr, done := startTracedServer(t, tp, fn)

	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/t/a/1", strings.NewReader("hello"))
	req.Header.Set("Content-Type", "application/vnd.test/start")
	req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("ingress answered %d: %s", resp.StatusCode, rb)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("t/d was never invoked")
	}
	// t/d's span ends right after its invocation returns.
	deadline := time.Now().Add(10 * time.Second)
	for findSpan(exp.GetSpans(), "invoke t/d") == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}

	spans := exp.GetSpans()
	for _, s := range spans {
		if got := s.SpanContext.TraceID().String(); got != clientTrace {
			t.Errorf("span %q is in trace %s, want the client's %s", s.Name, got, clientTrace)
		}
	}
	ingress := mustSpan(t, spans, "send t/a")
	a := mustSpan(t, spans, "invoke t/a")
	b := mustSpan(t, spans, "invoke t/b")
	r := mustSpan(t, spans, "invoke t/r")
	d := mustSpan(t, spans, "invoke t/d")
	parentIs(t, ingress, clientSpan)
	parentIs(t, a, ingress.SpanContext.SpanID().String())
	parentIs(t, b, a.SpanContext.SpanID().String())
	parentIs(t, r, b.SpanContext.SpanID().String()) // through the delayed message
	parentIs(t, d, r.SpanContext.SpanID().String()) // the remote result's send
	if ingress.SpanKind != trace.SpanKindProducer || a.SpanKind != trace.SpanKindConsumer {
		t.Errorf("kinds: ingress %v, invocation %v", ingress.SpanKind, a.SpanKind)
	}
	checkAttempts(t, spans, r, fn.headers(), clientTrace)
}

// startTracedServer serves the functions of TestOneTraceThroughEverything
// (t/r on fn) on an engine and an HTTP ingress traced by tp. It returns the
// ingress address and a channel that receives when t/d is invoked.
func startTracedServer(t *testing.T, tp trace.TracerProvider, fn *statefunServer) (string, <-chan struct{}) {
	t.Helper()
	srv := httptest.NewServer(fn)
	t.Cleanup(srv.Close)
	rc, err := remote.NewClient(remote.Options{Logger: quiet, TracerProvider: tp, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	rf, err := rc.Function(remote.Endpoint{
		Namespace: "t", Type: "r", URLTemplate: srv.URL + "/{function.name}",
		MaxNumBatchRequests: 100, CallTimeout: 10 * time.Second, ConnectTimeout: 5 * time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond,
		MaxConcurrency: 4, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 1)
	specs := []engine.FunctionSpec{
		{Namespace: "t", Type: "a", Function: engine.FunctionFunc(func(ctx engine.Context, m engine.Message) error {
			ctx.Send(engine.Address{Namespace: "t", Type: "b", ID: "x"}, engine.Message{Type: "hop", Value: m.Value})
			return nil
		})},
		{Namespace: "t", Type: "b", Function: engine.FunctionFunc(func(ctx engine.Context, m engine.Message) error {
			ctx.SendAfter(20*time.Millisecond, engine.Address{Namespace: "t", Type: "r", ID: "y"}, engine.Message{Type: "call", Value: m.Value}, "")
			return nil
		})},
		{Namespace: "t", Type: "r", Remote: rf},
		{Namespace: "t", Type: "d", Function: engine.FunctionFunc(func(ctx engine.Context, m engine.Message) error {
			done <- struct{}{}
			return nil
		})},
	}
	e, err := engine.Open(engine.Options{DataDir: t.TempDir(), Shards: 2, Logger: quiet, TracerProvider: tp}, specs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	hs, err := httpapi.New(httpapi.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.ServeIngress(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.ShutdownIngress(ctx)
	})
	return ln.Addr().String(), done
}

// checkAttempts checks the remote call of r: one client span per HTTP
// attempt, the first failed; each attempt sent its own span as traceparent
// (headers, in order).
func checkAttempts(t *testing.T, spans tracetest.SpanStubs, r tracetest.SpanStub, headers []string, clientTrace string) {
	t.Helper()
	var attempts []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "POST t/r" {
			attempts = append(attempts, s)
		}
	}
	if len(attempts) != 2 || len(headers) != 2 {
		t.Fatalf("%d attempt spans and %d requests, want 2 of each (one failed, one retried)", len(attempts), len(headers))
	}
	for i, s := range attempts {
		parentIs(t, s, r.SpanContext.SpanID().String())
		if s.SpanKind != trace.SpanKindClient {
			t.Errorf("attempt %d: kind %v, want client", i+1, s.SpanKind)
		}
		want := "00-" + clientTrace + "-" + s.SpanContext.SpanID().String() + "-01"
		if headers[i] != want {
			t.Errorf("request %d: traceparent %q, want the attempt span's %q", i+1, headers[i], want)
		}
	}
	if attempts[0].Status.Code.String() != "Error" || attempts[1].Status.Code.String() == "Error" {
		t.Errorf("attempt statuses %v, %v: want the first failed (503), the second not", attempts[0].Status, attempts[1].Status)
	}
}

func findSpan(spans tracetest.SpanStubs, name string) *tracetest.SpanStub {
	for i := range spans {
		if spans[i].Name == name {
			return &spans[i]
		}
	}
	return nil
}

func mustSpan(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	s := findSpan(spans, name)
	if s == nil {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Fatalf("no span %q among %q", name, names)
	}
	return *s
}

func parentIs(t *testing.T, s tracetest.SpanStub, parent string) {
	t.Helper()
	if got := s.Parent.SpanID().String(); got != parent {
		t.Errorf("span %q: parent %s, want %s", s.Name, got, parent)
	}
}
