package shard

import "github.com/shardfn/shardfn/internal/format"

// Output commit. An invocation's outputs (its ingress acknowledgement, its
// reply) are staged while the shard builds a batch of effect records; when
// the batch is appended, each staged release is stamped with the log
// position the append returned and queued; it is released once the log is
// durable up to that position. One clock, the log position, decides every
// release.
//
// The arena is the one place that still counts batches: an entry written
// in batch seq may be evicted once the store has applied the log up to
// that batch's end (seqEnds maps one to the other).

// release is one output waiting for durability: an acknowledgement, or a
// reply to request reqID.
type release struct {
	end     uint64 // log position that must be durable; set when appended
	ack     *format.Ack
	reqID   uint64
	rtype   string
	payload []byte
}

type seqEnd struct {
	seq uint64
	end uint64
}

// stageAck stages the acknowledgement of a consumed message.
func (s *Shard) stageAck(a *format.Ack) {
	if a != nil {
		s.staged = append(s.staged, release{ack: a})
	}
}

// stageReply stages the reply to request reqID.
func (s *Shard) stageReply(reqID uint64, typ string, payload []byte) {
	s.staged = append(s.staged, release{reqID: reqID, rtype: typ, payload: payload})
}

// commitBatch appends the batch's records and then releases the
// cross-shard messages they produced. The order is the safety argument of
// cross-shard flow before durability: a record that consumes a message is
// appended after the record that produced it, because the message leaves
// this shard only once its producer's record has been appended, and the log
// is one totally ordered sequence. Recovery therefore restores a prefix of
// that sequence, which never contains a consumer without its producer.
//
// An append that fails stops the shard (fail): the batch's cross-shard
// messages are dropped, not handed over, so nothing produced by an
// unlogged batch can reach a record that is logged.
func (s *Shard) commitBatch() {
	end, err := s.cfg.Log.Append(&s.batch)
	s.batches.Add(1)
	s.records.Add(uint64(s.batch.Len()))
	s.batch.Reset()
	if err != nil {
		s.fail(err)
		return
	}
	s.seq++
	s.lastEnd = end
	s.lastAppended.Store(end)
	s.seqEnds.push(seqEnd{seq: s.seq, end: end})
	for i := range s.staged {
		r := s.staged[i]
		r.end = end
		s.pending.push(r)
		s.staged[i] = release{}
	}
	s.unreleased.Add(int64(len(s.staged)))
	s.staged = s.staged[:0]
	s.flushOut()
}

// releaseDurable releases every queued output whose log position is
// durable.
func (s *Shard) releaseDurable() bool {
	if s.pending.len() == 0 {
		return false
	}
	durable := s.cfg.Log.Durable()
	did := false
	for s.pending.len() > 0 && s.pending.peek().end <= durable {
		r := s.pending.pop()
		s.deliverRelease(&r, nil)
		did = true
	}
	if s.pending.len() > 0 {
		if err := s.cfg.Log.Err(); err != nil {
			// The log failed: nothing pending will become durable.
			s.fail(err)
			return true
		}
	}
	return did
}

func (s *Shard) deliverRelease(r *release, err error) {
	switch {
	case r.ack != nil:
		r.ack.Release(err)
	case err == nil:
		s.cfg.Handler.Reply(r.reqID, r.rtype, r.payload)
	}
	s.unreleased.Add(-1)
}

// releaseAll fails every queued output (replies are dropped: their
// requesters time out).
func (s *Shard) releaseAll(err error) {
	for s.pending.len() > 0 {
		r := s.pending.pop()
		s.deliverRelease(&r, err)
	}
}

// failStaged fails the outputs of a batch that will never be appended.
func (s *Shard) failStaged(err error) {
	for i := range s.staged {
		if a := s.staged[i].ack; a != nil {
			a.Release(err)
		}
		s.staged[i] = release{}
	}
	s.staged = s.staged[:0]
}

// updateSafe moves the arena's eviction horizon to the last batch the
// store has applied.
func (s *Shard) updateSafe() {
	applied := s.applied.Load()
	for s.seqEnds.len() > 0 && s.seqEnds.peek().end <= applied {
		s.safeSeq = s.seqEnds.pop().seq
	}
	s.arena.SetSafeLSN(s.safeSeq)
}
