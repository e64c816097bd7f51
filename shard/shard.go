package shard

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"
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
// called once per stored value. Safe for concurrent use.
type StateReader interface {
	LoadInstance(kg uint16, addrRaw []byte, fn func(name []byte, writtenAt int64, value []byte)) error
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
	// ArenaBudget is the state cache size in bytes.
	ArenaBudget int64
	// MailboxCapacity is the capacity of each mailbox lane.
	MailboxCapacity int
	// Clock returns the time in unix nanoseconds (only the loop reads it).
	Clock func() int64
	// IDBase is OR-ed into message ids made by this shard: it holds the
	// engine's boot number and the shard index (see MessageID).
	IDBase uint64
	// MaxStateBytes bounds one state value.
	MaxStateBytes int
	Logger        *slog.Logger
}

// MessageID builds a message id: 16 bits of boot number, 8 bits of source
// (a shard index, or 255 for ingress), 40 bits of sequence. Ids are unique
// across restarts because the boot number is durable and increases at every
// Open.
func MessageID(boot uint16, source uint8, seq uint64) uint64 {
	return uint64(boot)<<48 | uint64(source)<<40 | seq&(1<<40-1)
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
// a Producer lane) and the few atomic fields read by Stats and the engine.
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
	out     [][]Envelope // per destination shard, waiting for the next append
	backlog [][]Envelope // per destination shard, pushed after append but refused (lane full)
	prods   []*Producer  // lane into each other shard's mailbox
	peers   []*Shard

	// batch state
	batch    RecordBatch
	rb       RecordBuilder
	recBuf   []byte
	seq      uint64 // batch sequence (arena "lsn")
	pending  ring[release]
	seqEnds  ring[seqEnd]
	safeSeq  uint64
	lastEnd  uint64
	idSeq    uint64
	drainBuf []Envelope
	cur      Envelope
	inv      Invocation
	blobBuf  []byte
	keyBuf   []byte
	loadBuf  []byte
	entries  []blobEntry

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

type tokenKey struct {
	sender uint64
	token  string
}

type timerRef struct {
	h  TimerHandle
	id uint64
}

type delayedMsg struct {
	env   Envelope
	token string
}

type release struct {
	seq     uint64
	ack     *Ack
	reqID   uint64
	rtype   string
	payload []byte
}

type seqEnd struct {
	seq uint64
	end uint64
}

// instance is an active address: one with queued messages or a call in
// flight. Idle instances are removed from the table (their state stays in
// the arena or the store).
type instance struct {
	addr   Address
	hash   uint64
	fn     *FuncType
	q      ring[Envelope]
	busy   bool
	queued bool
	next   *instance
	// call is the async call in flight (busy); abandoned: see ErrAbandoned.
	call      *AsyncCall
	abandoned bool
}

// New makes a shard; Start runs it.
func New(cfg Config) *Shard {
	if cfg.MailboxCapacity <= 0 {
		cfg.MailboxCapacity = 16384
	}
	if cfg.ArenaBudget <= 0 {
		cfg.ArenaBudget = 64 << 20
	}
	if cfg.MaxStateBytes <= 0 {
		cfg.MaxStateBytes = 16 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	chunk := 1 << 20
	if cfg.ArenaBudget < 16<<20 {
		chunk = int(cfg.ArenaBudget / 16)
		if chunk < 4096 {
			chunk = 4096
		}
	}
	s := &Shard{
		cfg:    cfg,
		mb:     NewMailbox(cfg.MailboxCapacity),
		arena:  NewArena(cfg.ArenaBudget, chunk),
		wheel:  NewTimerWheel[delayedMsg](time.Millisecond, cfg.Clock()),
		tokens: make(map[tokenKey]timerRef),
		insts:  make(map[uint64]*instance),
		out:    make([][]Envelope, cfg.Count),
		done:   make(chan struct{}),
	}
	s.backlog = make([][]Envelope, cfg.Count)
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

// Counters returns (produced+ingress, consumed) message counts, for
// quiescence detection: read consumed of every shard first, then produced.
func (s *Shard) Counters() (produced, consumed uint64) {
	return s.produced.Load() + s.ingressIn.Load(), s.consumed.Load()
}

// ConsumedCount returns the consumed counter alone.
func (s *Shard) ConsumedCount() uint64 { return s.consumed.Load() }

// ProducedCount returns produced plus ingress messages.
func (s *Shard) ProducedCount() uint64 { return s.produced.Load() + s.ingressIn.Load() }

// AddIngress counts n ingress messages accepted for this shard; the engine
// calls it before pushing them.
func (s *Shard) AddIngress(n uint64) { s.ingressIn.Add(n) }

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

// Restore enqueues a recovered pending message (before Start).
func (s *Shard) Restore(env Envelope) {
	s.produced.Add(1)
	s.enqueueLocal(&env)
}

// RestoreTimer re-arms a recovered delayed message (before Start).
func (s *Shard) RestoreTimer(fireAt int64, env Envelope, token string) {
	s.addTimer(fireAt, env, token)
}

// Start runs the shard loop on a new goroutine locked to an OS thread.
func (s *Shard) Start() {
	s.started = true
	go s.loop()
}

// Stop asks the loop to finish and waits for it. The engine stops shards
// only after the engine is quiescent.
func (s *Shard) Stop() {
	if !s.started {
		return
	}
	s.stopping.Store(true)
	s.mb.Wake()
	<-s.done
}

// Complete hands a finished async call back to its shard; any goroutine.
// It never drops the call: when the mailbox is full it retries.
func (s *Shard) Complete(call *AsyncCall) {
	env := Envelope{Kind: KindResume, Ctl: call}
	for !s.mb.Push(&env) {
		select {
		case <-s.done: // stopped: nobody will take it (releaseUnprocessed did)
			return
		default:
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// Control runs fn on the shard goroutine and waits for it.
func (s *Shard) Control(fn func()) {
	done := make(chan struct{})
	env := Envelope{Kind: KindControl, Ctl: &control{fn: fn, done: done}}
	for !s.mb.Push(&env) {
		time.Sleep(50 * time.Microsecond)
	}
	<-done
}

type control struct {
	fn   func()
	done chan struct{}
}

func (s *Shard) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(s.done)
	spins := 0
	for {
		now := s.cfg.Clock()
		worked := s.Step(now)
		if s.stopping.Load() && !worked && s.mb.Len() == 0 {
			s.releaseUnprocessed()
			return
		}
		if worked {
			spins = 0
			continue
		}
		// Spin a little before parking: a wake-up through the scheduler
		// costs far more than a message, and producers usually come back
		// within microseconds under load.
		if spins < idleSpins && s.mb.Len() == 0 {
			spins++
			runtime.Gosched()
			continue
		}
		spins = 0
		// Idle: sleep until a message, a wake-up or the next timer.
		wait := time.Duration(-1)
		if at, ok := s.wheel.Next(); ok {
			wait = time.Duration(at - now)
			if wait < 0 {
				wait = 0
			}
		}
		if s.hasBacklog() {
			// Messages wait for room in a peer's lane; the peer does not
			// wake us when it drains, so poll.
			if wait < 0 || wait > 200*time.Microsecond {
				wait = 200 * time.Microsecond
			}
		}
		if s.pending.len() > 0 {
			if err := s.cfg.Log.Err(); err != nil {
				// The log failed: nothing pending will become durable.
				// Tell every waiter, acknowledge nothing.
				s.fail(err)
				s.releaseAll(err)
				continue
			}
			s.waitDurable.Store(true)
			if s.cfg.Log.Durable() >= s.lastEnd {
				s.waitDurable.Store(false)
				continue
			}
			if wait < 0 || wait > 2*time.Millisecond {
				wait = 2 * time.Millisecond
			}
		}
		if wait != 0 {
			s.mb.Wait(wait)
		}
		s.waitDurable.Store(false)
	}
}

// idleSpins is how many times an idle shard yields before it parks.
const idleSpins = 50

// maxDrain and maxRun bound the work of one Step so that appends (and so
// acknowledgements) are not delayed by long batches.
const (
	maxDrain = 1024
	maxRun   = 1024
)

// Step runs one round of the shard: take mailbox envelopes, fire due
// timers, run ready instances, append the batch's effect records, hand
// cross-shard messages over, and release what became durable. It returns
// whether it did any work. It is the deterministic core: all time comes
// from now.
func (s *Shard) Step(now int64) bool {
	worked := false
	s.inv.now = now
	// 1. Mailbox.
	s.drainBuf = s.mb.Drain(s.drainBuf[:0], maxDrain)
	for i := range s.drainBuf {
		e := &s.drainBuf[i]
		switch e.Kind {
		case KindMessage:
			s.enqueueLocal(e)
		case KindResume:
			s.resume(e.Ctl.(*AsyncCall))
		case KindControl:
			c := e.Ctl.(*control)
			c.fn()
			close(c.done)
		}
		s.drainBuf[i] = Envelope{}
		worked = true
	}
	// 2. Timers.
	s.wheel.Advance(now, s.fire)
	// 3. Run queue.
	for n := 0; n < maxRun && s.runq.len() > 0; n++ {
		inst := s.runq.pop()
		inst.queued = false
		s.run(inst)
		worked = true
	}
	// 4. Append and hand over.
	if s.batch.Len() > 0 {
		s.commitBatch()
		worked = true
	} else {
		s.flushOut()
	}
	if s.retryBacklog() {
		worked = true
	}
	// 5. Release what is durable; update the eviction horizon.
	if s.releaseDurable() {
		worked = true
	}
	s.updateSafe()
	return worked
}

func (s *Shard) fail(err error) {
	if s.failed.Load() == nil {
		s.failed.Store(&err)
		s.cfg.Logger.Error("shard failed-stop", "shard", s.cfg.Index, "err", err)
	}
}

// commitBatch appends the batch's records and then releases the
// cross-shard messages they produced. The order is the safety argument of
// cross-shard flow before durability: a record that consumes a message is
// appended after the record that produced it, because the message leaves
// this shard only once its producer's record has been appended, and the log
// is one totally ordered sequence. Recovery therefore restores a prefix of
// that sequence, which never contains a consumer without its producer.
func (s *Shard) commitBatch() {
	s.seq++
	end, err := s.cfg.Log.Append(&s.batch)
	s.batches.Add(1)
	s.records.Add(uint64(s.batch.Len()))
	s.batch.Reset()
	if err != nil {
		// Failed-stop: nothing of this batch is acknowledged. Messages it
		// produced may still flow (they are not outputs); their effects
		// can never become durable either.
		s.fail(err)
		s.releaseAll(err)
		return
	}
	s.lastEnd = end
	s.lastAppended.Store(end)
	s.seqEnds.push(seqEnd{seq: s.seq, end: end})
	s.flushOut()
}

// releaseAll fails every pending acknowledgement (replies are dropped:
// their requesters time out).
func (s *Shard) releaseAll(err error) {
	for s.pending.len() > 0 {
		r := s.pending.pop()
		if r.ack != nil {
			r.ack.Release(err)
		}
		s.unreleased.Add(-1)
	}
}

func (s *Shard) flushOut() {
	for j := range s.out {
		if len(s.out[j]) == 0 {
			continue
		}
		if len(s.backlog[j]) > 0 {
			s.backlog[j] = append(s.backlog[j], s.out[j]...)
		} else {
			k := 0
			for ; k < len(s.out[j]); k++ {
				if !s.prods[j].Push(&s.out[j][k]) {
					break
				}
			}
			if k < len(s.out[j]) {
				s.backlog[j] = append(s.backlog[j], s.out[j][k:]...)
			}
			if k > 0 {
				s.peers[j].mb.Wake()
			}
		}
		clear(s.out[j])
		s.out[j] = s.out[j][:0]
	}
}

func (s *Shard) hasBacklog() bool {
	for j := range s.backlog {
		if len(s.backlog[j]) > 0 {
			return true
		}
	}
	return false
}

// retryBacklog pushes messages that found a full lane earlier. Order per
// destination is kept: new messages queue behind the backlog.
func (s *Shard) retryBacklog() bool {
	moved := false
	for j := range s.backlog {
		b := s.backlog[j]
		if len(b) == 0 {
			continue
		}
		k := 0
		for ; k < len(b); k++ {
			if !s.prods[j].Push(&b[k]) {
				break
			}
		}
		if k > 0 {
			moved = true
			s.peers[j].mb.Wake()
			n := copy(b, b[k:])
			clear(b[n:])
			s.backlog[j] = b[:n]
		}
	}
	return moved
}

func (s *Shard) releaseDurable() bool {
	if s.pending.len() == 0 {
		return false
	}
	durable := s.cfg.Log.Durable()
	// Map batch sequence numbers to log positions.
	did := false
	for s.pending.len() > 0 {
		r := s.pending.peek()
		end, ok := s.endOf(r.seq)
		if !ok || end > durable {
			break
		}
		s.pending.pop()
		if r.ack != nil {
			r.ack.Release(nil)
		}
		if r.reqID != 0 {
			s.cfg.Handler.Reply(r.reqID, r.rtype, r.payload)
		}
		s.unreleased.Add(-1)
		did = true
	}
	return did
}

// endOf returns the log end of batch seq, if it was appended.
func (s *Shard) endOf(seq uint64) (uint64, bool) {
	// seqEnds is ordered by seq. updateSafe keeps every entry a pending
	// release still needs, so a short forward search finds it; a seq at or
	// below safeSeq was applied, hence durable.
	for i := 0; i < s.seqEnds.len(); i++ {
		se := s.seqEnds.at(i)
		if se.seq == seq {
			return se.end, true
		}
		if se.seq > seq {
			break
		}
	}
	if seq <= s.safeSeq {
		return 0, true
	}
	return 0, false
}

func (s *Shard) updateSafe() {
	applied := s.applied.Load()
	for s.seqEnds.len() > 0 {
		se := s.seqEnds.peek()
		if se.end > applied {
			break
		}
		// Keep entries still needed to release pending acknowledgements.
		if s.pending.len() > 0 && s.pending.peek().seq <= se.seq {
			break
		}
		s.seqEnds.pop()
		s.safeSeq = se.seq
	}
	s.arena.SetSafeLSN(s.safeSeq)
}

// enqueueLocal queues a message for an address this shard owns.
func (s *Shard) enqueueLocal(e *Envelope) {
	h := e.Target.Hash()
	inst := s.lookup(h, &e.Target)
	if inst == nil {
		fn := s.cfg.Handler.Lookup(e.Target.Namespace, e.Target.Type)
		if fn == nil {
			s.deadLetterUnknown(e)
			return
		}
		inst = s.newInstance(h, e.Target, fn)
	} else if inst.abandoned {
		s.leaveUnconsumed(e, errAbandonedBehind)
		return
	}
	inst.q.push(*e)
	s.depth.Add(1)
	if !inst.busy && !inst.queued {
		inst.queued = true
		s.runq.push(inst)
	}
}

func (s *Shard) lookup(h uint64, a *Address) *instance {
	for inst := s.insts[h]; inst != nil; inst = inst.next {
		if inst.addr == *a {
			return inst
		}
	}
	return nil
}

func (s *Shard) newInstance(h uint64, a Address, fn *FuncType) *instance {
	var inst *instance
	if n := len(s.free); n > 0 {
		inst = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		inst = &instance{}
	}
	inst.addr = a
	inst.hash = h
	inst.fn = fn
	inst.next = s.insts[h]
	s.insts[h] = inst
	return inst
}

func (s *Shard) retire(inst *instance) {
	if inst.fn == nil || inst.busy || inst.queued || inst.q.len() > 0 || inst.abandoned {
		return // already retired, or still has work (or holds back an abandoned address)
	}
	p := s.insts[inst.hash]
	if p == inst {
		if inst.next == nil {
			delete(s.insts, inst.hash)
		} else {
			s.insts[inst.hash] = inst.next
		}
	} else {
		for p != nil && p.next != inst {
			p = p.next
		}
		if p != nil {
			p.next = inst.next
		}
	}
	inst.next = nil
	inst.fn = nil
	inst.addr = Address{}
	inst.q.reset()
	s.free = append(s.free, inst)
}

// deliver routes a message produced on this shard (a send or a fired
// timer): to a local instance, or to the outbox of its shard.
func (s *Shard) deliver(e *Envelope) {
	s.produced.Add(1)
	j := ShardOf(KeyGroup(e.Target.Hash()), s.cfg.Count)
	if j == s.cfg.Index {
		s.enqueueLocal(e)
		return
	}
	s.out[j] = append(s.out[j], *e)
}

func (s *Shard) fire(at int64, t delayedMsg) {
	s.timersN.Add(-1)
	if t.token != "" {
		k := tokenKey{sender: t.env.Caller.Hash(), token: t.token}
		if ref, ok := s.tokens[k]; ok && ref.id == t.env.ID {
			delete(s.tokens, k)
		}
	}
	s.deliver(&t.env)
}

func (s *Shard) addTimer(fireAt int64, env Envelope, token string) {
	h := s.wheel.Add(fireAt, delayedMsg{env: env, token: token})
	s.timersN.Add(1)
	if token != "" {
		k := tokenKey{sender: env.Caller.Hash(), token: token}
		if old, ok := s.tokens[k]; ok {
			// A token reused while pending replaces the pending message.
			if _, ok := s.wheel.Cancel(old.h); ok {
				s.timersN.Add(-1)
			}
		}
		s.tokens[k] = timerRef{h: h, id: env.ID}
	}
}

// cancelTimer cancels the pending delayed message of sender with token and
// returns its id.
func (s *Shard) cancelTimer(sender uint64, token string) (uint64, bool) {
	k := tokenKey{sender: sender, token: token}
	ref, ok := s.tokens[k]
	if !ok {
		return 0, false
	}
	delete(s.tokens, k)
	if _, ok := s.wheel.Cancel(ref.h); !ok {
		return 0, false
	}
	s.timersN.Add(-1)
	return ref.id, true
}

func (s *Shard) nextID() uint64 {
	s.idSeq++
	return s.cfg.IDBase | s.idSeq&(1<<40-1)
}

// run gives one instance its turn: one message for an embedded function,
// the whole queue as one batch for a remote one.
func (s *Shard) run(inst *instance) {
	if inst.busy || inst.q.len() == 0 {
		s.retire(inst)
		return
	}
	if inst.fn.Async {
		s.startAsync(inst)
		return
	}
	s.cur = inst.q.pop() // a field, not a local: the invocation keeps a pointer
	s.depth.Add(-1)
	s.invoke(inst, &s.cur)
	s.cur = Envelope{}
	// The invocation may have sent to itself, which queued the instance
	// already: never queue it twice (a stale run-queue entry could outlive
	// the instance's retirement and run it under another address).
	if inst.q.len() > 0 {
		if !inst.queued {
			inst.queued = true
			s.runq.push(inst)
		}
	} else {
		s.retire(inst)
	}
}

var errUnknownType = errors.New("shard: no function registered for this type")

func (s *Shard) deadLetterUnknown(e *Envelope) {
	// Consume the message durably so it is not redelivered after a crash,
	// and record it in the dead-letters egress.
	s.inv.begin(nil, e.Target, s.inv.now)
	s.inv.msg = e
	s.commitDeadLetter(e.Target, []Envelope{*e}, fmt.Errorf("%w: %s", errUnknownType, e.Target.FunctionType()))
}

// invoke runs one embedded invocation and commits its effects.
func (s *Shard) invoke(inst *instance, e *Envelope) {
	inv := &s.inv
	if err := inv.begin(inst.fn, inst.addr, inv.now); err != nil {
		s.commitDeadLetter(inst.addr, []Envelope{*e}, err)
		return
	}
	inv.msg = e
	inv.caller = e.Caller
	inv.replyTo = e.ReplyTo
	s.invocations.Add(1)
	err := s.safeInvoke(inv)
	if err == nil {
		err = inv.err
	}
	if err != nil {
		s.failures.Add(1)
		s.commitDeadLetter(inst.addr, []Envelope{*e}, err)
		return
	}
	s.commitInvocation(inv, e.ID, nil, e.Ack)
}

func (s *Shard) safeInvoke(inv *Invocation) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("function panicked: %v", r)
		}
	}()
	return s.cfg.Handler.Invoke(inv)
}

// commitInvocation turns the invocation's effects into one record, applies
// them to the shard's memory and queues the releases. consumed lists
// message ids (one, or a remote batch's); acks their acknowledgements.
func (s *Shard) commitInvocation(inv *Invocation, id uint64, batch []Envelope, ack *Ack) {
	rb := &s.rb
	rb.Begin(s.recBuf, inv.self)
	if batch == nil {
		rb.Consumed(id)
	} else {
		for i := range batch {
			rb.Consumed(batch[i].ID)
		}
	}
	rb.BeginStates()
	dirty := false
	for i := range inv.slots {
		sl := &inv.slots[i]
		if !sl.dirty {
			continue
		}
		dirty = true
		if sl.present {
			rb.State(sl.spec.Name, OpSet, sl.writtenAt, sl.value)
		} else {
			rb.State(sl.spec.Name, OpDelete, sl.writtenAt, nil)
		}
	}
	rb.BeginMessages()
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.token != "" && inv.tokenReusedAfter(i) {
			ps.skip = true // a later SendAfter of this invocation replaces it
			continue
		}
		ps.env.ID = s.nextID()
		rb.Message(&ps.env, ps.fireAt, ps.token)
	}
	rb.BeginCancels()
	for _, tok := range inv.cancels {
		if id, ok := s.cancelTimer(inv.selfHash, tok); ok {
			rb.Cancel(id)
		}
	}
	// A delayed message whose token is still pending replaces the pending
	// one: cancel it in the record too, or the store would keep it and it
	// would fire after a restart.
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.token != "" && !ps.skip {
			if id, ok := s.cancelTimer(inv.selfHash, ps.token); ok {
				rb.Cancel(id)
			}
		}
	}
	rb.BeginEgress()
	for i := range inv.egress {
		eg := &inv.egress[i]
		rb.Egress(eg.name, eg.typ, eg.payload)
	}
	rec := rb.End()
	s.recBuf = rec[:0]
	s.batch.add(rec)

	// Apply to memory.
	if dirty {
		s.storeBlob(inv)
	}
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.skip {
			ps.env = Envelope{}
			ps.skip = false
			continue
		}
		if ps.fireAt != 0 {
			s.addTimer(ps.fireAt, ps.env, ps.token)
		} else {
			s.deliver(&ps.env)
		}
		ps.env = Envelope{}
	}
	seq := s.seq + 1 // the sequence commitBatch will give this batch
	if ack != nil {
		s.pending.push(release{seq: seq, ack: ack})
		s.unreleased.Add(1)
	}
	for i := range batch {
		if batch[i].Ack != nil {
			s.pending.push(release{seq: seq, ack: batch[i].Ack})
			s.unreleased.Add(1)
		}
	}
	if inv.hasReply && inv.replyTo != 0 {
		s.pending.push(release{seq: seq, reqID: inv.replyTo, rtype: inv.replyType, payload: inv.replyPayload})
		s.unreleased.Add(1)
	}
	if batch == nil {
		s.consumed.Add(1)
	} else {
		s.consumed.Add(uint64(len(batch)))
	}
	inv.end()
}

// DeadLetterEgress is the egress that receives messages whose invocation
// failed for good.
const DeadLetterEgress = "dead-letters"

// DeadLetterType is the type name of dead-letter records.
const DeadLetterType = "shardfn/dead-letter"

// commitDeadLetter consumes msgs with no effect but a dead-letters egress
// record each.
func (s *Shard) commitDeadLetter(target Address, msgs []Envelope, cause error) {
	inv := &s.inv
	inv.resetEffects()
	inv.self = target
	inv.selfHash = target.Hash()
	for i := range msgs {
		m := &msgs[i]
		s.cfg.Handler.DeadLetter(target, m.Type, cause)
		inv.egress = append(inv.egress, egressOut{name: DeadLetterEgress, typ: DeadLetterType, payload: deadLetterJSON(m, cause)})
	}
	if len(msgs) == 1 {
		s.commitInvocation(inv, msgs[0].ID, nil, msgs[0].Ack)
	} else {
		s.commitInvocation(inv, 0, msgs, nil)
	}
}

func (s *Shard) startAsync(inst *instance) {
	max := inst.fn.MaxBatch
	if max <= 0 {
		max = 1000
	}
	call := &AsyncCall{shard: s, inst: inst, Target: inst.addr, Fn: inst.fn}
	// A batch holds messages of one request chain at most (one ReplyTo),
	// so that the result's sends and reply carry the right request id.
	replyTo := inst.q.peek().ReplyTo
	for inst.q.len() > 0 && len(call.Messages) < max && inst.q.peek().ReplyTo == replyTo {
		call.Messages = append(call.Messages, inst.q.pop())
		s.depth.Add(-1)
	}
	inst.busy = true
	inst.call = call
	s.fillAsyncState(call)
	call.Attempts++
	s.cfg.Handler.StartAsync(call)
}

func (s *Shard) fillAsyncState(call *AsyncCall) {
	inv := &s.inv
	if err := inv.begin(call.Fn, call.Target, inv.now); err != nil {
		call.States = call.States[:0]
		return
	}
	call.States = call.States[:0]
	for i := range inv.slots {
		sl := &inv.slots[i]
		st := AsyncState{Spec: sl.spec, Present: sl.present}
		if sl.present {
			st.Value = append([]byte(nil), sl.value...)
		}
		call.States = append(call.States, st)
	}
	inv.end()
}

// resume applies a completed async call on the shard.
func (s *Shard) resume(call *AsyncCall) {
	inst := call.inst
	inv := &s.inv
	var err error
	retry := false
	if err = inv.begin(call.Fn, call.Target, inv.now); err == nil {
		inv.replyTo = call.Messages[0].ReplyTo // one per batch (startAsync)
		s.invocations.Add(uint64(len(call.Messages)))
		retry, err = s.cfg.Handler.Resume(inv, call)
		if err == nil {
			err = inv.err
		}
	}
	switch {
	case err != nil && errors.Is(err, ErrAbandoned):
		inv.end()
		s.abandon(inst, call, err)
		return
	case err != nil:
		inv.end()
		s.failures.Add(1)
		s.commitDeadLetter(call.Target, call.Messages, err)
	case retry:
		inv.end()
		s.fillAsyncState(call)
		call.Attempts++
		s.cfg.Handler.StartAsync(call)
		return
	default:
		s.commitInvocation(inv, 0, call.Messages, nil)
	}
	inst.busy = false
	inst.call = nil
	if inst.q.len() > 0 {
		if !inst.queued {
			inst.queued = true
			s.runq.push(inst)
		}
	} else {
		s.retire(inst)
	}
}
