package remote

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// BenchmarkRemoteInvoke measures remote invocations over loopback HTTP.
//
//	codec-only          encode ToFunction + decode FromFunction, no HTTP: the baseline
//	server=go/...       an in-test Go function server (decode, one MODIFY, one send)
//	server=node/...     the official StateFun JavaScript SDK (conformance.js conf/counter)
//	inflight=1          one batch at a time: ns/op is the latency of one remote hop
//	inflight=64         64 batches outstanding (distinct addresses): throughput
//	batch=N             N invocations per request
//
// Metrics: inv/s (invocations per second), µs/hop (wall time per batch at
// inflight=1).
func BenchmarkRemoteInvoke(b *testing.B) {
	b.Run("codec-only", func(b *testing.B) {
		batch := benchBatch(1, 0)
		from := goAnswer(buildRequest(batch.Target, batch.States, batch.Invocations).GetInvocation().Invocations)
		raw, _ := proto.Marshal(from)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := proto.Marshal(buildRequest(batch.Target, batch.States, batch.Invocations)); err != nil {
				b.Fatal(err)
			}
			if _, err := decodeResponse(raw, batch.States); err != nil {
				b.Fatal(err)
			}
		}
	})
	goSrv := newBenchGoServer(b)
	for _, inflight := range []int{1, 64} {
		for _, n := range []int{1, 100} {
			b.Run(benchName("go", inflight, n), func(b *testing.B) {
				benchInvoke(b, goSrv, "test", inflight, n, 1)
			})
		}
	}
	b.Run("server=node", func(b *testing.B) {
		base := startNode(b, "conformance.js")
		for _, inflight := range []int{1, 64} {
			for _, n := range []int{1, 100} {
				b.Run(benchName("", inflight, n)[len("server=/"):], func(b *testing.B) {
					benchInvoke(b, base+"/statefun-bench", "conf", inflight, n, 2)
				})
			}
		}
	})
}

func benchName(server string, inflight, n int) string {
	return "server=" + server + "/inflight=" + itoa(inflight) + "/batch=" + itoa(n)
}

func itoa(i int) string { return strconv.Itoa(i) }

var benchSeen = engine.ValueSpec{Name: "seen", Type: engine.TypeInt, Mode: engine.ExpireAfterWrite, Expiry: time.Minute}
var benchLast = engine.ValueSpec{Name: "last", Type: engine.TypeString, Mode: engine.ExpireAfterInvoke, Expiry: 30 * time.Second}

func benchBatch(n, id int) *engine.RemoteBatch {
	bt := &engine.RemoteBatch{
		Target: engine.Address{Namespace: "conf", Type: "counter", ID: "b" + itoa(id)},
		States: []engine.StateValue{{Spec: benchSeen, Value: engine.AppendIntWrapper(nil, 41), Present: true}, {Spec: benchLast}},
	}
	for i := 0; i < n; i++ {
		bt.Invocations = append(bt.Invocations, engine.RemoteInvocation{
			Caller: engine.Address{Namespace: "bench", Type: "caller", ID: "c"}, HasCaller: true, Message: engine.String("name")})
	}
	return bt
}

func goAnswer(invs []*pb.ToFunction_Invocation) *pb.FromFunction {
	res := &pb.FromFunction_InvocationResponse{
		StateMutations: []*pb.FromFunction_PersistedValueMutation{{MutationType: pb.FromFunction_PersistedValueMutation_MODIFY,
			StateName: "seen", StateValue: tv(engine.TypeInt, engine.AppendIntWrapper(nil, 42))}},
	}
	for _, inv := range invs {
		res.OutgoingMessages = append(res.OutgoingMessages, &pb.FromFunction_Invocation{Target: inv.Caller, Argument: inv.Argument})
	}
	return result(res)
}

func newBenchGoServer(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		if _, err := readFull(r, body); err != nil {
			w.WriteHeader(400)
			return
		}
		var to pb.ToFunction
		if err := proto.Unmarshal(body, &to); err != nil {
			w.WriteHeader(400)
			return
		}
		out, _ := proto.Marshal(goAnswer(to.GetInvocation().GetInvocations()))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(out)
	}))
	b.Cleanup(srv.Close)
	return srv.URL
}

func readFull(r *http.Request, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Body.Read(buf[n:])
		n += m
		if err != nil {
			if n == len(buf) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// benchInvoke runs b.N batches of n invocations with inflight outstanding;
// each invocation must produce sendsPer outgoing messages.
func benchInvoke(b *testing.B, url, ns string, inflight, n, sendsPer int) {
	c, err := NewClient(Options{Workers: 256, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ep := testEndpoint("")
	ep.Namespace, ep.Type, ep.URLTemplate = ns, "*", url
	ep.MaxConcurrency = inflight
	f, err := c.Function(ep)
	if err != nil {
		b.Fatal(err)
	}
	batches := make([]*engine.RemoteBatch, inflight)
	for i := range batches {
		batches[i] = benchBatch(n, i)
		batches[i].Target.Namespace = ns
	}
	// Warm the connections.
	if r := invoke(b, f, batches[0]); r.Err != nil || len(r.MissingSpecs) > 0 {
		b.Fatalf("warm-up: %+v", r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, inflight)
	var failed sync.Once
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		f.InvokeBatch(batches[i%inflight], func(r *engine.RemoteResult) {
			if r.Err != nil || len(r.Sends) != n*sendsPer {
				failed.Do(func() { b.Errorf("result: err %v, %d sends", r.Err, len(r.Sends)) })
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.ReportMetric(float64(b.N*n)/el.Seconds(), "inv/s")
	if inflight == 1 {
		b.ReportMetric(float64(el.Microseconds())/float64(b.N), "µs/hop")
	}
}
