package shard

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/internal/format"
)

// Log is where a shard appends its effect records. Append appends every
// record of the batch atomically with respect to other Appends and in order,
// and returns the log position after the last one; Durable returns the
// position up to which the log is durable. Both are safe for concurrent use.
type Log interface {
	Append(b *RecordBatch) (end uint64, err error)
	Durable() uint64
	// Err is non-nil once the log has failed for good (failed-stop): what
	// is not durable by then never will be.
	Err() error
}

// StateReader loads an instance's committed state on a cache miss: fn is
// called once per stored value (LoadInstance) or map entry (LoadMap, until
// fn returns false). Safe for concurrent use.
type StateReader interface {
	LoadInstance(kg uint16, addrRaw []byte, fn func(name []byte, writtenAt int64, value []byte)) error
	LoadMap(kg uint16, addrRaw, name []byte, fn func(key, value []byte) bool) error
}

// IDSource hands out blocks of message ids that are unique across the
// engine's whole life (restarts included). Safe for concurrent use.
type IDSource interface {
	// NextBlock returns ids [lo, hi) for the caller's exclusive use, or an
	// error if no more can be reserved (the shard then fails).
	NextBlock() (lo, hi uint64, err error)
}

// RecordBatch is the shard's buffer of effect records for one append: the
// records concatenated in Buf, with the end offset of each in Ends.
type RecordBatch struct {
	Buf  []byte
	Ends []int
}

// Reset empties the batch, keeping its buffers.
func (b *RecordBatch) Reset() { b.Buf = b.Buf[:0]; b.Ends = b.Ends[:0] }

// Len is the number of records.
func (b *RecordBatch) Len() int { return len(b.Ends) }

// Record returns record i.
func (b *RecordBatch) Record(i int) []byte {
	start := 0
	if i > 0 {
		start = b.Ends[i-1]
	}
	return b.Buf[start:b.Ends[i]]
}

func (b *RecordBatch) add(rec []byte) {
	b.Buf = append(b.Buf, rec...)
	b.Ends = append(b.Ends, len(b.Buf))
}

// Config configures one shard.
type Config struct {
	// Index is this shard's number, Count the number of shards.
	Index, Count int
	Handler      Handler
	Log          Log
	Store        StateReader
	// IDs hands out the ids of messages this shard makes.
	IDs IDSource
	// ArenaBudget is the state cache size in bytes.
	ArenaBudget int64
	// MailboxCapacity is the capacity of each mailbox lane.
	MailboxCapacity int
	// Clock returns the time in unix nanoseconds. The loop goroutine reads
	// it (once per Step) and New reads it once; Step itself takes the time
	// as its argument.
	Clock func() int64
	// MaxStateBytes bounds one state value.
	MaxStateBytes int
	// MaxRecordBytes bounds one effect record: an invocation whose effects
	// encode larger is dead-lettered instead (the log refuses records that
	// do not fit a segment). Default 32 MiB.
	MaxRecordBytes int
	// MaxInstanceBytes bounds one map state value of an instance (its keys
	// and values); a write past it fails the invocation. 0: no bound.
	MaxInstanceBytes int64
	// KeyRetention is how long (ns) an idempotency key, and the reply kept
	// for an idempotent request, are remembered after the invocation that
	// consumed or answered it. Default 24 h.
	KeyRetention int64
	Logger       *slog.Logger
	// Tracer, when set, records invocation attempts as spans (trace.go).
	Tracer Tracer
	// ExternalSends (cluster mode) keeps sent messages in their records
	// only: the engine's cluster node produces them to the input topic, and
	// the owner delivers them from there. Delayed messages still fire here,
	// so Partition must then map a key group to its partition: a delayed
	// send to another partition than the sender's is dead-lettered. Every
	// reply is then in its record too (ExpireAt 0 when it is not kept), for
	// the node to produce it inside the transaction that commits the work.
	ExternalSends bool
	Partition     func(kg uint16) int32
}

// Stats are a shard's counters, readable from any goroutine.
type Stats struct {
	Invocations, Failures, Batches, Records uint64
	QueueDepth                              int64
	Arena                                   ArenaStats
	Mailbox                                 int
	Timers                                  int64
}

// Shard runs the instances of its key groups on one goroutine locked to an
// OS thread. Other goroutines talk to it only through its Mailbox (Push, or
// a Producer lane), Complete, and the few atomic fields read by Stats and
// the engine.
type Shard struct {
	cfg     Config
	mb      *Mailbox
	arena   *Arena
	wheel   *TimerWheel[delayedMsg]
	tokens  map[tokenKey]timerRef
	insts   map[uint64]*instance
	free    []*instance
	left    int // messages left unconsumed by abandoned async calls (abandon.go)
	runq    ring[*instance]
	out     [][]format.Envelope // per destination shard, waiting for the next append
	backlog [][]format.Envelope // per destination shard, pushed after append but refused (lane full)
	prods   []*Producer         // lane into each other shard's mailbox
	peers   []*Shard

	// unroutable holds messages that reached this shard for a function type
	// that is not registered; they are dead-lettered at the next safe point
	// of Step (never in the middle of another invocation's commit).
	unroutable []format.Envelope

	// Output commit (commit.go).
	batch   RecordBatch
	staged  []release     // releases of the batch being built
	pending ring[release] // appended, waiting for durability; ordered by end
	seq     uint64        // batch sequence: stamps arena entries
	seqEnds ring[seqEnd]  // log end of each batch not yet applied (arena horizon)
	safeSeq uint64        // every batch up to it is applied to the store
	lastEnd uint64        // log end of the last append

	// Message ids (ids.go).
	idNext, idHi uint64

	// Scratch of the invocation path.
	rb       format.RecordBuilder
	recBuf   []byte
	drainBuf []format.Envelope
	cur      format.Envelope
	oneBuf   [1]format.Envelope
	inv      Invocation
	blobBuf  []byte
	keyBuf   []byte
	loadBuf  []byte
	entries  []format.BlobEntry
	cancels  []uint64

	// The running invocation, for the engine's watchdog (watch.go).
	watch watch

	// Cached map state (maps.go).
	maps      map[string]*mapState
	mapBytes  int64
	mapKeyBuf []byte
	steps     uint64 // Steps run, for the maps' least-recently-used order

	// qbytes counts the bytes (EnvelopeBytes) of the messages this shard
	// holds: queued at instances, in remote calls, waiting for a peer's
	// lane, set aside, and delayed in the timer wheel. Published at the end
	// of every Step for the engine's admission (QueuedBytes).
	qbytes    int64
	qbytesPub atomic.Int64

	// Completed remote calls, handed back by Complete (async.go).
	doneMu    sync.Mutex
	doneCalls []*AsyncCall
	controls  []func()
	stoppedMu sync.Mutex
	stopped   bool // the loop ended: Complete releases instead of queueing
	doneN     atomic.Int32
	doneBuf   []*AsyncCall

	// cross-goroutine
	applied      atomic.Uint64 // store applied log position, set by the engine
	produced     atomic.Uint64 // messages this shard enqueued (sends, timer fires)
	consumed     atomic.Uint64 // messages this shard finished (consumed or dead-lettered)
	ingressIn    atomic.Uint64 // ingress messages accepted for this shard (engine adds)
	depth        atomic.Int64
	waitDurable  atomic.Bool
	unreleased   atomic.Int64
	stopping     atomic.Bool
	invocations  atomic.Uint64
	failures     atomic.Uint64
	batches      atomic.Uint64
	records      atomic.Uint64
	timersN      atomic.Int64
	failed       atomic.Pointer[error]
	done         chan struct{}
	started      bool
	lastAppended atomic.Uint64
}

// New makes a shard; Start runs it (or a test calls Step).
func New(cfg Config) *Shard {
	// The engine derives every size (engine.Options); the shard has no
	// defaults of its own.
	if cfg.MailboxCapacity <= 0 || cfg.ArenaBudget <= 0 || cfg.MaxStateBytes <= 0 || cfg.MaxRecordBytes <= 0 || cfg.KeyRetention <= 0 {
		panic("shard: Config needs positive MailboxCapacity, ArenaBudget, MaxStateBytes, MaxRecordBytes and KeyRetention")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil || cfg.Handler == nil || cfg.Log == nil || cfg.IDs == nil {
		panic("shard: Config needs Clock, Handler, Log and IDs")
	}
	chunk := 1 << 20
	if cfg.ArenaBudget < 16<<20 {
		chunk = max(int(cfg.ArenaBudget/16), 4096)
	}
	s := &Shard{
		cfg:     cfg,
		mb:      NewMailbox(cfg.MailboxCapacity),
		arena:   NewArena(cfg.ArenaBudget, chunk),
		wheel:   NewTimerWheel[delayedMsg](time.Millisecond, cfg.Clock()),
		tokens:  make(map[tokenKey]timerRef),
		insts:   make(map[uint64]*instance),
		out:     make([][]format.Envelope, cfg.Count),
		backlog: make([][]format.Envelope, cfg.Count),
		done:    make(chan struct{}),
	}
	s.inv.s = s
	return s
}

// Mailbox is the shard's mailbox (ingress pushes with Mailbox().Push).
func (s *Shard) Mailbox() *Mailbox { return s.mb }

// Index is the shard's number.
func (s *Shard) Index() int { return s.cfg.Index }

// Connect gives the shard its peers (all shards, including itself); call
// before Start.
func (s *Shard) Connect(peers []*Shard) {
	s.peers = peers
	s.prods = make([]*Producer, len(peers))
	for i, p := range peers {
		if i != s.cfg.Index {
			s.prods[i] = p.mb.NewProducer()
		}
	}
}

// SetApplied tells the shard how far the store has applied the log; state
// written by records before it may be evicted from the cache.
func (s *Shard) SetApplied(pos uint64) {
	s.applied.Store(pos)
}

// NotifyDurable wakes the shard if it waits for the log to become durable.
func (s *Shard) NotifyDurable() {
	if s.waitDurable.Load() {
		s.mb.Wake()
	}
}

// ConsumedCount returns how many messages this shard finished (consumed or
// dead-lettered). For quiescence detection: read every shard's consumed
// count first, then every shard's produced count.
func (s *Shard) ConsumedCount() uint64 { return s.consumed.Load() }

// ProducedCount returns how many messages were enqueued for this shard:
// sends and timer fires it made, plus ingress messages the engine counted
// with AddIngress.
func (s *Shard) ProducedCount() uint64 { return s.produced.Load() + s.ingressIn.Load() }

// AddIngress counts n ingress messages accepted for this shard; the engine
// calls it after a successful push (a message is never consumed before its
// push returns, and quiescence reads consumed counts first).
func (s *Shard) AddIngress(n uint64) { s.ingressIn.Add(n) }

// QueuedBytes is the bytes of the messages the shard holds (as of its last
// Step): queued at instances, in remote calls, waiting for a peer's lane,
// and delayed. The engine refuses ingress for a shard over its share of
// Options.MaxQueuedBytes.
func (s *Shard) QueuedBytes() int64 { return s.qbytesPub.Load() }

// ArenaOverBudget reports whether the state cache has grown past 1.5 times
// its budget (dirty state that the store has not applied cannot be evicted).
func (s *Shard) ArenaOverBudget() bool {
	return s.arena.st.capacity.Load() > s.arena.budget+s.arena.budget/2
}

// IngressCount is the number of ingress messages counted by AddIngress.
func (s *Shard) IngressCount() uint64 { return s.ingressIn.Load() }

// Unreleased is the number of acknowledgements and replies waiting for
// durability.
func (s *Shard) Unreleased() int64 { return s.unreleased.Load() }

// LastAppended is the log position after the shard's last append.
func (s *Shard) LastAppended() uint64 { return s.lastAppended.Load() }

// Stats returns the shard's counters.
func (s *Shard) Stats() Stats {
	return Stats{
		Invocations: s.invocations.Load(),
		Failures:    s.failures.Load(),
		Batches:     s.batches.Load(),
		Records:     s.records.Load(),
		QueueDepth:  s.depth.Load(),
		Arena:       s.arena.Stats(),
		Mailbox:     s.mb.Len(),
		Timers:      s.timersN.Load(),
	}
}

// Err is the shard's failed-stop cause, if any.
func (s *Shard) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail stops the shard for good: it runs nothing more, appends nothing
// more, hands nothing more to its peers, and fails every pending
// acknowledgement with err.
func (s *Shard) fail(err error) {
	if s.failed.CompareAndSwap(nil, &err) {
		s.cfg.Logger.Error("shard failed-stop", "shard", s.cfg.Index, "err", err)
	}
	for j := range s.out {
		clear(s.out[j])
		s.out[j] = s.out[j][:0]
	}
	s.batch.Reset()
	s.failStaged(err)
	s.releaseAll(err)
	s.failQueued(err)
}

// failQueued fails the acknowledgements of every message the failed shard
// holds and will never process: queued at instances, in the mailbox, in
// remote calls that complete, or set aside as unroutable.
func (s *Shard) failQueued(err error) {
	for _, head := range s.insts {
		for inst := head; inst != nil; inst = inst.next {
			for i := 0; i < inst.q.len(); i++ {
				if a := inst.q.at(i).Ack; a != nil {
					a.Release(err)
				}
			}
			inst.q.reset()
		}
	}
	s.drainBuf = s.mb.Drain(s.drainBuf[:0], maxDrain)
	for i := range s.drainBuf {
		if a := s.drainBuf[i].Ack; a != nil {
			a.Release(err)
		}
		s.drainBuf[i] = format.Envelope{}
	}
	if s.doneN.Load() > 0 {
		for _, c := range s.takeDone() {
			releaseCall(c, err)
		}
	}
	for i := range s.unroutable {
		if a := s.unroutable[i].Ack; a != nil {
			a.Release(err)
		}
	}
	s.unroutable = s.unroutable[:0]
}

// Restore enqueues a recovered pending message (before Start).
func (s *Shard) Restore(env format.Envelope) {
	s.produced.Add(1)
	s.enqueueLocal(&env)
	s.qbytesPub.Store(s.qbytes)
}

// RestoreTimer re-arms a recovered delayed message (before Start). Every
// stored delayed message is armed; when two carry the same token, the token
// names the newest (the larger id), and the older still fires.
func (s *Shard) RestoreTimer(fireAt int64, env format.Envelope, token string) {
	s.restoreTimer(fireAt, env, token)
}

// Start runs the shard loop on a new goroutine locked to an OS thread.
func (s *Shard) Start() {
	s.started = true
	go s.loop()
}

// Stop asks the loop to finish and waits for it, at most timeout (a shard
// held by an invocation that never returns cannot stop); it reports whether
// the loop finished. The engine stops shards only after the engine is
// quiescent.
func (s *Shard) Stop(timeout time.Duration) bool {
	if !s.started {
		return true
	}
	s.stopping.Store(true)
	s.mb.Wake()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return true
	case <-t.C:
		return false
	}
}
