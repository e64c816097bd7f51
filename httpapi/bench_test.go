package httpapi

import (
	"context"
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/shardfn/shardfn/engine"
)

// nopEngine acknowledges every message at once, so that benchmarks and
// allocation tests measure the HTTP layer alone.
type nopEngine struct{ *fakeEngine }

func (nopEngine) Send(context.Context, engine.Address, engine.Message, ...engine.SendOption) (uint64, error) {
	return 7, nil
}

func ingressCtx(s *Server) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/rides/driver/d-17")
	ctx.Request.Header.SetContentType("application/vnd.rides/location")
	ctx.Request.SetBodyString(`{"cell":"12-40"}`)
	return &ctx
}

// TestIngressHandlerAllocs checks the whole send path of the handler
// (routing, parsing, message building, answering, metrics) with an engine
// that does nothing: two allocations, the copies of the id and the body that
// the engine keeps.
func TestIngressHandlerAllocs(t *testing.T) {
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(nopEngine{newFake()}); err != nil {
		t.Fatal(err)
	}
	ctx := ingressCtx(s)
	h := s.IngressHandler()
	h(ctx)
	if ctx.Response.StatusCode() != 202 || string(ctx.Response.Body()) != "{\"id\":\"7\"}\n" {
		t.Fatalf("answer %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	n := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		h(ctx)
	})
	if n > 2 {
		t.Errorf("ingress handler allocates %v times per request, want at most 2", n)
	}
}

// BenchmarkIngressSend measures the handler's send path without the engine
// and without the network.
func BenchmarkIngressSend(b *testing.B) {
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SetEngine(nopEngine{newFake()}); err != nil {
		b.Fatal(err)
	}
	h := s.IngressHandler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := ingressCtx(s)
		for pb.Next() {
			ctx.Response.Reset()
			h(ctx)
		}
	})
}

// BenchmarkParseIngress measures request parsing alone.
func BenchmarkParseIngress(b *testing.B) {
	path := []byte("/rides/driver/d-17")
	ct := []byte("application/vnd.rides/location")
	body := []byte(`{"cell":"12-40"}`)
	var r IngressRequest
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		if err := ParseIngress(&r, path, ct, nil, body, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIngressLoopback measures the send path over loopback HTTP with
// an engine that acknowledges at once (parallel keep-alive clients): the
// handler plus fasthttp's connection loop, with request bodies streamed.
func BenchmarkIngressLoopback(b *testing.B) {
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SetEngine(nopEngine{newFake()}); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.ServeIngress(ln) }()
	defer ln.Close()
	c := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 256}
	url := "http://" + ln.Addr().String() + "/rides/driver/d-17"
	body := []byte(`{"cell":"12-40"}`)
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/vnd.rides/location")
		req.SetBody(body)
		for pb.Next() {
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 202 {
				b.Errorf("%v %d", err, resp.StatusCode())
				return
			}
		}
	})
}
