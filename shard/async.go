package shard

import (
	"errors"
	"fmt"
)

// Remote (async) function types run off the shard: the shard hands an
// address's queued messages, one request chain at most, with a copy of its
// state to Handler.StartAsync; the result comes back through Complete and is
// applied on the shard as one effect record, like an embedded invocation.
// The address is busy meanwhile: its later messages wait in its queue.

// Complete hands a finished async call back to its shard; any goroutine.
func (s *Shard) Complete(call *AsyncCall) {
	s.stoppedMu.Lock()
	stopped := s.stopped
	s.stoppedMu.Unlock()
	if stopped { // nobody will take it: its messages were not processed
		releaseCall(call, errStoppedUnprocessed)
		return
	}
	s.doneMu.Lock()
	s.doneCalls = append(s.doneCalls, call)
	s.doneMu.Unlock()
	s.doneN.Add(1)
	s.mb.Wake()
}

// control runs fn on the shard goroutine, at the start of its next Step,
// and waits for it. For reads of the shard's memory (Inspect); the shard
// must be running.
func (s *Shard) control(fn func()) {
	done := make(chan struct{})
	s.doneMu.Lock()
	s.controls = append(s.controls, func() { fn(); close(done) })
	s.doneMu.Unlock()
	s.doneN.Add(1)
	s.mb.Wake()
	<-done
}

// takeDone takes the completed calls off the completion queue, for a shard
// that stops without applying them; it runs the pending controls (on the
// shard goroutine), so that no control waits for a shard that stopped.
func (s *Shard) takeDone() []*AsyncCall {
	calls, _ := s.swapDone(nil)
	return calls
}

// swapDone takes the completed calls, leaving buf as the completion queue,
// and runs the pending controls; it returns the calls and how many
// controls ran.
func (s *Shard) swapDone(buf []*AsyncCall) ([]*AsyncCall, int) {
	s.doneMu.Lock()
	calls := s.doneCalls
	s.doneCalls = buf
	controls := s.controls
	s.controls = nil
	s.doneN.Store(0)
	s.doneMu.Unlock()
	for _, fn := range controls {
		fn()
	}
	return calls, len(controls)
}

// resumeDone runs the pending controls and applies every completed call.
func (s *Shard) resumeDone() bool {
	if s.doneN.Load() == 0 {
		return false
	}
	var controls int
	s.doneBuf, controls = s.swapDone(s.doneBuf[:0])
	for i, call := range s.doneBuf {
		s.resume(call)
		s.doneBuf[i] = nil
	}
	return len(s.doneBuf) > 0 || controls > 0
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
	for inst.q.len() > 0 && len(call.Messages) < max && inst.q.peek().ReplyTo == replyTo && inst.q.peek().Type != RepairType {
		call.Messages = append(call.Messages, inst.q.pop())
		s.depth.Add(-1)
	}
	inst.busy = true
	inst.call = call
	s.startCall(call)
}

// startCall (re)starts a call with a fresh copy of the instance's state.
func (s *Shard) startCall(call *AsyncCall) {
	if err := s.fillAsyncState(call); err != nil {
		s.fail(err)
		return
	}
	call.Attempts++
	s.cfg.Handler.StartAsync(call)
}

func (s *Shard) fillAsyncState(call *AsyncCall) error {
	inv := &s.inv
	call.States = call.States[:0]
	if err := inv.begin(call.Fn, call.Target, inv.now); err != nil {
		return err
	}
	for i := range inv.slots {
		sl := &inv.slots[i]
		st := AsyncState{Spec: sl.spec, Present: sl.present}
		if sl.present {
			st.Value = append([]byte(nil), sl.value...)
		}
		call.States = append(call.States, st)
	}
	inv.end()
	return nil
}

// resume applies a completed async call on the shard.
func (s *Shard) resume(call *AsyncCall) {
	inst := call.inst
	inv := &s.inv
	if err := inv.begin(call.Fn, call.Target, inv.now); err != nil {
		s.fail(err)
		return
	}
	inv.replyTo = call.Messages[0].ReplyTo // one per batch (startAsync)
	s.invocations.Add(uint64(len(call.Messages)))
	var retry bool
	var err error
	if call.Resume == nil {
		err = fmt.Errorf("shard: the call of %s completed without a result", call.Target)
	} else {
		retry, err = call.Resume(inv)
		call.Resume = nil
	}
	if err == nil {
		err = inv.err
	}
	switch {
	case err != nil && errors.Is(err, ErrAbandoned):
		inv.end()
		s.abandon(inst, call, err)
		return
	case err != nil:
		s.failures.Add(1)
		s.commitDeadLetter(call.Target, call.Messages, err)
	case retry:
		inv.end()
		s.startCall(call)
		return
	default:
		s.commit(inv, call.Messages)
	}
	inst.busy = false
	inst.call = nil
	s.reschedule(inst)
}
