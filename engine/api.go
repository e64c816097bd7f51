package engine

import (
	"errors"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/shardfn/shardfn/internal/format"
)

// Address names one virtual function instance: namespace/type/id.
type Address = format.Address

// Function is an embedded stateful function. Invoke runs on the shard that
// owns ctx.Self(), one message at a time per address; it must not block on
// I/O or keep ctx after it returns. Its effects (state writes, sends,
// timers, egress, reply) become durable together, after it returns nil. A
// non-nil error discards every effect of the invocation and sends the
// message to the "dead-letters" egress with the error text.
type Function interface {
	Invoke(ctx Context, msg Message) error
}

// FunctionFunc adapts a plain func to Function.
type FunctionFunc func(ctx Context, msg Message) error

// Invoke calls f.
func (f FunctionFunc) Invoke(ctx Context, msg Message) error { return f(ctx, msg) }

// ExpireMode says when a state value expires.
type ExpireMode uint8

const (
	// ExpireNever keeps the value until it is removed.
	ExpireNever ExpireMode = iota
	// ExpireAfterWrite drops the value Expiry after its last write.
	ExpireAfterWrite
	// ExpireAfterInvoke drops the value Expiry after the last invocation of
	// its instance that read or wrote it (StateFun's "after call").
	ExpireAfterInvoke
)

// ValueSpec declares one named, typed state value of a function type, like
// StateFun's ValueSpec.
type ValueSpec struct {
	// Name is the state's name: [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes.
	Name string
	// Type is the value's type name, e.g. TypeString or "rides/set"; a
	// typed accessor of the wrong type is an error.
	Type string
	// Mode and Expiry set the optional expiry; Expiry is ignored for
	// ExpireNever.
	Mode   ExpireMode
	Expiry time.Duration
}

// MapSpec declares a map state of a function type: named entries (string
// keys to byte values) read and written one by one, so that a write costs
// what it changes, not what the map holds. For large collections (a set of
// thousands of members) where a ValueSpec would be rewritten whole on every
// change. Entries do not expire; the map of one instance is bounded by
// Options.MaxInstanceBytes. Embedded functions only.
type MapSpec struct {
	// Name: [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes, distinct from the
	// function type's ValueSpec names.
	Name string
}

// FunctionSpec registers one function type.
type FunctionSpec struct {
	// Namespace and Type name the function type. For remote specs Type may
	// be "*" to match every type of the namespace.
	Namespace string
	Type      string
	// States declares the value specs of the type. Remote functions may also
	// declare more at run time (StateFun's incomplete-invocation-context).
	States []ValueSpec
	// Maps declares the map states of the type (embedded functions only).
	Maps []MapSpec
	// Function is the embedded implementation. Exactly one of Function and
	// Remote is set.
	Function Function
	// Remote is a remote (StateFun request-reply) implementation.
	Remote RemoteFunction
	// IngressTypes, when not empty, lists the message types the function
	// type accepts from ingress (Send, SendAsync, SendBatch, Request);
	// ingress messages of any other type are refused with ErrIngressType,
	// which names the accepted ones. Messages from functions (Context.Send,
	// SendAfter) are never checked. Empty accepts every type, unless
	// NoIngress is set. Each entry must be a non-empty type name of at most
	// 1024 bytes, listed once.
	IngressTypes []string
	// NoIngress refuses every ingress message: the type is reached only
	// through other functions. It excludes IngressTypes.
	NoIngress bool
}

// Context is what an invocation sees. It is valid only during Invoke and is
// not safe for concurrent use. Methods that take a Message keep a reference
// to its Value: do not mutate it after the call.
type Context interface {
	// Self is the invoked instance.
	Self() Address
	// Caller is the sending instance; ok is false for ingress messages and
	// for messages from timers set by the ingress.
	Caller() (addr Address, ok bool)
	// Now is the shard's clock at the start of the invocation batch.
	Now() time.Time

	// Send sends msg to the instance at to.
	Send(to Address, msg Message)
	// SendAfter sends msg to to after delay. A non-empty token makes it
	// cancellable with Cancel from this same instance; tokens are scoped to
	// the sending address.
	SendAfter(delay time.Duration, to Address, msg Message, token string)
	// Cancel cancels a pending delayed message of this instance; cancelling
	// an unknown or fired token does nothing.
	Cancel(token string)
	// Egress appends msg to the named egress log; readers see it once it is
	// durable.
	Egress(name string, msg Message)
	// Reply answers the request (Engine.Request or HTTP ?wait=) that started
	// this chain of messages, if one waits. The first reply wins.
	Reply(msg Message)

	// Get returns the raw bytes of a state value, valid until Invoke
	// returns, and whether it is set.
	Get(spec ValueSpec) ([]byte, bool)
	// Set stores a state value; the bytes are copied.
	Set(spec ValueSpec, value []byte) error
	// Remove clears a state value.
	Remove(spec ValueSpec) error

	// Map state (MapSpec). MapGet returns an entry's value (valid until
	// Invoke returns); MapSet stores a copy; MapRange calls fn with every
	// entry, in no particular order, until fn returns false (fn must not
	// write the map); MapLen counts the entries. Each sees the invocation's
	// own writes.
	MapGet(spec MapSpec, key string) ([]byte, bool, error)
	MapSet(spec MapSpec, key string, value []byte) error
	MapDelete(spec MapSpec, key string) error
	MapClear(spec MapSpec) error
	MapRange(spec MapSpec, fn func(key string, value []byte) bool) error
	MapLen(spec MapSpec) (int, error)

	// Typed accessors. They fail when spec.Type is not the matching
	// built-in type (TypeString, TypeLong, TypeInt, TypeBool) or, for JSON,
	// when the stored bytes do not decode.
	GetString(spec ValueSpec) (string, bool, error)
	SetString(spec ValueSpec, v string) error
	GetInt64(spec ValueSpec) (int64, bool, error)
	SetInt64(spec ValueSpec, v int64) error
	GetJSON(spec ValueSpec, v any) (bool, error)
	SetJSON(spec ValueSpec, v any) error
}

// Errors returned by the engine. Each is wrapped with details; test with
// errors.Is.
var (
	ErrClosed       = errors.New("engine: closed")
	ErrOverloaded   = errors.New("engine: overloaded, retry later")
	ErrFailed       = errors.New("engine: failed-stop after a storage error; restart the engine")
	ErrUnknownType  = errors.New("engine: unknown function type")
	ErrBadAddress   = errors.New("engine: bad address")
	ErrBadMessage   = errors.New("engine: bad message")
	ErrTooLarge     = errors.New("engine: message too large")
	ErrStateType    = errors.New("engine: state value of the wrong type")
	ErrUndeclared   = errors.New("engine: undeclared state")
	ErrNoReply      = errors.New("engine: no reply before the deadline")
	ErrIngressType  = errors.New("engine: message type not accepted from ingress")
	ErrDataDirInUse = errors.New("engine: data directory in use")
)

// Outgoing is one message of an ingress batch.
type Outgoing struct {
	To      Address
	Message Message
	// Key is an optional idempotency key (see IdempotencyKey).
	Key string
}

// EgressRecord is one durable record of an egress log.
type EgressRecord struct {
	// Offset is the record's position in its log, from 0, dense.
	Offset uint64
	// Message is the record.
	Message Message
	// Source is the instance that wrote it.
	Source Address
}

// StateValue is one state value of an instance.
type StateValue struct {
	Spec    ValueSpec
	Value   []byte
	Present bool
	// For a map state (Spec.Type TypeMap): its number of entries and the
	// first MaxStateMapEntries of them in key order.
	MapLen int
	Map    []MapEntry
}

// MapEntry is one entry of a map state.
type MapEntry struct {
	Key   string
	Value []byte
}

// TypeMap is the Spec.Type State reports for a map state.
const TypeMap = "shardfn/map"

// MaxStateMapEntries is how many entries of a map State returns.
const MaxStateMapEntries = 10000

// RemoteFunction is a function type served off the shards, e.g. over
// StateFun's request-reply protocol (package remote). The engine calls
// InvokeBatch with every queued message of one address at most once at a
// time per address; further messages of that address queue meanwhile and go
// in the next batch. InvokeBatch must not block the caller (it runs on a
// shard): it starts the work elsewhere and calls done exactly once, from any
// goroutine. The batch is owned by the callee until done is called.
type RemoteFunction interface {
	InvokeBatch(b *RemoteBatch, done func(*RemoteResult))
}

// RemoteBatch is the input of one remote call.
type RemoteBatch struct {
	Target Address
	// States holds every registered spec of the function type with the
	// instance's current value.
	States []StateValue
	// Invocations are the queued messages, in arrival order.
	Invocations []RemoteInvocation
	// Closing is closed when the engine starts to close. A RemoteFunction
	// that retries (package remote retries an endpoint that is down without
	// end) stops retrying once it is closed and ends the call with an Err
	// that wraps ErrAbandoned: the messages stay unconsumed, durable ones
	// are delivered again after the next Open. Nil for callers that never
	// close.
	Closing <-chan struct{}
	// Trace is the span of the invocation attempt that makes this call
	// (invalid when it is not traced): a RemoteFunction makes its requests
	// its children and passes it on (package remote: a client span per
	// HTTP attempt and the W3C traceparent header).
	Trace trace.SpanContext
}

// RemoteInvocation is one message of a RemoteBatch.
type RemoteInvocation struct {
	Caller    Address
	HasCaller bool
	Message   Message
}

// RemoteResult is the outcome of a RemoteBatch: the net effect of the whole
// batch, applied as one effect record, or a request for more state specs,
// or a failure.
type RemoteResult struct {
	// Err, when set, means the batch failed for good (after the callee's own
	// retries): its messages go to the "dead-letters" egress and nothing
	// else happens. An Err that wraps ErrAbandoned instead means the call
	// was given up without an answer (the engine or the callee is closing):
	// nothing is applied or dead-lettered, and the messages are left for the
	// next Open (see ErrAbandoned).
	Err error
	// MissingSpecs, when not empty, asks the engine to register these specs
	// for the function type and to call again with the same batch.
	MissingSpecs []ValueSpec
	Mutations    []StateMutation
	Sends        []Outgoing
	Delayed      []DelayedSend
	Cancels      []string
	Egress       []EgressOut
}

// StateMutation sets (Delete false) or clears one state value.
type StateMutation struct {
	Name   string
	Delete bool
	Value  Message
}

// DelayedSend is a delayed message of a RemoteResult.
type DelayedSend struct {
	To      Address
	Message Message
	Delay   time.Duration
	Token   string
}

// EgressOut is an egress record of a RemoteResult.
type EgressOut struct {
	Name    string
	Message Message
}
