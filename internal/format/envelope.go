package format

import (
	"sync"
	"sync/atomic"
)

// Envelope is one message as it travels through mailboxes, per-address
// queues and the timer wheel. It is copied by value into mailbox rings, so it
// holds no per-message heap allocation of its own: strings and the payload
// slice are shared, never mutated after the envelope is pushed.
//
// Ownership: the producer owns an Envelope until a push returns true; then
// the consumer (the shard) owns its copy.
type Envelope struct {
	// ID identifies the message uniquely across restarts (see package
	// engine's id allocator).
	ID uint64
	// Target is the addressed instance.
	Target Address
	// Caller is the sending instance; zero for ingress messages.
	Caller Address
	// Type is the message's type name (a TypedValue's typename).
	Type string
	// Payload is the message body. Never mutated once pushed.
	Payload []byte
	// ReplyTo is the request id that a Reply in this message's chain answers;
	// 0 when nobody waits.
	ReplyTo uint64
	// Ack, when not nil, is released once the invocation that consumed this
	// message is durable (ingress acknowledgement).
	Ack *Ack
	// Key is the idempotency key of an ingress message ("" for none): the
	// record that consumes the message keeps it, so that the same key sent
	// to the same address again is recognised.
	Key string
	// Trace is the trace context of the span that sent the message (zero:
	// not traced). It is kept in records and stored messages, so a trace
	// survives a restart.
	Trace TraceContext
}

// Ack is an ingress acknowledgement handle: the ingress waits on Done, the
// shard calls Release once the message's consuming invocation is durable
// (or with an error if it can never be). Several envelopes may share one
// Ack (a batch); Done delivers one value when every one of them is
// released, so one waiter reads it once.
//
// An Ack is owned by the ingress that made it; it is safe for concurrent
// use by the shards that release it. An ingress that read Done may hand
// the Ack back with PutAck for GetAck to reuse: nothing else holds it then.
type Ack struct {
	pending atomic.Int64
	errSet  atomic.Bool
	err     error
	done    chan struct{}
	onDone  func(error)
}

// OnDone sets a function called once, by the last Release, with the first
// error; set it before the ack is handed to a shard. It runs on the
// releasing goroutine (a shard's): it must be quick and must not block.
func (a *Ack) OnDone(fn func(error)) { a.onDone = fn }

// NewAck makes an acknowledgement for n messages.
func NewAck(n int) *Ack {
	a := &Ack{done: make(chan struct{}, 1)}
	a.pending.Store(int64(n))
	return a
}

var ackPool = sync.Pool{New: func() any { return &Ack{done: make(chan struct{}, 1)} }}

// GetAck is NewAck from a pool of released acknowledgements.
func GetAck(n int) *Ack {
	a := ackPool.Get().(*Ack)
	a.pending.Store(int64(n))
	return a
}

// PutAck hands back an Ack whose Done was read: every Release has
// returned and no envelope refers to it any more.
func PutAck(a *Ack) {
	a.errSet.Store(false)
	a.err = nil
	a.onDone = nil
	ackPool.Put(a)
}

// Release releases one message of the ack; err (if any) is kept, the first
// wins. The ack is done when every message is released.
func (a *Ack) Release(err error) {
	if err != nil && a.errSet.CompareAndSwap(false, true) {
		a.err = err
	}
	if a.pending.Add(-1) == 0 {
		if a.onDone != nil {
			a.onDone(a.Err())
		}
		a.done <- struct{}{} // never blocks: one value, one buffer slot
	}
}

// Done delivers one value once every message is released; read it once.
func (a *Ack) Done() <-chan struct{} { return a.done }

// Err is the first release error; read it after Done is closed.
func (a *Ack) Err() error {
	if a.errSet.Load() {
		return a.err
	}
	return nil
}
