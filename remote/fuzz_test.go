package remote

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// FuzzDecodeResponse feeds arbitrary bytes to the response decoder: it must
// never panic, and whatever it accepts must satisfy every documented
// validation rule. Seeds: valid responses of each kind (more in
// testdata/fuzz/FuzzDecodeResponse).
func FuzzDecodeResponse(f *testing.F) {
	mod := pb.FromFunction_PersistedValueMutation_MODIFY
	seeds := []*pb.FromFunction{
		{},
		result(&pb.FromFunction_InvocationResponse{
			StateMutations: []*pb.FromFunction_PersistedValueMutation{
				{MutationType: mod, StateName: "count", StateValue: tv(engine.TypeLong, engine.Int64(3).Value)},
				{StateName: "loose"},
			},
			OutgoingMessages:   []*pb.FromFunction_Invocation{{Target: addr("a", "b", "c"), Argument: tv("x/y", []byte("z"))}},
			DelayedInvocations: []*pb.FromFunction_DelayedInvocation{{DelayInMs: 10, Target: addr("a", "b", "c"), Argument: tv("x/y", nil), CancellationToken: "t"}, {IsCancellationRequest: true, CancellationToken: "t"}},
			OutgoingEgresses:   []*pb.FromFunction_EgressMessage{{EgressNamespace: "e", EgressType: "f", Argument: tv("x/y", nil)}},
		}),
		incomplete(&pb.FromFunction_PersistedValueSpec{StateName: "s", TypeTypename: engine.TypeInt,
			ExpirationSpec: &pb.FromFunction_ExpirationSpec{Mode: pb.FromFunction_ExpirationSpec_AFTER_INVOKE, ExpireAfterMillis: 5}}),
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	states := []engine.StateValue{
		{Spec: engine.ValueSpec{Name: "count", Type: engine.TypeLong}},
		{Spec: engine.ValueSpec{Name: "loose"}},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := decodeResponse(data, states)
		if err != nil {
			if resp != nil {
				t.Fatal("error with a response")
			}
			if !strings.HasPrefix(err.Error(), "remote: bad response: ") {
				t.Fatalf("unclear error %q", err)
			}
			return
		}
		if len(resp.missing) > 0 && (len(resp.result.Mutations)+len(resp.result.Sends)) > 0 {
			t.Fatal("both missing specs and effects")
		}
		for _, s := range resp.missing {
			if !engine.ValidStateName(s.Name) || s.Type == "" || s.Expiry < 0 {
				t.Fatalf("bad spec accepted: %+v", s)
			}
		}
		r := resp.result
		for _, m := range r.Mutations {
			spec, ok := findSpec(states, m.Name)
			if !ok {
				t.Fatalf("mutation of unregistered %q accepted", m.Name)
			}
			if !m.Delete && spec.Type != "" && m.Value.Type != spec.Type {
				t.Fatalf("MODIFY of %q with type %q accepted", m.Name, m.Value.Type)
			}
		}
		for _, s := range r.Sends {
			if s.To.Namespace == "" || s.To.Type == "" || s.To.ID == "" {
				t.Fatalf("send to %v accepted", s.To)
			}
		}
		for _, d := range r.Delayed {
			if d.To.Namespace == "" || d.To.Type == "" || d.To.ID == "" || d.Delay < 0 {
				t.Fatalf("delayed send %+v accepted", d)
			}
		}
		for _, c := range r.Cancels {
			if c == "" {
				t.Fatal("empty cancellation token accepted")
			}
		}
		for _, e := range r.Egress {
			if i := strings.LastIndexByte(e.Name, '/'); e.Name == "" || i == 0 || i == len(e.Name)-1 {
				t.Fatalf("egress name %q accepted", e.Name)
			}
		}
	})
}
