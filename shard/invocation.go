package shard

import (
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/internal/format"
)

// Errors of state access through an Invocation.
var (
	ErrStateTooLarge = errors.New("shard: state value too large")
)

// Invocation is one running invocation: the view of its instance's state
// and the effects gathered so far. The shard owns and reuses it; the engine
// wraps it in the user-facing Context. Valid only on the shard goroutine
// during Handler.Invoke or Handler.Resume.
type Invocation struct {
	s        *Shard
	fn       *FuncType
	self     format.Address
	selfHash uint64
	caller   format.Address
	msg      *format.Envelope
	replyTo  uint64
	now      int64
	trace    format.TraceContext // the attempt's span: its sends carry it (trace.go)

	slots  []slot
	valBuf []byte
	sends  []pendingSend // sends, delayed sends and cancellations, in call order
	mapOps []mapOp       // map state writes, in call order (maps.go)
	mapAdd int64         // bytes the invocation's MapSets add, at most
	egress []egressOut
	err    error

	hasReply     bool
	replyType    string
	replyPayload []byte
}

type slot struct {
	spec      StateSpec
	value     []byte
	present   bool
	writtenAt int64
	dirty     bool
}

// pendingSend is one send, delayed send or cancellation of the invocation,
// in call order.
type pendingSend struct {
	env    format.Envelope
	fireAt int64 // 0: send now
	token  string
	cancel bool // Cancel(token): no message
	skip   bool // not sent: replaced or cancelled later in the invocation, or unroutable
}

// markReplaced skips every delayed send whose token a later SendAfter or
// Cancel of the same invocation touches: the last operation on a token
// wins, as if each were applied in turn.
func (inv *Invocation) markReplaced() {
	for i := range inv.sends {
		a := &inv.sends[i]
		if a.token == "" || a.fireAt == 0 || a.cancel {
			continue
		}
		for j := i + 1; j < len(inv.sends); j++ {
			b := &inv.sends[j]
			if b.token == a.token && (b.fireAt != 0 || b.cancel) {
				a.skip = true
				break
			}
		}
	}
}

// anyDirty reports whether the invocation changed any state value.
func (inv *Invocation) anyDirty() bool {
	for i := range inv.slots {
		if inv.slots[i].dirty {
			return true
		}
	}
	return false
}

// discard drops every effect of the invocation, state writes included, and
// makes target its instance (a dead letter consumes a message with no
// effect but its dead-letter record).
func (inv *Invocation) discard(target format.Address) {
	inv.resetEffects()
	for i := range inv.slots {
		inv.slots[i].dirty = false
	}
	inv.self = target
	inv.selfHash = target.Hash()
}

type egressOut struct {
	name, typ string
	payload   []byte
}

// begin loads the instance's state for fn's specs and resets the effects.
func (inv *Invocation) begin(fn *FuncType, self format.Address, now int64) error {
	inv.resetEffects()
	inv.fn = fn
	inv.self = self
	inv.selfHash = self.Hash()
	inv.now = now
	inv.caller = format.Address{}
	inv.msg = nil
	inv.replyTo = 0
	inv.trace = format.TraceContext{}
	if fn == nil {
		return nil
	}
	s := inv.s
	specs := fn.Specs()
	if cap(inv.slots) < len(specs) {
		inv.slots = make([]slot, len(specs))
	}
	inv.slots = inv.slots[:len(specs)]
	for i := range specs {
		inv.slots[i] = slot{spec: specs[i]}
	}
	if len(specs) == 0 {
		return nil
	}
	s.keyBuf = format.AppendAddress(s.keyBuf[:0], self)
	blob, _, ok := s.arena.Get(s.keyBuf)
	if !ok {
		if err := s.load(self); err != nil {
			return err
		}
		blob, _, _ = s.arena.Get(s.keyBuf)
	}
	var err error
	s.entries, err = format.DecodeBlob(blob, s.entries)
	if err != nil {
		return fmt.Errorf("state of %s: %w", self, err)
	}
	for _, e := range s.entries {
		for i := range inv.slots {
			sl := &inv.slots[i]
			if sl.spec.Name != string(e.Name) {
				continue
			}
			if sl.spec.Expired(e.WrittenAt, now) {
				// Expired: absent; dropped from the store at the next write.
				sl.dirty = true
				break
			}
			sl.value = e.Value
			sl.present = true
			sl.writtenAt = e.WrittenAt
			if sl.spec.Mode == ExpireAfterInvoke && sl.spec.Expiry > 0 {
				sl.writtenAt = now
				sl.dirty = true
			}
			break
		}
	}
	return nil
}

// load reads an instance's state from the store into the arena (clean).
func (s *Shard) load(self format.Address) error {
	s.loadBuf = s.loadBuf[:0]
	n := 0
	var body []byte
	err := s.cfg.Store.LoadInstance(format.KeyGroup(self.Hash()), s.keyBuf, func(name []byte, writtenAt int64, value []byte) {
		body = format.AppendBlobEntry(body, string(name), writtenAt, value)
		n++
	})
	if err != nil {
		return fmt.Errorf("load state of %s: %w", self, err)
	}
	if n > 0 {
		s.loadBuf = format.AppendBlobHeader(s.loadBuf, n)
		s.loadBuf = append(s.loadBuf, body...)
	}
	s.arena.Put(s.keyBuf, s.loadBuf, 0)
	return nil
}

func (inv *Invocation) resetEffects() {
	inv.valBuf = inv.valBuf[:0]
	for i := range inv.sends {
		inv.sends[i] = pendingSend{}
	}
	inv.sends = inv.sends[:0]
	clear(inv.mapOps)
	inv.mapOps = inv.mapOps[:0]
	inv.mapAdd = 0
	for i := range inv.egress {
		inv.egress[i] = egressOut{}
	}
	inv.egress = inv.egress[:0]
	inv.err = nil
	inv.hasReply = false
	inv.replyType = ""
	inv.replyPayload = nil
}

// end drops references held by the invocation.
func (inv *Invocation) end() {
	for i := range inv.slots {
		inv.slots[i] = slot{}
	}
	inv.msg = nil
	inv.resetEffects()
}

// storeBlob writes the instance's new state into the arena.
func (s *Shard) storeBlob(inv *Invocation) {
	n := 0
	for i := range inv.slots {
		if inv.slots[i].present {
			n++
		}
	}
	b := s.blobBuf[:0]
	if n > 0 {
		b = format.AppendBlobHeader(b, n)
		for i := range inv.slots {
			sl := &inv.slots[i]
			if sl.present {
				b = format.AppendBlobEntry(b, sl.spec.Name, sl.writtenAt, sl.value)
			}
		}
	}
	s.blobBuf = b
	s.keyBuf = format.AppendAddress(s.keyBuf[:0], inv.self)
	s.arena.Put(s.keyBuf, b, s.seq+1) // the batch being built
}

// Func is the invoked function type.
func (inv *Invocation) Func() *FuncType { return inv.fn }

// Self is the invoked instance.
func (inv *Invocation) Self() format.Address { return inv.self }

// Caller is the sending instance, if any.
func (inv *Invocation) Caller() (format.Address, bool) { return inv.caller, !inv.caller.IsZero() }

// Now is the invocation's time in unix nanoseconds.
func (inv *Invocation) Now() int64 { return inv.now }

// Message returns the message being processed (embedded invocations).
func (inv *Invocation) Message() (typ string, payload []byte) {
	if inv.msg == nil {
		return "", nil
	}
	return inv.msg.Type, inv.msg.Payload
}

// Fail records an error: the invocation's effects are discarded and its
// message goes to the dead letters. The first error wins.
func (inv *Invocation) Fail(err error) {
	if inv.err == nil {
		inv.err = err
	}
}

// Send queues a message to to.
func (inv *Invocation) Send(to format.Address, typ string, payload []byte) {
	inv.sends = append(inv.sends, pendingSend{env: format.Envelope{
		Target: to, Caller: inv.self, Type: typ, Payload: payload, ReplyTo: inv.replyTo, Trace: inv.trace,
	}})
}

// SendAfter queues a delayed message; token may be empty.
func (inv *Invocation) SendAfter(delay int64, to format.Address, typ string, payload []byte, token string) {
	at := inv.now + delay
	if at <= 0 {
		at = 1
	}
	inv.sends = append(inv.sends, pendingSend{env: format.Envelope{
		Target: to, Caller: inv.self, Type: typ, Payload: payload, ReplyTo: inv.replyTo, Trace: inv.trace,
	}, fireAt: at, token: token})
}

// Cancel cancels this instance's pending delayed message with token.
func (inv *Invocation) Cancel(token string) {
	inv.sends = append(inv.sends, pendingSend{token: token, cancel: true})
}

// Egress queues an egress record.
func (inv *Invocation) Egress(name, typ string, payload []byte) {
	inv.egress = append(inv.egress, egressOut{name: name, typ: typ, payload: payload})
}

// Reply answers the waiting request of the chain; the first reply wins.
func (inv *Invocation) Reply(typ string, payload []byte) {
	if inv.hasReply {
		return
	}
	inv.hasReply = true
	inv.replyType = typ
	inv.replyPayload = payload
}

// StateSpec returns the spec of state i.
func (inv *Invocation) StateSpec(i int) StateSpec { return inv.slots[i].spec }

// StateIndex returns the index of the state named name, or -1.
func (inv *Invocation) StateIndex(name string) int {
	for i := range inv.slots {
		if inv.slots[i].spec.Name == name {
			return i
		}
	}
	return -1
}

// Get returns state i's value (valid until the invocation ends).
func (inv *Invocation) Get(i int) ([]byte, bool) {
	sl := &inv.slots[i]
	return sl.value, sl.present
}

// Set stores state i (copied).
func (inv *Invocation) Set(i int, v []byte) error {
	if len(v) > inv.s.cfg.MaxStateBytes {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrStateTooLarge, inv.slots[i].spec.Name, len(v), inv.s.cfg.MaxStateBytes)
	}
	start := len(inv.valBuf)
	inv.valBuf = append(inv.valBuf, v...)
	sl := &inv.slots[i]
	sl.value = inv.valBuf[start:len(inv.valBuf):len(inv.valBuf)]
	sl.present = true
	sl.writtenAt = inv.now
	sl.dirty = true
	return nil
}

// Remove clears state i.
func (inv *Invocation) Remove(i int) {
	sl := &inv.slots[i]
	if sl.present {
		sl.dirty = true
	}
	sl.present = false
	sl.value = nil
}
