package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"
	"go.opentelemetry.io/otel/trace"

	"github.com/shardfn/shardfn/wal"
	"github.com/shardfn/shardfn/wal/vfs"
)

// Options configure an Engine. The zero value is usable: EnsureDefaults
// fills it in. Fields document unit, default and range.
type Options struct {
	// Cluster, when set, runs the engine as one node of a cluster (package
	// cluster; cluster.go): its log is the node's Kafka transactions. Nil:
	// a single node with its own write-ahead log.
	Cluster *ClusterLink
	// DataDir holds the write-ahead log and the Pebble store. Empty means
	// in-memory: nothing is durable and acknowledgements are immediate
	// (tests and micro-benchmarks only).
	DataDir string
	// Shards is the number of shards (one goroutine locked to an OS thread
	// each). Default: runtime.GOMAXPROCS(0). Range 1..255.
	Shards int
	// MemoryBudget is the state cache size in bytes, split evenly between
	// shards. Default 256 MiB. Minimum 64 KiB per shard.
	MemoryBudget int64
	// MaxMessageBytes bounds one message payload. Default 4 MiB (at most
	// half of MaxRecordBytes).
	MaxMessageBytes int
	// MaxStateBytes bounds one state value. Default 16 MiB (at most
	// MaxRecordBytes).
	MaxStateBytes int
	// MaxInstanceBytes bounds one map state of an instance (MapSpec: its
	// keys and values): a write past it fails the invocation (its message
	// goes to the dead letters) with an error naming the map. Default 256
	// MiB.
	MaxInstanceBytes int64
	// MaxRecordBytes bounds the effects of one invocation (its state writes,
	// messages, egress records and reply, encoded as one log record): an
	// invocation whose effects are larger is dead-lettered with the reason.
	// Default 32 MiB (less when SegmentSize is smaller: a record must fit in
	// a log segment); at least MaxStateBytes and MaxMessageBytes.
	MaxRecordBytes int
	// MailboxCapacity is the ingress capacity of each shard's mailbox, in
	// messages; a full mailbox answers ingress with ErrOverloaded.
	// Default 16384.
	MailboxCapacity int
	// MaxQueuedBytes bounds the bytes of messages the shards hold (ingress
	// lanes, instance queues, remote calls, sends waiting for a peer,
	// delayed messages), split evenly between shards; past a shard's share,
	// ingress for it is refused with ErrOverloaded. Default 64 MiB.
	MaxQueuedBytes int64
	// MaxApplierLag bounds how far (bytes) the store may lag the durable
	// log before ingress is refused with ErrOverloaded. Default 64 MiB.
	MaxApplierLag int64
	// MaxBatchDelay is the longest the group-commit flusher waits to batch
	// more records; 0 (the default) flushes as soon as the previous sync
	// returns. Range 0..1s.
	MaxBatchDelay time.Duration
	// CheckpointInterval is the period of checkpoints. Default 10s.
	CheckpointInterval time.Duration
	// SegmentSize is the log segment size in bytes. Default 64 MiB (more if
	// MaxRecordBytes needs it); at least 64 KiB and MaxRecordBytes plus 64.
	SegmentSize int64
	// AcceptLogLoss lets Open start from a log that is shorter than what
	// was durable (a segment cut or truncated by hand, not by a crash),
	// dropping the acknowledged work in the missing range. Without it such
	// a log refuses to open, naming the segment and the range, and nothing
	// on disk is changed. Default false.
	AcceptLogLoss bool
	// SlowInvocation is how long an invocation may run before it is
	// reported (a log line, shardfn_slow_invocations, /health degraded with
	// its address): a function that loops or blocks holds its shard.
	// Default 10s.
	SlowInvocation time.Duration
	// DrainTimeout bounds how long Close waits for the work in flight to
	// finish before it stops the shards (each then gets 5 s more to stop;
	// one held by an invocation that never returns is left behind).
	// Default 30s.
	DrainTimeout time.Duration
	// IdempotencyRetention is how long an idempotency key (and the reply of
	// an idempotent request) is remembered after its message was consumed.
	// Default 24h.
	IdempotencyRetention time.Duration
	// Clock tells the time (invocations, timers, expiry). Default time.Now.
	// Tests and the simulator set it.
	Clock func() time.Time
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// TracerProvider, when set, turns tracing on: ingress calls and
	// invocation attempts become OpenTelemetry spans, and messages carry
	// their trace context (see tracing.go; package tracing builds a
	// provider from the OTEL_* environment variables). Nil: off.
	TracerProvider trace.TracerProvider

	// fs names the filesystems of a durable engine; the zero value is the
	// operating system's. Tests of this package (fault injection, the
	// simulator) set it.
	fs fileSystems
	// manual is set by the simulator (tests of this package): Open starts
	// no goroutine; the caller steps the shards, flushes the log and runs
	// the applier.
	manual bool
}

// fileSystems is the pair of filesystems a durable engine writes through:
// the write-ahead log's and the Pebble store's. A nil field means the
// operating system.
type fileSystems struct {
	Log   vfs.FS
	Store pebblevfs.FS
}

// EnsureDefaults fills in zero fields.
func (o *Options) EnsureDefaults() {
	if o.Shards <= 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = 256 << 20
	}
	// Sizes: a record must fit in a segment; a state value and a message
	// must fit in a record. Defaults are derived to agree with what is set.
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = max(32<<20, o.MaxStateBytes, 2*o.MaxMessageBytes)
		if o.SegmentSize > 0 {
			o.MaxRecordBytes = int(min(int64(o.MaxRecordBytes), wal.MaxRecordSize(o.SegmentSize)))
		}
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = max(64<<20, int64(o.MaxRecordBytes)+segmentOverhead)
	}
	if o.MaxStateBytes <= 0 {
		o.MaxStateBytes = min(16<<20, o.MaxRecordBytes)
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = min(4<<20, o.MaxRecordBytes/2)
	}
	if o.MailboxCapacity <= 0 {
		o.MailboxCapacity = 16384
	}
	if o.MaxInstanceBytes <= 0 {
		o.MaxInstanceBytes = 256 << 20
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = 64 << 20
	}
	if o.MaxApplierLag <= 0 {
		o.MaxApplierLag = 64 << 20
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 10 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.SlowInvocation <= 0 {
		o.SlowInvocation = 10 * time.Second
	}
	if o.IdempotencyRetention <= 0 {
		o.IdempotencyRetention = 24 * time.Hour
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// segmentOverhead is at least what a segment needs beyond one record's
// payload (wal.MaxRecordSize is the rule); used to size a segment for a
// record limit.
const segmentOverhead = 64

// Validate checks the options.
func (o *Options) Validate() error {
	if o.Cluster != nil {
		if o.DataDir == "" {
			return errors.New("engine: cluster mode needs a DataDir (the store that holds the node's partitions)")
		}
		if err := o.Cluster.validate(); err != nil {
			return err
		}
	}
	switch {
	case o.Shards < 1 || o.Shards > 255:
		return fmt.Errorf("engine: Shards %d out of range 1..255", o.Shards)
	case o.MemoryBudget < int64(o.Shards)*64<<10:
		return fmt.Errorf("engine: MemoryBudget %d below 64 KiB per shard", o.MemoryBudget)
	case o.MaxBatchDelay < 0 || o.MaxBatchDelay > time.Second:
		return fmt.Errorf("engine: MaxBatchDelay %v out of range 0..1s", o.MaxBatchDelay)
	case o.SegmentSize < 64<<10:
		return fmt.Errorf("engine: SegmentSize %d below 64 KiB", o.SegmentSize)
	case o.MaxRecordBytes < o.MaxStateBytes || o.MaxRecordBytes < o.MaxMessageBytes:
		return fmt.Errorf("engine: MaxRecordBytes %d is below MaxStateBytes %d or MaxMessageBytes %d: an invocation could never write its largest value or send its largest message; raise SegmentSize/MaxRecordBytes or lower the others",
			o.MaxRecordBytes, o.MaxStateBytes, o.MaxMessageBytes)
	case int64(o.MaxRecordBytes) > wal.MaxRecordSize(o.SegmentSize):
		return fmt.Errorf("engine: SegmentSize %d cannot hold a record of MaxRecordBytes %d", o.SegmentSize, o.MaxRecordBytes)
	}
	return nil
}
