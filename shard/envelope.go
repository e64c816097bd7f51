package shard

import "time"

// Kind says what an Envelope carries.
type Kind uint8

const (
	// KindMessage is a message to a function instance.
	KindMessage Kind = iota
	// KindResume carries the completion of an asynchronous (remote)
	// invocation back to the shard that owns the address.
	KindResume
	// KindControl is an engine-internal request executed on the shard loop
	// (state reads for the admin API, checkpoints, shutdown).
	KindControl
)

// Envelope is the unit that travels through mailboxes, per-address queues
// and the timer wheel. It is copied by value into mailbox rings, so it holds
// no per-message heap allocation of its own: strings and the payload slice
// are shared, never mutated after the envelope is pushed.
//
// Ownership: the producer owns an Envelope until Push returns true; then the
// consumer (the shard) owns its copy.
type Envelope struct {
	// ID identifies the message uniquely across restarts (see MessageID).
	ID uint64
	// Kind says what the envelope carries.
	Kind Kind
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
	// Ctl carries the payload of KindResume and KindControl envelopes.
	Ctl any
}

// Ack is an ingress acknowledgement handle: the ingress waits on Done, the
// engine calls Release once the message's consuming invocation is durable
// (or with an error if it can never be). Several envelopes may share one
// Ack (a batch); the ingress is released when Pending reaches zero.
//
// An Ack is owned by the ingress that made it; it is safe for concurrent
// use by the shards that release it.
type Ack struct {
	pending  int64 // accessed atomically
	err      error
	errSet   int32
	done     chan struct{}
	Enqueued time.Time
}
