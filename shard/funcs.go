package shard

import (
	"sync/atomic"

	"github.com/shardfn/shardfn/internal/format"
)

// Expiry modes of a StateSpec (mirror engine.ExpireMode).
const (
	ExpireNever       = 0
	ExpireAfterWrite  = 1
	ExpireAfterInvoke = 2
)

// StateSpec declares one state value of a function type, as the shard sees
// it.
type StateSpec struct {
	Name   string
	Type   string
	Mode   uint8
	Expiry int64 // nanoseconds; 0 with a mode means "never"
}

// Expired reports whether a value written at writtenAt has expired at now
// (all times unix nanoseconds). The one expiry rule: ExpireAfterInvoke
// values are rewritten with a new time by every invocation of their
// instance, so both modes measure from the last write.
func (sp StateSpec) Expired(writtenAt, now int64) bool {
	return sp.Mode != ExpireNever && sp.Expiry > 0 && now-writtenAt >= sp.Expiry
}

// FuncType is one registered function type. It is created by the engine
// before the shards start and shared read-only by every shard, except for
// its spec list, which remote functions may extend at run time and which is
// therefore published through an atomic pointer (copy on write).
type FuncType struct {
	Namespace string
	Type      string
	// ID is the engine's index of the implementation (the shard only
	// carries it back in Handler calls).
	ID uint32
	// Async marks remote functions: invoked off the shard in batches.
	Async bool
	// MaxBatch bounds the messages of one async batch (0 = 1000).
	MaxBatch int
	// MapNames are the function type's map states (fixed at registration).
	MapNames []string

	specs atomic.Pointer[[]StateSpec]
}

// Specs returns the current spec list (never mutate it).
func (f *FuncType) Specs() []StateSpec {
	p := f.specs.Load()
	if p == nil {
		return nil
	}
	return *p
}

// SetSpecs publishes a new spec list (the caller must not mutate it later).
func (f *FuncType) SetSpecs(s []StateSpec) { f.specs.Store(&s) }

// Handler is the engine side of a shard: it resolves function types and runs
// them. Invoke and Resume are called on the shard goroutine; StartAsync too,
// and it must not block.
type Handler interface {
	// Lookup returns the function type of an address, or nil.
	Lookup(namespace, typ string) *FuncType
	// Invoke runs an embedded function for one message.
	Invoke(inv *Invocation) error
	// StartAsync starts a remote batch. The handler calls
	// call.Shard().Complete(call) from any goroutine when it is done.
	StartAsync(call *AsyncCall)
	// Reply delivers a durable reply to a waiting request. reqID carries
	// format.ReplyKeep when the request is idempotent.
	Reply(reqID uint64, typ string, payload []byte)
	// DeadLetter is told about a failed invocation (for logs and metrics).
	DeadLetter(target format.Address, typ string, err error)
}

// AsyncCall is one in-flight remote batch of one address. The shard owns it
// except between StartAsync and Complete.
type AsyncCall struct {
	shard  *Shard
	inst   *instance
	Target format.Address
	Fn     *FuncType
	// States is a copy of the instance's state for the current specs.
	States []AsyncState
	// Messages are the batch, in arrival order (copied envelopes).
	Messages []format.Envelope
	// Resume is set by the handler before Complete: run on the shard
	// goroutine, it applies the call's result through inv. retry asks the
	// shard to start the same call again (for example after new state specs
	// were registered); err fails the batch (dead letters).
	Resume func(inv *Invocation) (retry bool, err error)
	// Attempts counts StartAsync calls for this batch.
	Attempts int
}

// AsyncState is one state value handed to a remote function.
type AsyncState struct {
	Spec    StateSpec
	Value   []byte
	Present bool
}

// Shard returns the shard that owns the call.
func (c *AsyncCall) Shard() *Shard { return c.shard }
