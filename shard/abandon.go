package shard

import (
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/internal/format"
)

// ErrAbandoned, returned by Handler.Resume (wrapped), says that an async
// call was given up without an answer (the engine is closing): nothing of
// the batch is applied or dead-lettered. The shard then leaves the batch's
// messages, and every later message of the same address, unconsumed: it
// drops them from memory, releases their acknowledgements with an error
// wrapping ErrAbandoned ("not processed") and counts them as consumed for
// quiescence only. No record consumes them, so messages produced by
// durable records are still in flight in the log and the store, and the
// next start delivers them again, in order. The address stays marked until
// the shard stops, so that no later message overtakes the abandoned ones.
var ErrAbandoned = errors.New("shard: call abandoned; its messages were not processed")

// errAbandonedBehind releases messages of an address whose earlier batch was
// abandoned.
var errAbandonedBehind = fmt.Errorf("%w: an earlier message of the same address was left for the next start, and this one stays behind it", ErrAbandoned)

// errStoppedUnprocessed releases messages still queued when the shard
// stops (the engine's drain timed out).
var errStoppedUnprocessed = fmt.Errorf("%w: the shard stopped before processing it", ErrAbandoned)

// abandon leaves an abandoned call's messages and the address's queue
// unconsumed (see ErrAbandoned).
func (s *Shard) abandon(inst *instance, call *AsyncCall, err error) {
	inst.busy = false
	inst.call = nil
	inst.abandoned = true
	s.cfg.Logger.Debug("async call abandoned; its messages stay for the next start",
		"shard", s.cfg.Index, "target", inst.addr.String(), "messages", len(call.Messages), "queued_behind", inst.q.len(), "err", err)
	for i := range call.Messages {
		s.leaveUnconsumed(&call.Messages[i], err)
	}
	for inst.q.len() > 0 {
		e := inst.q.pop()
		s.depth.Add(-1)
		s.leaveUnconsumed(&e, errAbandonedBehind)
	}
}

// leaveUnconsumed drops a message this process will not process.
func (s *Shard) leaveUnconsumed(e *format.Envelope, err error) {
	if e.Ack != nil {
		e.Ack.Release(err)
	}
	s.qbytes -= EnvelopeBytes(e)
	s.left++
	s.consumed.Add(1) // for quiescence: nothing more will happen to it here
}

// releaseUnprocessed runs when the loop ends: every acknowledgement still
// held by a queued message or an async call in flight is released with an
// error wrapping ErrAbandoned, so that no ingress waits for a shard that is
// gone. Nothing is consumed; durable messages are restored at the next
// start.
func (s *Shard) releaseUnprocessed() {
	s.stoppedMu.Lock()
	s.stopped = true
	s.stoppedMu.Unlock()
	for _, c := range s.takeDone() {
		releaseCall(c, errStoppedUnprocessed)
	}
	if s.left > 0 {
		s.cfg.Logger.Info("shard stopped; messages of abandoned async calls (remote endpoints failing at shutdown) stay for the next start",
			"shard", s.cfg.Index, "messages", s.left)
	}
	for _, head := range s.insts {
		for inst := head; inst != nil; inst = inst.next {
			if inst.call != nil {
				releaseCall(inst.call, errStoppedUnprocessed)
				inst.call = nil
			}
			for inst.q.len() > 0 {
				e := inst.q.pop()
				s.depth.Add(-1)
				if e.Ack != nil {
					e.Ack.Release(errStoppedUnprocessed)
				}
			}
		}
	}
}

// releaseCall releases the acknowledgements of a call's messages with err.
func releaseCall(c *AsyncCall, err error) {
	for i := range c.Messages {
		if a := c.Messages[i].Ack; a != nil {
			a.Release(err)
		}
	}
}
