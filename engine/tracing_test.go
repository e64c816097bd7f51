package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func newTestTracer(sampler sdktrace.Sampler) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sampler)), exp
}

func spansNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, name string, n int) []tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := spansNamed(exp.GetSpans(), name)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			var names []string
			for _, s := range exp.GetSpans() {
				names = append(names, s.Name)
			}
			t.Fatalf("%d spans %q, want %d; spans: %q", len(got), name, n, names)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestTraceSurvivesRestart: an invocation traced from the caller's span
// arms a delayed message; the engine closes before it is due; after Open
// (with a new tracer provider) it fires, and its invocation is in the same
// trace, a child of the span that armed it (the context was kept in the
// log and the store).
func TestTraceSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	fired := make(chan struct{}, 1)
	spec := FunctionSpec{Namespace: "t", Type: "timer", Function: FunctionFunc(func(ctx Context, m Message) error {
		switch m.Type {
		case "arm":
			ctx.SendAfter(time.Hour, ctx.Self(), Message{Type: "fire"}, "tok")
		case "fire":
			fired <- struct{}{}
		}
		return nil
	})}
	to := Address{Namespace: "t", Type: "timer", ID: "1"}

	tp1, exp1 := newTestTracer(sdktrace.ParentBased(sdktrace.NeverSample()))
	e := openTest(t, Options{DataDir: dir, Shards: 2, Clock: clock.now, TracerProvider: tp1}, spec)
	client, _ := newTestTracer(sdktrace.AlwaysSample()) // the caller's own tracing
	ctx, root := client.Tracer("test").Start(context.Background(), "client")
	if _, err := e.Send(ctx, to, Message{Type: "arm"}); err != nil {
		t.Fatal(err)
	}
	root.End()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("the delayed message fired before its time")
	default:
	}
	arm := waitSpans(t, exp1, "invoke t/timer", 1)[0]
	if arm.SpanContext.TraceID() != root.SpanContext().TraceID() {
		t.Fatalf("the arming invocation is in trace %s, not the client's %s", arm.SpanContext.TraceID(), root.SpanContext().TraceID())
	}

	tp2, exp2 := newTestTracer(sdktrace.ParentBased(sdktrace.NeverSample()))
	clock.add(2 * time.Hour)
	e2 := openTest(t, Options{DataDir: dir, Shards: 2, Clock: clock.now, TracerProvider: tp2}, spec)
	defer e2.Close()
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("the delayed message did not fire after the restart")
	}
	fire := waitSpans(t, exp2, "invoke t/timer", 1)[0]
	if fire.SpanContext.TraceID() != arm.SpanContext.TraceID() || fire.Parent.SpanID() != arm.SpanContext.SpanID() {
		t.Fatalf("after the restart the timer's invocation has trace %s parent %s, want trace %s parent %s (the arming span)",
			fire.SpanContext.TraceID(), fire.Parent.SpanID(), arm.SpanContext.TraceID(), arm.SpanContext.SpanID())
	}
	if !fire.Parent.IsRemote() {
		t.Error("the parent of a span after a restart should be remote (it came from the store)")
	}
}

// TestTracedIngressCalls: every ingress call is a span, a child of the
// span in its context; its messages carry the span's context; a call
// without a sampled span starts no trace (parent-based sampling), and so
// its invocations make no spans.
func TestTracedIngressCalls(t *testing.T) {
	tp, exp := newTestTracer(sdktrace.ParentBased(sdktrace.NeverSample()))
	var seen atomic.Int64
	spec := FunctionSpec{Namespace: "t", Type: "echo", Function: FunctionFunc(func(ctx Context, m Message) error {
		seen.Add(1)
		ctx.Reply(m)
		return nil
	})}
	e := openTest(t, Options{Shards: 2, TracerProvider: tp}, spec)
	defer e.Close()
	to := func(i int) Address { return Address{Namespace: "t", Type: "echo", ID: fmt.Sprint(i)} }
	ctx, root := tp.Tracer("test").Start(context.Background(), "client")
	if root.SpanContext().IsSampled() {
		t.Fatal("a root under NeverSample is sampled")
	}
	// Unsampled: nothing is traced.
	if _, err := e.Send(ctx, to(1), Message{Type: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := e.SendAsync(to(2), Message{Type: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans for calls without a sampled parent, want 0", n)
	}

	// Sampled parent: Send, Request, SendBatch.
	psc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, Remote: true})
	pctx := trace.ContextWithRemoteSpanContext(context.Background(), psc)
	if _, err := e.Send(pctx, to(3), Message{Type: "m"}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(pctx, 10*time.Second)
	defer cancel()
	if _, err := e.Request(rctx, to(4), Message{Type: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := e.SendBatch(pctx, []Outgoing{{To: to(5), Message: Message{Type: "m"}}, {To: to(6), Message: Message{Type: "m"}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	invokes := waitSpans(t, exp, "invoke t/echo", 4)
	ingress := map[string]tracetest.SpanStub{}
	for _, name := range []string{"send t/echo", "request t/echo", "send batch t/echo"} {
		s := spansNamed(exp.GetSpans(), name)
		if len(s) != 1 {
			t.Fatalf("%d spans %q, want 1", len(s), name)
		}
		if s[0].Parent.SpanID() != psc.SpanID() || s[0].SpanContext.TraceID() != psc.TraceID() {
			t.Errorf("%q: parent %s in trace %s, want the caller's span", name, s[0].Parent.SpanID(), s[0].SpanContext.TraceID())
		}
		ingress[s[0].SpanContext.SpanID().String()] = s[0]
	}
	perParent := map[string]int{}
	for _, s := range invokes {
		p, ok := ingress[s.Parent.SpanID().String()]
		if !ok {
			t.Errorf("invocation span %v has parent %s, not an ingress span", s.Attributes, s.Parent.SpanID())
			continue
		}
		perParent[p.Name]++
	}
	if perParent["send t/echo"] != 1 || perParent["request t/echo"] != 1 || perParent["send batch t/echo"] != 2 {
		t.Errorf("invocations per ingress span: %v", perParent)
	}
}

// TestTracingOffAllocFree: with tracing off, the embedded invoke path
// (SendAsync, invocation, state write) allocates nothing; with tracing on,
// an invocation of an unsampled message allocates nothing either (a ball
// bounced between two instances by their own sends).
func TestTracingOffAllocFree(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts need a steady state")
	}
	var done atomic.Int64
	spec := FunctionSpec{Namespace: "b", Type: "inv", States: []ValueSpec{benchValue},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, _ := ctx.GetInt64(benchValue)
			err := ctx.SetInt64(benchValue, n+1)
			done.Add(1)
			return err
		})}
	e := openTest(t, Options{Shards: 1}, spec)
	defer e.Close()
	addrs := make([]Address, 64)
	for i := range addrs {
		addrs[i] = Address{Namespace: "b", Type: "inv", ID: fmt.Sprint(i)}
	}
	msg := Message{Type: "x", Value: []byte("payload")}
	const warm, runs = 5000, 5000
	for i := 0; i < warm; i++ {
		sendRetry(t, e, addrs[i%len(addrs)], msg)
	}
	waitCount(&done, warm)
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		sendRetry(t, e, addrs[i%len(addrs)], msg)
		i++
	})
	waitCount(&done, warm+runs+1) // AllocsPerRun runs f once more to warm up
	if allocs != 0 {
		t.Errorf("tracing off: %v allocations per SendAsync and invocation, want 0", allocs)
	}

	// Tracing on, messages not sampled.
	tp, exp := newTestTracer(sdktrace.ParentBased(sdktrace.NeverSample()))
	var hops, limit atomic.Int64
	peers := [2]Address{{Namespace: "b", Type: "pp", ID: "a"}, {Namespace: "b", Type: "pp", ID: "b"}}
	pp := FunctionSpec{Namespace: "b", Type: "pp", States: []ValueSpec{benchValue},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, _ := ctx.GetInt64(benchValue)
			if err := ctx.SetInt64(benchValue, n+1); err != nil {
				return err
			}
			if hops.Add(1) < limit.Load() {
				to := peers[0]
				if ctx.Self() == peers[0] {
					to = peers[1]
				}
				ctx.Send(to, msg)
			}
			return nil
		})}
	e2 := openTest(t, Options{Shards: 2, TracerProvider: tp}, pp)
	defer e2.Close()
	limit.Store(1 << 62)
	if err := e2.SendAsync(peers[0], msg); err != nil {
		t.Fatal(err)
	}
	waitCount(&hops, warm)
	allocs = testing.AllocsPerRun(runs, func() {
		n := hops.Load()
		waitCount(&hops, n+1)
	})
	limit.Store(0)
	if allocs != 0 {
		t.Errorf("tracing on, unsampled: %v allocations per invocation, want 0", allocs)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans of unsampled messages", n)
	}
}

// BenchmarkInvokeTraced is BenchmarkInvoke (SendAsync and one embedded
// invocation) with tracing off, and on with a ratio sampler (each message
// is an ingress call, so each costs a span start; sampled ones a recorded
// span for the call and one for the invocation, to a no-op exporter).
func BenchmarkInvokeTraced(b *testing.B) {
	for _, c := range []struct {
		name  string
		ratio float64
	}{{"off", -1}, {"ratio=0", 0}, {"ratio=0.01", 0.01}, {"ratio=1", 1}} {
		b.Run(c.name, func(b *testing.B) {
			var done atomic.Int64
			spec := FunctionSpec{Namespace: "b", Type: "inv", States: []ValueSpec{benchValue},
				Function: FunctionFunc(func(ctx Context, msg Message) error {
					n, _, _ := ctx.GetInt64(benchValue)
					err := ctx.SetInt64(benchValue, n+1)
					done.Add(1)
					return err
				})}
			o := Options{Shards: 1, Logger: quiet}
			if c.ratio >= 0 {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
					sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.ratio))))
				defer tp.Shutdown(context.Background())
				o.TracerProvider = tp
			}
			e, err := Open(o, spec)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			addrs := make([]Address, 64)
			for i := range addrs {
				addrs[i] = Address{Namespace: "b", Type: "inv", ID: fmt.Sprint(i)}
			}
			msg := Message{Type: "x", Value: []byte("payload")}
			for i := 0; i < 20000; i++ {
				sendRetry(b, e, addrs[i%len(addrs)], msg)
			}
			waitCount(&done, 20000)
			done.Store(0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sendRetry(b, e, addrs[i%len(addrs)], msg)
			}
			waitCount(&done, int64(b.N))
		})
	}
}
