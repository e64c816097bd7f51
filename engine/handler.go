package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/shard"
)

// ReplyNamespace and ReplyType form the address remote functions send to in
// order to answer the request that started their chain: a message to
// "shardfn/reply/<any id>" becomes the chain's Reply. (StateFun has no reply
// primitive; this convention gives remote SDK functions one.)
const (
	ReplyNamespace = "shardfn"
	ReplyType      = "reply"
)

// shardHandler is the engine side of one shard (shard.Handler). It runs on
// that shard's goroutine only, except StartAsync's callbacks.
type shardHandler struct {
	e     *Engine
	idx   int
	cache map[fnKey]*funcEntry
	ctx   invCtx
	tick  uint32
}

var _ shard.Handler = (*shardHandler)(nil)

func newShardHandler(e *Engine, idx int) *shardHandler {
	h := &shardHandler{e: e, idx: idx, cache: map[fnKey]*funcEntry{}}
	h.ctx.e = e
	return h
}

func (h *shardHandler) Lookup(ns, typ string) *shard.FuncType {
	if fe := h.cache[fnKey{ns, typ}]; fe != nil {
		return fe.ft
	}
	fe := h.e.reg.lookup(ns, typ)
	if fe == nil {
		return nil
	}
	h.cache[fnKey{ns, typ}] = fe
	return fe.ft
}

// latencySample: one invocation in latencySample is timed for the latency
// histogram, so that the hot path does not read the clock twice per
// message.
const latencySample = 32

func (h *shardHandler) Invoke(inv *shard.Invocation) error {
	typ, payload := inv.Message()
	if typ == repairType {
		return h.repair(inv, payload) // state repair (repair.go): not the function's
	}
	fe := h.e.reg.byID(inv.Func().ID)
	if len(fe.counts) > h.idx {
		fe.counts[h.idx].n.Add(1)
	}
	h.ctx.inv = inv
	h.tick++
	var err error
	if h.tick%latencySample == 0 {
		start := time.Now()
		err = fe.fn.Invoke(&h.ctx, Message{Type: typ, Value: payload})
		h.e.metrics.observeInvoke(fe, time.Since(start))
	} else {
		err = fe.fn.Invoke(&h.ctx, Message{Type: typ, Value: payload})
	}
	h.ctx.inv = nil
	if err != nil && len(fe.fails) > h.idx {
		fe.fails[h.idx].n.Add(1)
	}
	return err
}

func (h *shardHandler) StartAsync(call *shard.AsyncCall) {
	fe := h.e.reg.byID(call.Fn.ID)
	b := &RemoteBatch{Target: call.Target, Closing: h.e.closing, Trace: spanContext(call.Trace)}
	for _, st := range call.States {
		b.States = append(b.States, StateValue{Spec: fromShardSpec(st.Spec), Value: st.Value, Present: st.Present})
	}
	for i := range call.Messages {
		m := &call.Messages[i]
		b.Invocations = append(b.Invocations, RemoteInvocation{
			Caller: m.Caller, HasCaller: !m.Caller.IsZero(),
			Message: Message{Type: m.Type, Value: m.Payload},
		})
	}
	start := time.Now()
	fe.remote.InvokeBatch(b, func(r *RemoteResult) {
		h.e.metrics.observeRemote(fe, time.Since(start))
		if r == nil {
			r = &RemoteResult{}
		}
		call.Resume = func(inv *shard.Invocation) (bool, error) { return h.resume(inv, call, fe, r) }
		call.Shard().Complete(call)
	})
}

// resume applies a remote function's result r through inv (on the shard).
func (h *shardHandler) resume(inv *shard.Invocation, call *shard.AsyncCall, fe *funcEntry, r *RemoteResult) (bool, error) {
	if r.Err != nil && errors.Is(r.Err, ErrAbandoned) {
		return false, abandonedResume(fe, r) // not applied: left for the next Open
	}
	if len(fe.counts) > h.idx {
		fe.counts[h.idx].n.Add(uint64(len(call.Messages)))
	}
	if r.Err != nil {
		if len(fe.fails) > h.idx {
			fe.fails[h.idx].n.Add(1)
		}
		return false, r.Err
	}
	if len(r.MissingSpecs) > 0 {
		if call.Attempts > 5 {
			return false, fmt.Errorf("remote function %s still reports missing state specs after %d attempts", fe.name, call.Attempts)
		}
		if err := h.e.reg.addSpecs(fe, r.MissingSpecs); err != nil {
			return false, err
		}
		return true, nil
	}
	for _, m := range r.Mutations {
		i := inv.StateIndex(m.Name)
		if i < 0 {
			return false, fmt.Errorf("remote function %s mutated undeclared state %q", fe.name, m.Name)
		}
		if m.Delete {
			inv.Remove(i)
			continue
		}
		if want := inv.StateSpec(i).Type; want != "" && want != "io.statefun.types/unset" && m.Value.Type != want {
			return false, fmt.Errorf("%w: remote function %s wrote state %q as %q, registered as %q", ErrStateType, fe.name, m.Name, m.Value.Type, want)
		}
		if err := inv.Set(i, m.Value.Value); err != nil {
			return false, err
		}
	}
	max := h.e.opts.MaxMessageBytes
	for _, s := range r.Sends {
		if s.To.Namespace == ReplyNamespace && s.To.Type == ReplyType {
			inv.Reply(s.Message.Type, s.Message.Value)
			continue
		}
		if err := checkOut(s.To, s.Message, max); err != nil {
			return false, err
		}
		inv.Send(s.To, s.Message.Type, s.Message.Value)
	}
	for _, d := range r.Delayed {
		if err := checkOut(d.To, d.Message, max); err != nil {
			return false, err
		}
		if d.Delay < 0 {
			return false, fmt.Errorf("remote function %s sent a message with negative delay %v", fe.name, d.Delay)
		}
		inv.SendAfter(int64(d.Delay), d.To, d.Message.Type, d.Message.Value, d.Token)
	}
	for _, c := range r.Cancels {
		if c == "" {
			return false, fmt.Errorf("remote function %s cancelled a delayed message with an empty token", fe.name)
		}
		inv.Cancel(c)
	}
	for _, eg := range r.Egress {
		if eg.Name == "" {
			return false, fmt.Errorf("remote function %s wrote egress with no name", fe.name)
		}
		inv.Egress(eg.Name, eg.Message.Type, eg.Message.Value)
	}
	return false, nil
}

func checkOut(to Address, m Message, max int) error {
	if to.Namespace == "" || to.Type == "" || to.ID == "" {
		return fmt.Errorf("%w: send to %q: namespace, type and id must all be non-empty", ErrBadAddress, to.String())
	}
	if m.Type == "" {
		return fmt.Errorf("%w: send to %s: message has no type name", ErrBadMessage, to)
	}
	if m.Type == repairType {
		return fmt.Errorf("send to %s: %w", to, errReserved)
	}
	if len(m.Value) > max {
		return fmt.Errorf("%w: send to %s: %d bytes, limit %d", ErrTooLarge, to, len(m.Value), max)
	}
	return nil
}

// Reply delivers a durable reply. The reply of an idempotent request
// (format.ReplyKeep) is also remembered until the store has it, for its
// retries.
func (h *shardHandler) Reply(reqID uint64, typ string, payload []byte) {
	m := Message{Type: typ, Value: payload}
	if reqID&format.ReplyKeep != 0 {
		reqID &^= format.ReplyKeep
		h.e.keepReply(reqID, m)
	}
	if !h.e.requests.deliver(reqID, m) && h.e.cl == nil {
		// (In cluster mode the reply went to the replies topic in the
		// transaction that committed it: ClusterReply.)
		h.e.metrics.repliesDropped.Inc()
	}
}

func (h *shardHandler) DeadLetter(target Address, typ string, err error) {
	h.e.metrics.deadLetters.Inc()
	h.e.logger.Warn("invocation failed; message sent to dead-letters", "target", target.String(), "type", typ, "err", err)
}

// invCtx implements Context over a shard.Invocation. One per shard,
// reused for every invocation (no allocation).
type invCtx struct {
	e       *Engine
	inv     *shard.Invocation
	scratch []byte
}

var _ Context = (*invCtx)(nil)

func (c *invCtx) Self() Address                     { return c.inv.Self() }
func (c *invCtx) Caller() (Address, bool)           { return c.inv.Caller() }
func (c *invCtx) Now() time.Time                    { return time.Unix(0, c.inv.Now()) }
func (c *invCtx) Cancel(token string)               { c.inv.Cancel(token) }
func (c *invCtx) Reply(msg Message)                 { c.inv.Reply(msg.Type, msg.Value) }
func (c *invCtx) Egress(name string, msg Message)   { c.egress(name, msg) }
func (c *invCtx) Send(to Address, msg Message)      { c.send(0, to, msg, "") }
func (c *invCtx) Get(spec ValueSpec) ([]byte, bool) { return c.get(spec) }

func (c *invCtx) egress(name string, msg Message) {
	if name == "" {
		c.inv.Fail(fmt.Errorf("%w: egress with no name", ErrBadMessage))
		return
	}
	if len(msg.Value) > c.e.opts.MaxMessageBytes {
		c.inv.Fail(fmt.Errorf("%w: egress %s: %d bytes, limit %d", ErrTooLarge, name, len(msg.Value), c.e.opts.MaxMessageBytes))
		return
	}
	c.inv.Egress(name, msg.Type, msg.Value)
}

func (c *invCtx) SendAfter(delay time.Duration, to Address, msg Message, token string) {
	if delay < 0 {
		c.inv.Fail(fmt.Errorf("%w: negative delay %v", ErrBadMessage, delay))
		return
	}
	if delay == 0 {
		delay = 1 // still a delayed (durable, cancellable) message
	}
	c.send(int64(delay), to, msg, token)
}

func (c *invCtx) send(delay int64, to Address, msg Message, token string) {
	if err := checkOut(to, msg, c.e.opts.MaxMessageBytes); err != nil {
		c.inv.Fail(err)
		return
	}
	if delay == 0 {
		c.inv.Send(to, msg.Type, msg.Value)
	} else {
		c.inv.SendAfter(delay, to, msg.Type, msg.Value, token)
	}
}

func (c *invCtx) index(spec ValueSpec) (int, error) {
	i := c.inv.StateIndex(spec.Name)
	if i < 0 {
		return -1, fmt.Errorf("%w: %q is not declared by %s", ErrUndeclared, spec.Name, c.inv.Self().FunctionType())
	}
	return i, nil
}

func (c *invCtx) get(spec ValueSpec) ([]byte, bool) {
	i := c.inv.StateIndex(spec.Name)
	if i < 0 {
		return nil, false
	}
	return c.inv.Get(i)
}

func (c *invCtx) MapGet(spec MapSpec, key string) ([]byte, bool, error) {
	return c.inv.MapGet(spec.Name, key)
}

func (c *invCtx) MapSet(spec MapSpec, key string, value []byte) error {
	return c.inv.MapSet(spec.Name, key, value)
}

func (c *invCtx) MapDelete(spec MapSpec, key string) error { return c.inv.MapDelete(spec.Name, key) }
func (c *invCtx) MapClear(spec MapSpec) error              { return c.inv.MapClear(spec.Name) }
func (c *invCtx) MapLen(spec MapSpec) (int, error)         { return c.inv.MapLen(spec.Name) }

func (c *invCtx) MapRange(spec MapSpec, fn func(key string, value []byte) bool) error {
	return c.inv.MapRange(spec.Name, fn)
}

func (c *invCtx) Set(spec ValueSpec, value []byte) error {
	i, err := c.index(spec)
	if err != nil {
		return err
	}
	return c.inv.Set(i, value)
}

func (c *invCtx) Remove(spec ValueSpec) error {
	i, err := c.index(spec)
	if err != nil {
		return err
	}
	c.inv.Remove(i)
	return nil
}

func (c *invCtx) typed(spec ValueSpec, want string) (int, error) {
	i, err := c.index(spec)
	if err != nil {
		return -1, err
	}
	if t := c.inv.StateSpec(i).Type; t != want {
		return -1, fmt.Errorf("%w: %q is declared as %q, not %q", ErrStateType, spec.Name, t, want)
	}
	return i, nil
}

func (c *invCtx) GetString(spec ValueSpec) (string, bool, error) {
	i, err := c.typed(spec, TypeString)
	if err != nil {
		return "", false, err
	}
	v, ok := c.inv.Get(i)
	if !ok {
		return "", false, nil
	}
	s, err := DecodeStringWrapper(v)
	return s, true, err
}

func (c *invCtx) SetString(spec ValueSpec, v string) error {
	i, err := c.typed(spec, TypeString)
	if err != nil {
		return err
	}
	c.scratch = AppendStringWrapper(c.scratch[:0], v)
	return c.inv.Set(i, c.scratch)
}

func (c *invCtx) GetInt64(spec ValueSpec) (int64, bool, error) {
	i, err := c.typed(spec, TypeLong)
	if err != nil {
		return 0, false, err
	}
	v, ok := c.inv.Get(i)
	if !ok {
		return 0, false, nil
	}
	n, err := DecodeLongWrapper(v)
	return n, true, err
}

func (c *invCtx) SetInt64(spec ValueSpec, v int64) error {
	i, err := c.typed(spec, TypeLong)
	if err != nil {
		return err
	}
	c.scratch = AppendLongWrapper(c.scratch[:0], v)
	return c.inv.Set(i, c.scratch)
}

func (c *invCtx) GetJSON(spec ValueSpec, v any) (bool, error) {
	i, err := c.index(spec)
	if err != nil {
		return false, err
	}
	b, ok := c.inv.Get(i)
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("%w: state %q is not valid JSON for %T: %v", ErrStateType, spec.Name, v, err)
	}
	return true, nil
}

func (c *invCtx) SetJSON(spec ValueSpec, v any) error {
	i, err := c.index(spec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: state %q: %v", ErrBadMessage, spec.Name, err)
	}
	return c.inv.Set(i, b)
}
