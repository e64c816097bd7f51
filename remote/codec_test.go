package remote

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// TestInvocationSize checks invocationSize against what protobuf encodes:
// adding one invocation to a batch grows it by exactly that many bytes,
// across the lengths where the length prefix takes one, two and three bytes.
func TestInvocationSize(t *testing.T) {
	for _, n := range []int{0, 1, 100, 127, 128, 16000, 16384, 70000} {
		inv := engine.RemoteInvocation{Message: engine.Message{Type: "t/x", Value: []byte(strings.Repeat("v", n))}}
		empty := proto.Size(&pb.ToFunction_InvocationBatchRequest{})
		one := proto.Size(&pb.ToFunction_InvocationBatchRequest{Invocations: []*pb.ToFunction_Invocation{pbInvocation(inv)}})
		if got, want := invocationSize(inv), one-empty; got != want {
			t.Errorf("body of %d bytes: invocationSize = %d, protobuf adds %d", n, got, want)
		}
	}
}
