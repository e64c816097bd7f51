package remote

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// counterFn is a function server that counts invocations in state "count",
// sends one message and writes one egress record per invocation.
func counterFn(failSub int, incompleteSub int) func(n int, r *http.Request, req *pb.ToFunction_InvocationBatchRequest) reply {
	return func(n int, r *http.Request, req *pb.ToFunction_InvocationBatchRequest) reply {
		if n == failSub {
			return reply{status: 400}
		}
		if n == incompleteSub {
			return reply{from: incomplete(&pb.FromFunction_PersistedValueSpec{StateName: "extra", TypeTypename: engine.TypeString})}
		}
		var count int64
		for _, s := range req.State {
			if s.StateName == "count" && s.StateValue != nil {
				count, _ = engine.DecodeLongWrapper(s.StateValue.Value)
			}
		}
		res := &pb.FromFunction_InvocationResponse{}
		for _, inv := range req.Invocations {
			count++
			res.OutgoingMessages = append(res.OutgoingMessages, &pb.FromFunction_Invocation{Target: addr("test", "sink", "s"), Argument: inv.Argument})
			res.OutgoingEgresses = append(res.OutgoingEgresses, &pb.FromFunction_EgressMessage{EgressNamespace: "e", EgressType: "log", Argument: tv(engine.TypeLong, engine.Int64(count).Value)})
		}
		res.StateMutations = []*pb.FromFunction_PersistedValueMutation{{MutationType: pb.FromFunction_PersistedValueMutation_MODIFY, StateName: "count", StateValue: tv(engine.TypeLong, engine.Int64(count).Value)}}
		return reply{from: result(res)}
	}
}

func bigBatch(n, size int) *engine.RemoteBatch {
	b := &engine.RemoteBatch{
		Target: engine.Address{Namespace: "test", Type: "counter", ID: "c"},
		States: []engine.StateValue{{Spec: specCount, Value: engine.Int64(100).Value, Present: true}, {Spec: specName}},
	}
	for i := 0; i < n; i++ {
		b.Invocations = append(b.Invocations, engine.RemoteInvocation{Message: engine.Bytes(bytes.Repeat([]byte{byte('a' + i%26)}, size))})
	}
	return b
}

func TestByteBudgetSplitsAndMerges(t *testing.T) {
	srv := newFnServer(t, counterFn(-1, -1))
	c := newTestClient(t)
	ep := testEndpoint(srv.srv.URL)
	ep.MaxRequestBytes = 1024
	f := newTestFunction(t, c, ep)
	b := bigBatch(10, 300)
	res := invoke(t, f, b)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	reqs := srv.recorded()
	if len(reqs) < 4 {
		t.Fatalf("%d sub-requests, want at least 4 for 10 x 300 bytes under 1024", len(reqs))
	}
	seen := 0
	for i, r := range reqs {
		if srv.sizes[i] > 1024 {
			t.Fatalf("sub-request %d is %d bytes, over the budget", i, srv.sizes[i])
		}
		var count int64
		for _, s := range r.State {
			if s.StateName == "count" {
				count, _ = engine.DecodeLongWrapper(s.StateValue.GetValue())
			}
		}
		if count != int64(100+seen) {
			t.Fatalf("sub-request %d carries count %d, want %d (mutations of the previous one applied)", i, count, 100+seen)
		}
		seen += len(r.Invocations)
	}
	if seen != 10 {
		t.Fatalf("%d invocations sent, want 10", seen)
	}
	if len(res.Mutations) != 1 || res.Mutations[0].Name != "count" {
		t.Fatalf("mutations %+v", res.Mutations)
	}
	if v, _ := engine.DecodeLongWrapper(res.Mutations[0].Value.Value); v != 110 {
		t.Fatalf("merged count %d, want 110", v)
	}
	if len(res.Sends) != 10 || len(res.Egress) != 10 {
		t.Fatalf("%d sends, %d egress", len(res.Sends), len(res.Egress))
	}
	for i := range res.Sends {
		if !bytes.Equal(res.Sends[i].Message.Value, b.Invocations[i].Message.Value) {
			t.Fatalf("send %d out of order", i)
		}
		if v, _ := engine.DecodeLongWrapper(res.Egress[i].Message.Value); v != int64(101+i) {
			t.Fatalf("egress %d = %d", i, v)
		}
	}
	if b.States[0].Value == nil || !bytes.Equal(b.States[0].Value, engine.Int64(100).Value) {
		t.Fatal("the engine's batch was modified")
	}
	if v := counterValue(t, c.metrics.splits, "test/*"); v != float64(len(reqs)) {
		t.Fatalf("split metric %v, want %d", v, len(reqs))
	}
}

func TestByteBudgetSplitFailureIsAllOrNothing(t *testing.T) {
	for _, tc := range []struct {
		name                string
		failSub, incomplete int
	}{{"fail", 2, -1}, {"incomplete", -1, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFnServer(t, counterFn(tc.failSub, tc.incomplete))
			c := newTestClient(t)
			ep := testEndpoint(srv.srv.URL)
			ep.MaxRequestBytes = 1024
			f := newTestFunction(t, c, ep)
			res := invoke(t, f, bigBatch(10, 300))
			if len(res.Mutations)+len(res.Sends)+len(res.Egress) != 0 {
				t.Fatalf("partial effects leaked: %+v", res)
			}
			if tc.failSub > 0 && (res.Err == nil || !strings.Contains(res.Err.Error(), "sub-request")) {
				t.Fatalf("want a sub-request error, got %+v", res)
			}
			if tc.incomplete > 0 && (res.Err != nil || len(res.MissingSpecs) != 1) {
				t.Fatalf("want missing specs only, got %+v", res)
			}
		})
	}
}

func TestSingleOversizedInvocationStillSent(t *testing.T) {
	srv := newFnServer(t, counterFn(-1, -1))
	c := newTestClient(t)
	ep := testEndpoint(srv.srv.URL)
	ep.MaxRequestBytes = 1024
	f := newTestFunction(t, c, ep)
	res := invoke(t, f, bigBatch(3, 2000))
	if res.Err != nil || len(res.Sends) != 3 || srv.calls.Load() != 3 {
		t.Fatalf("calls %d, result %+v", srv.calls.Load(), res.Err)
	}
}
