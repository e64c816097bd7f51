package shard

import "github.com/shardfn/shardfn/internal/format"

// instance is an active address: one with queued messages or a call in
// flight. Idle instances are removed from the table (their state stays in
// the arena or the store).
type instance struct {
	addr   format.Address
	hash   uint64
	fn     *FuncType
	q      ring[format.Envelope]
	busy   bool // a remote call of this address is in flight
	queued bool // on the run queue
	next   *instance
	// call is the async call in flight (busy); abandoned: see ErrAbandoned.
	call      *AsyncCall
	abandoned bool
}

// enqueueLocal queues a message for an address this shard owns. A message
// for a function type that is not registered is set aside and dead-lettered
// at the next safe point of Step.
func (s *Shard) enqueueLocal(e *format.Envelope) {
	s.qbytes += EnvelopeBytes(e) // given back when consumed (consumedBytes)
	h := e.Target.Hash()
	inst := s.lookup(h, &e.Target)
	if inst == nil {
		fn := s.cfg.Handler.Lookup(e.Target.Namespace, e.Target.Type)
		if fn == nil {
			s.unroutable = append(s.unroutable, *e)
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

func (s *Shard) lookup(h uint64, a *format.Address) *instance {
	for inst := s.insts[h]; inst != nil; inst = inst.next {
		if inst.addr == *a {
			return inst
		}
	}
	return nil
}

func (s *Shard) newInstance(h uint64, a format.Address, fn *FuncType) *instance {
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

// reschedule puts an instance that has just had its turn back on the run
// queue if it has more messages, or retires it. An invocation may have sent
// to itself, which queued the instance already: it is never queued twice (a
// stale run-queue entry could outlive the instance's retirement and run it
// under another address).
func (s *Shard) reschedule(inst *instance) {
	if inst.q.len() == 0 {
		s.retire(inst)
		return
	}
	if !inst.busy && !inst.queued {
		inst.queued = true
		s.runq.push(inst)
	}
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
	inst.addr = format.Address{}
	inst.q.reset()
	s.free = append(s.free, inst)
}

// run gives one instance its turn: one message for an embedded function,
// the whole queue as one batch for a remote one. A RepairType message runs
// on the shard like an embedded invocation even for a remote type, in its
// place in the queue (a remote batch stops before it).
func (s *Shard) run(inst *instance) {
	if inst.busy || inst.q.len() == 0 {
		s.retire(inst)
		return
	}
	if inst.fn.Async && inst.q.peek().Type != RepairType {
		s.startAsync(inst)
		return
	}
	s.cur = inst.q.pop() // a field, not a local: the invocation keeps a pointer
	s.depth.Add(-1)
	s.invoke(inst, &s.cur)
	s.cur = format.Envelope{}
	s.reschedule(inst)
}
