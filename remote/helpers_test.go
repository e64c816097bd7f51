package remote

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// reply is what a test function server answers to one request.
type reply struct {
	status      int
	from        *pb.FromFunction
	raw         []byte // sent instead of from when set
	contentType string // default application/octet-stream
}

// fnServer is an in-test StateFun function endpoint: it decodes every
// ToFunction and answers what handle returns.
type fnServer struct {
	t      *testing.T
	srv    *httptest.Server
	handle func(n int, r *http.Request, req *pb.ToFunction_InvocationBatchRequest) reply
	calls  atomic.Int64

	mu       sync.Mutex
	requests []*pb.ToFunction_InvocationBatchRequest
	sizes    []int64
}

func newFnServer(t *testing.T, handle func(n int, r *http.Request, req *pb.ToFunction_InvocationBatchRequest) reply) *fnServer {
	s := &fnServer{t: t, handle: handle}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *fnServer) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var to pb.ToFunction
	if err := proto.Unmarshal(body, &to); err != nil || to.GetInvocation() == nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	n := int(s.calls.Add(1))
	s.mu.Lock()
	s.requests = append(s.requests, to.GetInvocation())
	s.sizes = append(s.sizes, int64(len(body)))
	s.mu.Unlock()
	rep := s.handle(n, r, to.GetInvocation())
	out := rep.raw
	if out == nil && rep.from != nil {
		out, _ = proto.Marshal(rep.from)
	}
	ct := rep.contentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	if rep.status == 0 {
		rep.status = http.StatusOK
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(out)
}

func (s *fnServer) recorded() []*pb.ToFunction_InvocationBatchRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.ToFunction_InvocationBatchRequest(nil), s.requests...)
}

// testEndpoint returns an endpoint for url with fast retries.
func testEndpoint(url string) Endpoint {
	return Endpoint{
		Namespace: "test", Type: "*", URLTemplate: url + "/{function.name}",
		MaxNumBatchRequests: 1000,
		CallTimeout:         20 * time.Second, ConnectTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxRetries: 3, RetryBackoff: time.Millisecond, MaxRetryBackoff: 4 * time.Millisecond,
		MaxConcurrency: 16, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20,
	}
}

func newTestClient(t testing.TB) *Client {
	c, err := NewClient(Options{Workers: 64, Seed: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestFunction(t testing.TB, c *Client, ep Endpoint) *Function {
	f, err := c.Function(ep)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// invoke runs one batch and waits for its result.
func invoke(t testing.TB, f *Function, b *engine.RemoteBatch) *engine.RemoteResult {
	t.Helper()
	ch := make(chan *engine.RemoteResult, 1)
	f.InvokeBatch(b, func(r *engine.RemoteResult) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-time.After(60 * time.Second): // hang guard only
		t.Fatal("InvokeBatch: done never called")
		return nil
	}
}

func counterValue(t testing.TB, vec *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := vec.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gaugeValue(t testing.TB, vec *prometheus.GaugeVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := vec.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func tv(typ string, v []byte) *pb.TypedValue {
	return &pb.TypedValue{Typename: typ, HasValue: true, Value: v}
}

func addr(ns, typ, id string) *pb.Address { return &pb.Address{Namespace: ns, Type: typ, Id: id} }

func result(r *pb.FromFunction_InvocationResponse) *pb.FromFunction {
	return &pb.FromFunction{Response: &pb.FromFunction_InvocationResult{InvocationResult: r}}
}

func incomplete(specs ...*pb.FromFunction_PersistedValueSpec) *pb.FromFunction {
	return &pb.FromFunction{Response: &pb.FromFunction_IncompleteInvocationContext_{
		IncompleteInvocationContext: &pb.FromFunction_IncompleteInvocationContext{MissingValues: specs}}}
}
