package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/shardfn/shardfn/internal/format"
	"strings"

	"github.com/shardfn/shardfn/shard"
)

// repairType is the reserved message type of state repair (SetState).
// Ingress and functions may not send it: Send, SendBatch, Request and a
// function's sends refuse it with ErrBadMessage.
const repairType = shard.RepairType

// repairResultType is the type of the reply to a repair message: an empty
// payload when applied, else one code byte and the reason.
const repairResultType = "shardfn/state-repair-result"

// Codes of a refused repair (the first byte of a non-empty result).
const (
	repairBad       = 1 // undecodable (never from SetState)
	repairUndecl    = 2 // a named state is not declared (any more)
	repairWrongType = 3 // a value's type does not match its spec
	repairTooLarge  = 4 // a value is over MaxStateBytes
)

// SetState repairs an instance's state: it sets or deletes named values
// (StateMutation.Delete) as one write that goes through the log exactly like
// an invocation's. The write is queued at the instance behind the messages
// already queued there, runs on the instance's shard (for remote function
// types too, without calling the endpoint), and SetState returns once its
// effect record is durable. Every mutation must name a declared value spec
// of the function type (for remote types: one the endpoint has registered)
// and, for a set, carry a value of the spec's type (Value.Type; any type for
// specs registered without one). Either all mutations apply or none.
//
// The instance's function is not invoked. ctx bounds the wait: when it ends
// first the repair may still be applied.
func (e *Engine) SetState(ctx context.Context, addr Address, muts []StateMutation) error {
	if addr.Namespace == "" || addr.Type == "" || addr.ID == "" {
		return fmt.Errorf("%w: %q: namespace, type and id must all be non-empty", ErrBadAddress, addr.String())
	}
	fe := e.reg.lookup(addr.Namespace, addr.Type)
	if fe == nil {
		return fmt.Errorf("%w: %s/%s is not registered", ErrUnknownType, addr.Namespace, addr.Type)
	}
	if len(muts) == 0 {
		return fmt.Errorf("%w: state repair of %s has no mutations", ErrBadMessage, addr)
	}
	specs := fe.ft.Specs()
	seen := make(map[string]bool, len(muts))
	for _, m := range muts {
		if seen[m.Name] {
			return fmt.Errorf("%w: state %q appears twice in one repair", ErrBadMessage, m.Name)
		}
		seen[m.Name] = true
		sp, ok := findSpec(specs, m.Name)
		if !ok {
			return undeclaredError(fe, m.Name, specs)
		}
		if m.Delete {
			continue
		}
		if typedSpec(sp.Type) && m.Value.Type != sp.Type {
			return fmt.Errorf("%w: state %q of %s is declared as %q; the value is %q", ErrStateType, m.Name, fe.name, sp.Type, m.Value.Type)
		}
		if m.Value.Type == "" {
			return fmt.Errorf("%w: state %q of %s has no declared type; give the value's type", ErrBadMessage, m.Name, fe.name)
		}
		if len(m.Value.Value) > e.opts.MaxStateBytes {
			return fmt.Errorf("%w: state %q is %d bytes, limit %d (MaxStateBytes)", ErrTooLarge, m.Name, len(m.Value.Value), e.opts.MaxStateBytes)
		}
	}
	reply, err := e.requestReserved(ctx, addr, Message{Type: repairType, Value: encodeRepair(muts)})
	if err != nil {
		return fmt.Errorf("engine: state repair of %s: %w", addr, err)
	}
	if reply.Type != repairResultType {
		return fmt.Errorf("engine: state repair of %s: unexpected reply type %q", addr, reply.Type)
	}
	if len(reply.Value) == 0 {
		return nil
	}
	var base error
	switch reply.Value[0] {
	case repairUndecl:
		base = ErrUndeclared
	case repairWrongType:
		base = ErrStateType
	case repairTooLarge:
		base = ErrTooLarge
	default:
		base = ErrBadMessage
	}
	return fmt.Errorf("%w: state repair of %s: %s", base, addr, reply.Value[1:])
}

func findSpec(specs []shard.StateSpec, name string) (shard.StateSpec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return shard.StateSpec{}, false
}

// typedSpec reports whether a spec's type is concrete (remote specs may be
// registered without one).
func typedSpec(t string) bool { return t != "" && t != "io.statefun.types/unset" }

func undeclaredError(fe *funcEntry, name string, specs []shard.StateSpec) error {
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		names = append(names, s.Name)
	}
	for _, m := range fe.ft.MapNames {
		if m == name {
			return fmt.Errorf("%w: state %q of %s is a map state; SetState repairs single values (a function of the type can rewrite its map)", ErrUndeclared, name, fe.name)
		}
	}
	hint := "declared: " + strings.Join(names, ", ")
	if len(names) == 0 {
		hint = "it declares none"
	}
	if fe.remote != nil {
		hint += "; a remote function's states are known once an invocation has registered them"
	}
	return fmt.Errorf("%w: state %q is not declared by %s (%s)", ErrUndeclared, name, fe.name, hint)
}

// Repair payload (in flight only, never stored beyond the log's life of
// the message): uvarint n, n × (u8 op 0 set / 1 delete, uvarint-prefixed
// name, type, value).
func encodeRepair(muts []StateMutation) []byte {
	n := 10
	for _, m := range muts {
		n += 1 + 30 + len(m.Name) + len(m.Value.Type) + len(m.Value.Value)
	}
	b := binary.AppendUvarint(make([]byte, 0, n), uint64(len(muts)))
	for _, m := range muts {
		op := byte(0)
		if m.Delete {
			op = 1
		}
		b = append(b, op)
		b = binary.AppendUvarint(b, uint64(len(m.Name)))
		b = append(b, m.Name...)
		b = binary.AppendUvarint(b, uint64(len(m.Value.Type)))
		b = append(b, m.Value.Type...)
		b = binary.AppendUvarint(b, uint64(len(m.Value.Value)))
		b = append(b, m.Value.Value...)
	}
	return b
}

var errRepairPayload = errors.New("malformed state repair payload")

// decodeRepair decodes a repair payload; values alias b.
func decodeRepair(b []byte) ([]StateMutation, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errRepairPayload
	}
	b = b[k:]
	field := func() ([]byte, bool) {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return nil, false
		}
		f := b[k : k+int(l)]
		b = b[k+int(l):]
		return f, true
	}
	out := make([]StateMutation, 0, n)
	for i := uint64(0); i < n; i++ {
		if len(b) == 0 || b[0] > 1 {
			return nil, errRepairPayload
		}
		del := b[0] == 1
		b = b[1:]
		name, ok1 := field()
		typ, ok2 := field()
		val, ok3 := field()
		if !ok1 || !ok2 || !ok3 {
			return nil, errRepairPayload
		}
		out = append(out, StateMutation{Name: string(name), Delete: del, Value: Message{Type: string(typ), Value: val}})
	}
	if len(b) != 0 {
		return nil, errRepairPayload
	}
	return out, nil
}

// repair applies a repairType message on the instance's shard, in place of
// an invocation of its function. It validates every mutation against the
// specs the invocation sees before applying any, and answers the waiting
// SetState with the outcome; a refused repair consumes the message with no
// state change (it is not a dead letter).
func (h *shardHandler) repair(inv *shard.Invocation, payload []byte) error {
	refuse := func(code byte, format string, args ...any) error {
		inv.Reply(repairResultType, append([]byte{code}, fmt.Sprintf(format, args...)...))
		return nil
	}
	muts, err := decodeRepair(payload)
	if err != nil {
		return refuse(repairBad, "%v", err)
	}
	idx := make([]int, len(muts))
	for k, m := range muts {
		i := inv.StateIndex(m.Name)
		if i < 0 {
			return refuse(repairUndecl, "state %q is not declared by %s", m.Name, inv.Self().FunctionType())
		}
		idx[k] = i
		if m.Delete {
			continue
		}
		if t := inv.StateSpec(i).Type; typedSpec(t) && t != m.Value.Type {
			return refuse(repairWrongType, "state %q is declared as %q; the value is %q", m.Name, t, m.Value.Type)
		}
		if len(m.Value.Value) > h.e.opts.MaxStateBytes {
			return refuse(repairTooLarge, "state %q is %d bytes, limit %d", m.Name, len(m.Value.Value), h.e.opts.MaxStateBytes)
		}
	}
	for k, m := range muts {
		if m.Delete {
			inv.Remove(idx[k])
		} else if err := inv.Set(idx[k], m.Value.Value); err != nil {
			return err // checked above; a failure here discards everything
		}
	}
	inv.Reply(repairResultType, nil)
	return nil
}

// errReserved refuses repairType on the public paths.
var errReserved = fmt.Errorf("%w: message type %q is reserved for state repair (Engine.SetState, or PUT /state on the admin listener)", ErrBadMessage, repairType)

// validateInternal is validate for the engine's own messages, which may be
// of the reserved type.
// (A repair is not an ingress message: the function type's IngressTypes do
// not apply to it.)
func (e *Engine) validateInternal(to Address, msg Message) error {
	if msg.Type == repairType {
		msg.Type = repairResultType // any non-reserved name: the other checks are the same
	}
	return e.validateShape(to, msg)
}

// requestReserved is Request for the engine's own messages (repairType).
func (e *Engine) requestReserved(ctx context.Context, to Address, msg Message) (Message, error) {
	if err := e.enter(); err != nil {
		return Message{}, err
	}
	adm := admission{e: e}
	defer adm.leave()
	if err := e.validateInternal(to, msg); err != nil {
		return Message{}, err
	}
	if err := e.clusterOwner(to); err != nil { // cluster mode only (cluster_ops.go)
		return Message{}, err
	}
	id, err := e.newID()
	if err != nil {
		return Message{}, err
	}
	ack := format.NewAck(1)
	ch := e.requests.add(id)
	defer e.requests.remove(id, ch)
	env := format.Envelope{ID: id, Target: to, Type: msg.Type, Payload: msg.Value, ReplyTo: id, Ack: ack}
	if err := e.push(&env); err != nil {
		return Message{}, err
	}
	adm.leave()
	return e.awaitReply(ctx, to, ch, ack)
}
