package shard

import (
	"github.com/shardfn/shardfn/internal/format"
	"runtime"
	"time"
)

// idleSpins is how many times an idle shard yields before it parks.
const idleSpins = 50

// backlogPoll is how often a shard holding messages for a full peer lane
// retries (the peer does not wake it when it drains).
const backlogPoll = 200 * time.Microsecond

// durablePoll bounds a park while acknowledgements wait for the log (the
// log's OnDurable wakes the shard; this is the safety net).
const durablePoll = 2 * time.Millisecond

// maxDrain and maxRun bound the work of one Step so that appends (and so
// acknowledgements) are not delayed by long batches.
const (
	maxDrain = 1024
	maxRun   = 1024
)

// loop is the shard goroutine: Step with the clock's time until stopped,
// then park until a message, a wake-up, the next timer, or a poll interval.
func (s *Shard) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(s.done)
	spins := 0
	for {
		now := s.cfg.Clock()
		worked := s.Step(now)
		if s.stopping.Load() && !worked && s.mb.Len() == 0 && s.doneN.Load() == 0 {
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
		wait, again := s.parkTime(now)
		if again {
			continue
		}
		if wait != 0 {
			s.mb.Wait(wait)
		}
		s.waitDurable.Store(false)
	}
}

// parkTime says how long an idle shard may sleep (-1: until woken). again
// is true when it should step at once instead (the log moved meanwhile, or
// failed).
func (s *Shard) parkTime(now int64) (wait time.Duration, again bool) {
	wait = -1
	if at, ok := s.wheel.Next(); ok {
		wait = max(time.Duration(at-now), 0)
	}
	if s.hasBacklog() && (wait < 0 || wait > backlogPoll) {
		wait = backlogPoll
	}
	if s.doneN.Load() > 0 {
		return 0, true
	}
	if s.pending.len() > 0 {
		if err := s.cfg.Log.Err(); err != nil {
			// The log failed: nothing pending will become durable.
			s.fail(err)
			return 0, true
		}
		s.waitDurable.Store(true)
		if s.cfg.Log.Durable() >= s.lastEnd {
			s.waitDurable.Store(false)
			return 0, true
		}
		if wait < 0 || wait > durablePoll {
			wait = durablePoll
		}
	}
	return wait, false
}

// Step runs one round of the shard: take mailbox envelopes and completed
// remote calls, fire due timers, run ready instances, append the batch's
// effect records, hand cross-shard messages over, and release what became
// durable. It returns whether it did any work.
//
// Step takes the time as its argument and reads no clock; besides its
// mailbox it reads the log's durable position and the store's applied
// position (atomics), and loads state from the store on a cache miss. With
// those inputs fixed, a sequence of Steps is deterministic, which is what
// the engine's simulator relies on. A failed shard does nothing.
func (s *Shard) Step(now int64) bool {
	if p := s.failed.Load(); p != nil {
		// Answer whatever still arrives with the failure.
		s.failQueued(*p)
		return false
	}
	worked := false
	s.steps++
	s.inv.now = now
	// 1. Mailbox and completed remote calls.
	s.drainBuf = s.mb.Drain(s.drainBuf[:0], maxDrain)
	for i := range s.drainBuf {
		s.enqueueLocal(&s.drainBuf[i])
		s.drainBuf[i] = format.Envelope{}
		worked = true
	}
	if s.resumeDone() {
		worked = true
	}
	// 2. Timers.
	s.wheel.Advance(now, s.fire)
	// 3. Messages for unknown types, then the run queue.
	if s.deadLetterUnroutable() {
		worked = true
	}
	for n := 0; n < maxRun && s.runq.len() > 0 && s.failed.Load() == nil; n++ {
		inst := s.runq.pop()
		inst.queued = false
		s.run(inst)
		worked = true
	}
	if s.failed.Load() != nil {
		return true
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
	s.qbytesPub.Store(s.qbytes)
	if worked {
		s.shrink()
		s.evictMaps()
	}
	return worked
}
