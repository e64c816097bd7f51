package shard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
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
	self     Address
	selfHash uint64
	caller   Address
	msg      *Envelope
	replyTo  uint64
	now      int64

	slots   []slot
	valBuf  []byte
	sends   []pendingSend
	cancels []string
	egress  []egressOut
	err     error

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

type pendingSend struct {
	env    Envelope
	fireAt int64
	token  string
	skip   bool // replaced by a later SendAfter with the same token
}

// tokenReusedAfter reports whether a later delayed send of this invocation
// uses the token of send i.
func (inv *Invocation) tokenReusedAfter(i int) bool {
	for j := i + 1; j < len(inv.sends); j++ {
		if inv.sends[j].token == inv.sends[i].token && inv.sends[j].fireAt != 0 {
			return true
		}
	}
	return false
}

type egressOut struct {
	name, typ string
	payload   []byte
}

// begin loads the instance's state for fn's specs and resets the effects.
func (inv *Invocation) begin(fn *FuncType, self Address, now int64) error {
	inv.resetEffects()
	inv.fn = fn
	inv.self = self
	inv.selfHash = self.Hash()
	inv.now = now
	inv.caller = Address{}
	inv.msg = nil
	inv.replyTo = 0
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
	s.keyBuf = AppendAddress(s.keyBuf[:0], self)
	blob, _, ok := s.arena.Get(s.keyBuf)
	if !ok {
		if err := s.load(self); err != nil {
			return err
		}
		blob, _, _ = s.arena.Get(s.keyBuf)
	}
	var err error
	s.entries, err = decodeBlob(blob, s.entries)
	if err != nil {
		return fmt.Errorf("state of %s: %w", self, err)
	}
	for _, e := range s.entries {
		for i := range inv.slots {
			sl := &inv.slots[i]
			if sl.spec.Name != string(e.name) {
				continue
			}
			if sl.spec.Mode != ExpireNever && sl.spec.Expiry > 0 && now-e.writtenAt >= sl.spec.Expiry {
				// Expired: absent; dropped from the store at the next write.
				sl.dirty = true
				break
			}
			sl.value = e.value
			sl.present = true
			sl.writtenAt = e.writtenAt
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
func (s *Shard) load(self Address) error {
	s.loadBuf = s.loadBuf[:0]
	n := 0
	var body []byte
	err := s.cfg.Store.LoadInstance(KeyGroup(self.Hash()), s.keyBuf, func(name []byte, writtenAt int64, value []byte) {
		body = appendBlobEntry(body, string(name), writtenAt, value)
		n++
	})
	if err != nil {
		return fmt.Errorf("load state of %s: %w", self, err)
	}
	if n > 0 {
		s.loadBuf = appendUvarint(s.loadBuf, uint64(n))
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
	inv.cancels = inv.cancels[:0]
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
		b = appendUvarint(b, uint64(n))
		for i := range inv.slots {
			sl := &inv.slots[i]
			if sl.present {
				b = appendBlobEntry(b, sl.spec.Name, sl.writtenAt, sl.value)
			}
		}
	}
	s.blobBuf = b
	s.keyBuf = AppendAddress(s.keyBuf[:0], inv.self)
	s.arena.Put(s.keyBuf, b, s.seq+1)
}

// Func is the invoked function type.
func (inv *Invocation) Func() *FuncType { return inv.fn }

// Self is the invoked instance.
func (inv *Invocation) Self() Address { return inv.self }

// Caller is the sending instance, if any.
func (inv *Invocation) Caller() (Address, bool) { return inv.caller, !inv.caller.IsZero() }

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
func (inv *Invocation) Send(to Address, typ string, payload []byte) {
	inv.sends = append(inv.sends, pendingSend{env: Envelope{
		Target: to, Caller: inv.self, Type: typ, Payload: payload, ReplyTo: inv.replyTo,
	}})
}

// SendAfter queues a delayed message; token may be empty.
func (inv *Invocation) SendAfter(delay int64, to Address, typ string, payload []byte, token string) {
	at := inv.now + delay
	if at <= 0 {
		at = 1
	}
	inv.sends = append(inv.sends, pendingSend{env: Envelope{
		Target: to, Caller: inv.self, Type: typ, Payload: payload, ReplyTo: inv.replyTo,
	}, fireAt: at, token: token})
}

// Cancel cancels this instance's pending delayed message with token.
func (inv *Invocation) Cancel(token string) { inv.cancels = append(inv.cancels, token) }

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

// SetReplyTo sets the request id the invocation's sends carry (remote
// batches, where several messages may carry different ones).
func (inv *Invocation) SetReplyTo(id uint64) { inv.replyTo = id }

// NumStates is the number of declared state values.
func (inv *Invocation) NumStates() int { return len(inv.slots) }

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

// NewAck makes an acknowledgement for n messages.
func NewAck(n int) *Ack {
	return &Ack{pending: int64(n), done: make(chan struct{})}
}

// Release releases one message of the ack; err (if any) is kept, the first
// wins. The ack is done when every message is released.
func (a *Ack) Release(err error) {
	if err != nil && atomic.CompareAndSwapInt32(&a.errSet, 0, 1) {
		a.err = err
	}
	if atomic.AddInt64(&a.pending, -1) == 0 {
		close(a.done)
	}
}

// Done is closed once every message is released.
func (a *Ack) Done() <-chan struct{} { return a.done }

// Err is the first release error; read it after Done is closed.
func (a *Ack) Err() error {
	if atomic.LoadInt32(&a.errSet) == 1 {
		return a.err
	}
	return nil
}

func deadLetterJSON(m *Envelope, cause error) []byte {
	rec := struct {
		Target    string `json:"target"`
		Caller    string `json:"caller,omitempty"`
		Type      string `json:"type"`
		Error     string `json:"error"`
		PayloadB6 string `json:"payload_b64"`
	}{
		Target: m.Target.String(), Type: m.Type, Error: cause.Error(),
		PayloadB6: base64.StdEncoding.EncodeToString(m.Payload),
	}
	if !m.Caller.IsZero() {
		rec.Caller = m.Caller.String()
	}
	b, _ := json.Marshal(rec)
	return b
}

func appendUvarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// ring is a growable FIFO ring buffer.
type ring[T any] struct {
	buf  []T
	head int
	n    int
}

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		nb := make([]T, max(8, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf = nb
		r.head = 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}

func (r *ring[T]) peek() T { return r.buf[r.head] }

func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)%len(r.buf)] }

func (r *ring[T]) reset() {
	var zero T
	for r.n > 0 {
		r.buf[r.head] = zero
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
	r.head = 0
}
