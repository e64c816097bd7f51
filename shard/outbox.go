package shard

import "github.com/shardfn/shardfn/internal/format"

// The outbox: messages this shard produced for instances of other shards.
// They wait in out until the batch that produced them is appended
// (commitBatch), then go to the destination's lane; a full lane keeps the
// rest in a per-destination backlog, in order, retried every Step.

// deliver routes a message produced on this shard (a send or a fired
// timer): to a local instance, or to the outbox of its shard.
func (s *Shard) deliver(e *format.Envelope) {
	s.produced.Add(1)
	j := format.ShardOf(format.KeyGroup(e.Target.Hash()), s.cfg.Count)
	if j == s.cfg.Index {
		s.enqueueLocal(e)
		return
	}
	s.qbytes += EnvelopeBytes(e) // given back when pushed into the peer's lane
	s.out[j] = append(s.out[j], *e)
}

// flushOut hands the outbox to the peers' lanes (behind any backlog).
func (s *Shard) flushOut() {
	for j := range s.out {
		if len(s.out[j]) == 0 {
			continue
		}
		if len(s.backlog[j]) > 0 {
			s.backlog[j] = append(s.backlog[j], s.out[j]...)
		} else if k := s.pushLane(j, s.out[j]); k < len(s.out[j]) {
			s.backlog[j] = append(s.backlog[j], s.out[j][k:]...)
		}
		clear(s.out[j])
		s.out[j] = s.out[j][:0]
	}
}

// pushLane pushes msgs into peer j's lane until it is full and returns how
// many it pushed (waking the peer if any).
func (s *Shard) pushLane(j int, msgs []format.Envelope) int {
	k := 0
	for ; k < len(msgs); k++ {
		if !s.prods[j].Push(&msgs[k]) {
			break
		}
		s.qbytes -= EnvelopeBytes(&msgs[k])
	}
	if k > 0 {
		s.peers[j].mb.Wake()
	}
	return k
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
		if k := s.pushLane(j, b); k > 0 {
			moved = true
			n := copy(b, b[k:])
			clear(b[n:])
			s.backlog[j] = b[:n]
		}
	}
	return moved
}
