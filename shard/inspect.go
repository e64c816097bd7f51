package shard

import "github.com/shardfn/shardfn/internal/format"

// RepairType is the message type of the engine's state repair
// (Engine.SetState). The shard hands a message of this type to
// Handler.Invoke on the shard, in its place in the instance's queue, even
// when the function type is async (remote): a remote batch stops before it.
const RepairType = "shardfn/state-repair"

// QueuedMessage is a message waiting in an instance's queue on its shard.
type QueuedMessage struct {
	ID      uint64
	Caller  format.Address
	Type    string
	Payload []byte // a copy
	Request bool   // the message belongs to a request chain (a reply is awaited)
}

// InstanceView is what the shard holds for one address right now.
type InstanceView struct {
	// Active: the address has queued messages or a call in flight.
	Active bool
	// Busy: an async (remote) call of the address is in flight.
	Busy bool
	// Queued is the instance's queue, oldest first, at most the max asked
	// for; QueuedTotal is its full length.
	Queued      []QueuedMessage
	QueuedTotal int
}

// Inspect returns the shard's view of addr: its queued messages (at most
// max) and whether a remote call is in flight. It runs on the shard
// goroutine (through control), so call it only while the shard runs.
func (s *Shard) Inspect(addr format.Address, max int) InstanceView {
	var v InstanceView
	s.control(func() {
		inst := s.lookup(addr.Hash(), &addr)
		if inst == nil || inst.fn == nil {
			return
		}
		v.Active = true
		v.Busy = inst.busy
		v.QueuedTotal = inst.q.len()
		for i := 0; i < inst.q.len() && i < max; i++ {
			e := inst.q.at(i)
			v.Queued = append(v.Queued, QueuedMessage{
				ID: e.ID, Caller: e.Caller, Type: e.Type,
				Payload: append([]byte(nil), e.Payload...), Request: e.ReplyTo != 0,
			})
		}
	})
	return v
}
