package remote

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// TypeUnset is the type name StateFun records for a state spec declared
// without a type; a MODIFY of such a state may carry any type name.
const TypeUnset = "io.statefun.types/unset"

// Addresses and names with a meaning to shardfn. StateFun's protocol has no
// reply and only namespace/type egress names, so remote functions use these:
const (
	// EgressNamespace: an egress message to "shardfn/<name>" goes to the
	// engine's egress log <name> (e.g. shardfn/ride-events -> ride-events).
	// Any other egress keeps its full "namespace/type" name.
	EgressNamespace = "shardfn"
	// ReplyNamespace and ReplyType: a request that waits for a reply reaches
	// the function with caller address shardfn/reply/<token>; a message sent
	// to that address answers it. The engine (not this package) implements
	// the reply side.
	ReplyNamespace = "shardfn"
	ReplyType      = "reply"
)

// Reasons a response is rejected (the "reason" label of the
// shardfn_remote_bad_responses_total counter).
const (
	reasonProtobuf     = "protobuf"
	reasonState        = "state"
	reasonStateType    = "state_type"
	reasonTarget       = "target"
	reasonToken        = "token"
	reasonDelay        = "delay"
	reasonEgress       = "egress"
	reasonSpec         = "spec"
	reasonTooLarge     = "too_large"
	reasonContentType  = "content_type"
	reasonMissingValue = "missing_value"
)

// ErrBadResponse is wrapped by every response validation failure.
var ErrBadResponse = errors.New("remote: bad response")

// responseError is a validation failure with its metric reason.
type responseError struct {
	reason string
	msg    string
}

func (e *responseError) Error() string { return "remote: bad response: " + e.msg }
func (e *responseError) Unwrap() error { return ErrBadResponse }

func badf(reason, format string, args ...any) error {
	return &responseError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// buildRequest encodes one ToFunction for target with the given states and
// invocations.
func buildRequest(target engine.Address, states []engine.StateValue, invs []engine.RemoteInvocation) *pb.ToFunction {
	req := &pb.ToFunction_InvocationBatchRequest{
		Target:      pbAddress(target),
		State:       make([]*pb.ToFunction_PersistedValue, len(states)),
		Invocations: make([]*pb.ToFunction_Invocation, len(invs)),
	}
	for i, s := range states {
		pv := &pb.ToFunction_PersistedValue{StateName: s.Spec.Name}
		if s.Present {
			pv.StateValue = &pb.TypedValue{Typename: stateTypeName(s.Spec.Type), HasValue: true, Value: s.Value}
		}
		req.State[i] = pv
	}
	for i, inv := range invs {
		req.Invocations[i] = pbInvocation(inv)
	}
	return &pb.ToFunction{Request: &pb.ToFunction_Invocation_{Invocation: req}}
}

func pbInvocation(inv engine.RemoteInvocation) *pb.ToFunction_Invocation {
	out := &pb.ToFunction_Invocation{
		Argument: &pb.TypedValue{Typename: inv.Message.Type, HasValue: true, Value: inv.Message.Value},
	}
	if inv.HasCaller {
		out.Caller = pbAddress(inv.Caller)
	}
	return out
}

func pbAddress(a engine.Address) *pb.Address {
	return &pb.Address{Namespace: a.Namespace, Type: a.Type, Id: a.ID}
}

func stateTypeName(t string) string {
	if t == "" {
		return TypeUnset
	}
	return t
}

// invocationSize is the encoded size of one invocation inside an
// InvocationBatchRequest, field tag and length prefix included.
func invocationSize(inv engine.RemoteInvocation) int {
	return 1 + protowire.SizeBytes(proto.Size(pbInvocation(inv)))
}

// response is a decoded, validated FromFunction.
type response struct {
	missing []engine.ValueSpec
	result  engine.RemoteResult
}

// decodeResponse parses and validates a FromFunction body against the specs
// of the batch (states). It never panics; every rejection is a
// *responseError wrapping ErrBadResponse.
func decodeResponse(body []byte, states []engine.StateValue) (*response, error) {
	var from pb.FromFunction
	if err := proto.Unmarshal(body, &from); err != nil {
		return nil, badf(reasonProtobuf, "FromFunction does not parse: %v", err)
	}
	out := &response{}
	switch r := from.Response.(type) {
	case nil:
		// Neither set: no side effects, the batch is done.
		return out, nil
	case *pb.FromFunction_IncompleteInvocationContext_:
		ctx := r.IncompleteInvocationContext
		if ctx == nil || len(ctx.MissingValues) == 0 {
			return nil, badf(reasonSpec, "incomplete_invocation_context lists no missing values")
		}
		for i, mv := range ctx.MissingValues {
			spec, err := valueSpec(mv)
			if err != nil {
				return nil, badf(reasonSpec, "missing_values[%d]: %v", i, err)
			}
			out.missing = append(out.missing, spec)
		}
		return out, nil
	case *pb.FromFunction_InvocationResult:
		if r.InvocationResult == nil {
			return out, nil
		}
		if err := convertResult(r.InvocationResult, states, &out.result); err != nil {
			return nil, err
		}
		return out, nil
	default:
		return nil, badf(reasonProtobuf, "unknown response case %T", r)
	}
}

func valueSpec(mv *pb.FromFunction_PersistedValueSpec) (engine.ValueSpec, error) {
	if mv == nil {
		return engine.ValueSpec{}, fmt.Errorf("null spec")
	}
	if !engine.ValidStateName(mv.StateName) {
		return engine.ValueSpec{}, fmt.Errorf("state name %q: want [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes", mv.StateName)
	}
	spec := engine.ValueSpec{Name: mv.StateName, Type: stateTypeName(mv.TypeTypename)}
	if e := mv.ExpirationSpec; e != nil {
		if e.ExpireAfterMillis < 0 {
			return spec, fmt.Errorf("state %q: negative expire_after_millis %d", mv.StateName, e.ExpireAfterMillis)
		}
		if e.ExpireAfterMillis > int64(time.Duration(1<<62)/time.Millisecond) {
			return spec, fmt.Errorf("state %q: expire_after_millis %d out of range", mv.StateName, e.ExpireAfterMillis)
		}
		d := time.Duration(e.ExpireAfterMillis) * time.Millisecond
		switch e.Mode {
		case pb.FromFunction_ExpirationSpec_NONE:
		case pb.FromFunction_ExpirationSpec_AFTER_WRITE:
			spec.Mode, spec.Expiry = engine.ExpireAfterWrite, d
		case pb.FromFunction_ExpirationSpec_AFTER_INVOKE:
			spec.Mode, spec.Expiry = engine.ExpireAfterInvoke, d
		default:
			return spec, fmt.Errorf("state %q: unknown expire mode %d", mv.StateName, e.Mode)
		}
		if spec.Mode != engine.ExpireNever && d == 0 {
			return spec, fmt.Errorf("state %q: expiry mode %v with zero expire_after_millis", mv.StateName, e.Mode)
		}
	}
	return spec, nil
}

func convertResult(r *pb.FromFunction_InvocationResponse, states []engine.StateValue, out *engine.RemoteResult) error {
	for i, m := range r.StateMutations {
		if m == nil {
			return badf(reasonState, "state_mutations[%d] is null", i)
		}
		spec, ok := findSpec(states, m.StateName)
		if !ok {
			return badf(reasonState, "state_mutations[%d]: state %q is not registered for %s", i, m.StateName, "this function type")
		}
		switch m.MutationType {
		case pb.FromFunction_PersistedValueMutation_DELETE:
			out.Mutations = append(out.Mutations, engine.StateMutation{Name: m.StateName, Delete: true})
		case pb.FromFunction_PersistedValueMutation_MODIFY:
			if m.StateValue == nil {
				return badf(reasonMissingValue, "state_mutations[%d]: MODIFY of %q without state_value", i, m.StateName)
			}
			want := stateTypeName(spec.Type)
			if want != TypeUnset && m.StateValue.Typename != want {
				return badf(reasonStateType, "state_mutations[%d]: MODIFY of %q with type %q, registered type is %q", i, m.StateName, m.StateValue.Typename, want)
			}
			out.Mutations = append(out.Mutations, engine.StateMutation{Name: m.StateName, Value: message(m.StateValue)})
		default:
			return badf(reasonState, "state_mutations[%d]: unknown mutation type %d", i, m.MutationType)
		}
	}
	for i, m := range r.OutgoingMessages {
		if m == nil {
			return badf(reasonTarget, "outgoing_messages[%d] is null", i)
		}
		to, err := address(m.Target)
		if err != nil {
			return badf(reasonTarget, "outgoing_messages[%d]: %v", i, err)
		}
		if m.Argument == nil {
			return badf(reasonMissingValue, "outgoing_messages[%d] to %s has no argument", i, to)
		}
		out.Sends = append(out.Sends, engine.Outgoing{To: to, Message: message(m.Argument)})
	}
	for i, d := range r.DelayedInvocations {
		if d == nil {
			return badf(reasonDelay, "delayed_invocations[%d] is null", i)
		}
		if d.IsCancellationRequest {
			if d.CancellationToken == "" {
				return badf(reasonToken, "delayed_invocations[%d]: cancellation request with an empty token", i)
			}
			out.Cancels = append(out.Cancels, d.CancellationToken)
			continue
		}
		to, err := address(d.Target)
		if err != nil {
			return badf(reasonTarget, "delayed_invocations[%d]: %v", i, err)
		}
		if d.Argument == nil {
			return badf(reasonMissingValue, "delayed_invocations[%d] to %s has no argument", i, to)
		}
		if d.DelayInMs < 0 || d.DelayInMs > int64(time.Duration(1<<62)/time.Millisecond) {
			return badf(reasonDelay, "delayed_invocations[%d]: delay_in_ms %d out of range", i, d.DelayInMs)
		}
		out.Delayed = append(out.Delayed, engine.DelayedSend{
			To: to, Message: message(d.Argument),
			Delay: time.Duration(d.DelayInMs) * time.Millisecond, Token: d.CancellationToken,
		})
	}
	for i, e := range r.OutgoingEgresses {
		if e == nil {
			return badf(reasonEgress, "outgoing_egresses[%d] is null", i)
		}
		if e.EgressNamespace == "" || e.EgressType == "" {
			return badf(reasonEgress, "outgoing_egresses[%d]: egress %q/%q needs a namespace and a type", i, e.EgressNamespace, e.EgressType)
		}
		if e.Argument == nil {
			return badf(reasonMissingValue, "outgoing_egresses[%d] to %s/%s has no argument", i, e.EgressNamespace, e.EgressType)
		}
		name := e.EgressNamespace + "/" + e.EgressType
		if e.EgressNamespace == EgressNamespace {
			name = e.EgressType
		}
		out.Egress = append(out.Egress, engine.EgressOut{Name: name, Message: message(e.Argument)})
	}
	return nil
}

func findSpec(states []engine.StateValue, name string) (engine.ValueSpec, bool) {
	for i := range states {
		if states[i].Spec.Name == name {
			return states[i].Spec, true
		}
	}
	return engine.ValueSpec{}, false
}

func address(a *pb.Address) (engine.Address, error) {
	if a == nil {
		return engine.Address{}, fmt.Errorf("missing target address")
	}
	if a.Namespace == "" || a.Type == "" || a.Id == "" {
		return engine.Address{}, fmt.Errorf("incomplete target address %q/%q/%q", a.Namespace, a.Type, a.Id)
	}
	return engine.Address{Namespace: a.Namespace, Type: a.Type, ID: a.Id}, nil
}

func message(tv *pb.TypedValue) engine.Message {
	m := engine.Message{Type: tv.Typename}
	if tv.HasValue || len(tv.Value) > 0 {
		m.Value = tv.Value
		if m.Value == nil {
			m.Value = []byte{}
		}
	}
	return m
}
