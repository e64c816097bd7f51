package engine

import (
	"context"
	"errors"
	"fmt"
	"github.com/shardfn/shardfn/internal/format"
	"sort"
	"time"
)

// Status is a snapshot of the engine for operators (the admin API's
// /admin/status, `shardfn status`, the console). Counters are totals since
// Open; rates are the reader's business (two snapshots).
type Status struct {
	// Ready: recovered and accepting messages. Failed holds the failed-stop
	// cause, if any.
	Ready  bool
	Failed string
	// IngressMessages counts messages accepted through ingress (Send,
	// SendBatch, Request, SendAsync); Processed
	// counts messages consumed by invocations or dead-lettered, from any
	// source.
	IngressMessages uint64
	Processed       uint64
	// LogDurable is the log position (bytes since the log began) up to
	// which the log is durable; StoreApplied the position up to which the
	// store has applied it. Their difference is the applier's lag.
	LogDurable, StoreApplied uint64
	// LastCheckpoint is when the last checkpoint of this process ended
	// (zero before the first; after a recovery that replayed log, the
	// applier takes one as soon as the engine runs; in-memory engines never
	// take one). CheckpointInterval is the period.
	LastCheckpoint     time.Time
	CheckpointInterval time.Duration
	Recovery           RecoveryStats
	Shards             []ShardStatus
}

// ShardStatus is one shard's part of Status.
type ShardStatus struct {
	Index int
	// Mailbox: envelopes waiting in the mailbox; QueueDepth: messages
	// queued at the shard's active instances; DelayedMessages: pending
	// delayed messages held by its timer wheel.
	Mailbox         int
	QueueDepth      int64
	DelayedMessages int64
	Invocations     uint64
	Failures        uint64
	// Appends and Records: record batches and effect records appended to
	// the log.
	Appends, Records uint64
	// State cache.
	CacheHits, CacheMisses, CacheEvictions uint64
	CacheBytes, CacheCapacity              int64
}

// Status returns a snapshot of the engine's figures. Safe for concurrent
// use; cheap (atomics only).
func (e *Engine) Status() Status {
	st := Status{
		Ready:              e.Ready(),
		LogDurable:         e.wal.Durable(),
		StoreApplied:       e.ap.applied.Load(),
		CheckpointInterval: e.opts.CheckpointInterval,
		Recovery:           e.recovery,
	}
	if err := e.Err(); err != nil {
		st.Failed = err.Error()
	}
	if ns := e.metrics.lastCheckpoint.Load(); ns != 0 {
		st.LastCheckpoint = time.Unix(0, ns)
	}
	for i, s := range e.shards {
		ss := s.Stats()
		st.Processed += s.ConsumedCount()
		st.IngressMessages += s.IngressCount()
		st.Shards = append(st.Shards, ShardStatus{
			Index: i, Mailbox: ss.Mailbox, QueueDepth: ss.QueueDepth, DelayedMessages: ss.Timers,
			Invocations: ss.Invocations, Failures: ss.Failures, Appends: ss.Batches, Records: ss.Records,
			CacheHits: ss.Arena.Hits, CacheMisses: ss.Arena.Misses, CacheEvictions: ss.Arena.Evictions,
			CacheBytes: ss.Arena.Bytes, CacheCapacity: ss.Arena.Capacity,
		})
	}
	return st
}

// FunctionInfo describes one registered function type.
type FunctionInfo struct {
	Namespace, Type string // Type is "*" for a remote pattern of a whole namespace
	// Remote is the remote implementation (nil for embedded functions).
	Remote RemoteFunction
	// States are the declared value specs (for remote types, also those
	// registered by the endpoint at run time).
	States []ValueSpec
	// Invocations and Failures since Open (messages processed; failed
	// invocations or remote batches).
	Invocations, Failures uint64
}

// Functions lists the registered function types, sorted by name: exact
// registrations, the concrete types met so far of remote patterns, and the
// patterns themselves.
func (e *Engine) Functions() []FunctionInfo {
	var out []FunctionInfo
	for _, fe := range e.reg.entries() {
		fi := FunctionInfo{Namespace: fe.ft.Namespace, Type: fe.ft.Type, Remote: fe.remote}
		for _, sp := range fe.ft.Specs() {
			fi.States = append(fi.States, fromShardSpec(sp))
		}
		for i := range fe.counts {
			fi.Invocations += fe.counts[i].n.Load()
			fi.Failures += fe.fails[i].n.Load()
		}
		out = append(out, fi)
	}
	for ns, sp := range e.reg.wild {
		out = append(out, FunctionInfo{Namespace: ns, Type: "*", Remote: sp.Remote, States: append([]ValueSpec(nil), sp.States...)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Type < out[j].Type
	})
	return out
}

// InstanceInfo is what the engine holds for one address besides its state:
// the messages queued at it on its shard and the pending delayed messages
// it sent or that are addressed to it.
type InstanceInfo struct {
	// Active: the address has queued messages or a remote call in flight;
	// Busy: a remote call of the address is in flight (its messages are no
	// longer in Queued).
	Active, Busy bool
	// Queued holds the oldest queued messages (at most the max asked for);
	// QueuedTotal counts all.
	Queued      []QueuedMessage
	QueuedTotal int
	// Delayed holds pending delayed messages sent by or to the address (at
	// most the max asked for), as durable and applied at the time of the
	// call.
	Delayed []DelayedMessage
}

// QueuedMessage is one message waiting at an instance.
type QueuedMessage struct {
	ID        uint64
	Caller    Address // zero for ingress messages
	Message   Message
	InRequest bool // part of a request chain that awaits a reply
}

// DelayedMessage is one pending delayed message.
type DelayedMessage struct {
	ID      uint64
	From    Address
	To      Address
	Message Message
	FireAt  time.Time
	Token   string
}

var errEnoughDelayed = errors.New("enough")

// Inspect returns the queued and delayed messages of an instance, at most
// max of each (default 100). Queued messages are read on the instance's
// shard; delayed ones from the store, by a scan of every pending delayed
// message (cost grows with their total count, not the instance's).
func (e *Engine) Inspect(ctx context.Context, addr Address, max int) (InstanceInfo, error) {
	if addr.Namespace == "" || addr.Type == "" || addr.ID == "" {
		return InstanceInfo{}, fmt.Errorf("%w: %q: namespace, type and id must all be non-empty", ErrBadAddress, addr.String())
	}
	if max <= 0 {
		max = 100
	}
	if err := e.enter(); err != nil {
		return InstanceInfo{}, err
	}
	// Holding the admission keeps Close from stopping the shards while the
	// shard answers.
	v := e.shardFor(addr).Inspect(addr, max)
	e.inflight.Done()
	info := InstanceInfo{Active: v.Active, Busy: v.Busy, QueuedTotal: v.QueuedTotal}
	for _, q := range v.Queued {
		info.Queued = append(info.Queued, QueuedMessage{ID: q.ID, Caller: q.Caller,
			Message: Message{Type: q.Type, Value: q.Payload}, InRequest: q.Request})
	}
	if err := e.waitApplied(ctx, e.wal.Durable()); err != nil {
		return info, err
	}
	err := e.st.ScanTimers(func(_ uint64, v []byte) error {
		m, err := format.DecodeStoredMessage(v)
		if err != nil {
			return err
		}
		if m.Env.Caller != addr && m.Env.Target != addr {
			return nil
		}
		info.Delayed = append(info.Delayed, DelayedMessage{ID: m.Env.ID, From: m.Env.Caller, To: m.Env.Target,
			Message: Message{Type: m.Env.Type, Value: m.Env.Payload}, FireAt: time.Unix(0, m.FireAt), Token: m.Token})
		if len(info.Delayed) >= max {
			return errEnoughDelayed
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnoughDelayed) {
		return info, fmt.Errorf("engine: delayed messages of %s: %w", addr, err)
	}
	return info, nil
}
