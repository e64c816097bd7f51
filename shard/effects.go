package shard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/internal/format"
)

// DeadLetterEgress is the egress that receives messages whose invocation
// failed for good.
const DeadLetterEgress = "dead-letters"

// DeadLetterType is the type name of dead-letter records.
const DeadLetterType = "shardfn/dead-letter"

// Errors that send a message to the dead letters.
var (
	// ErrUnknownType: a message for a function type that is not registered.
	ErrUnknownType = errors.New("shard: no function registered for this type")
	// ErrEffectsTooLarge: the effects of one invocation encode to a record
	// larger than Config.MaxRecordBytes.
	ErrEffectsTooLarge = errors.New("shard: the invocation's effects exceed the largest record the log takes")
	// ErrDelayedAcrossPartitions: in cluster mode a delayed message waits
	// in the sender's partition, so it must target an address of that
	// partition (the sender itself, typically).
	ErrDelayedAcrossPartitions = errors.New("shard: cluster mode: a delayed message must target an address in the sender's partition")
)

// invoke runs one embedded invocation of e and commits its effects, or
// dead-letters e if the function fails.
func (s *Shard) invoke(inst *instance, e *format.Envelope) {
	inv := &s.inv
	s.watchStart(inst.addr, inv.now)
	defer s.watchEnd()
	if err := inv.begin(inst.fn, inst.addr, inv.now); err != nil {
		// The state could not be read: a storage failure, not the
		// message's fault. Stop rather than skip the message.
		s.fail(err)
		return
	}
	inv.msg = e
	inv.caller = e.Caller
	inv.replyTo = e.ReplyTo
	s.invocations.Add(1)
	span := s.traceInvoke(inv, e) // nil unless traced (trace.go)
	err := s.safeInvoke(inv)
	if err == nil {
		err = inv.err
	}
	if err != nil {
		s.failures.Add(1)
		s.commitDeadLetter(inst.addr, s.one(e), err)
		s.traceEnd(span, err)
		return
	}
	s.commit(inv, s.one(e))
	s.traceEnd(span, nil)
}

// one returns e as a one-message batch (no allocation: the shard's scratch).
func (s *Shard) one(e *format.Envelope) []format.Envelope {
	s.oneBuf[0] = *e
	return s.oneBuf[:]
}

func (s *Shard) safeInvoke(inv *Invocation) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("function panicked: %v", r)
		}
	}()
	return s.cfg.Handler.Invoke(inv)
}

// commit turns the effects of inv, which consumed msgs, into one effect
// record, applies them to the shard's memory and stages its outputs. It is
// done in three steps so that nothing is changed before the record is known
// to be acceptable:
//
//  1. route: a send to a function type that is not registered becomes a
//     dead-letter record of this invocation (with its real target); the
//     rest of the invocation's effects are untouched;
//  2. encode: the record is built (ids assigned, pending tokens looked up
//     but not cancelled); a record over MaxRecordBytes is dropped and the
//     messages are dead-lettered instead;
//  3. apply: state into the arena, tokens cancelled, timers armed, sends
//     delivered, acknowledgement and reply staged for output commit.
func (s *Shard) commit(inv *Invocation, msgs []format.Envelope) {
	s.routeSends(inv)
	rec, err := s.encode(inv, msgs)
	if err != nil {
		s.fail(err)
		return
	}
	if len(rec) > s.cfg.MaxRecordBytes {
		s.recBuf = rec[:0]
		err := fmt.Errorf("%w: %d bytes, limit %d", ErrEffectsTooLarge, len(rec), s.cfg.MaxRecordBytes)
		s.failures.Add(1)
		s.commitDeadLetter(inv.self, msgs, err)
		return
	}
	s.recBuf = rec[:0]
	s.batch.add(rec)
	s.apply(inv)
	for i := range msgs {
		s.stageAck(msgs[i].Ack)
		s.qbytes -= EnvelopeBytes(&msgs[i])
	}
	if inv.hasReply && inv.replyTo != 0 {
		s.stageReply(inv.replyTo, inv.replyType, inv.replyPayload)
	}
	s.consumed.Add(uint64(len(msgs)))
	inv.end()
}

// routeSends turns sends to unregistered function types into dead-letter
// egress records of the invocation.
func (s *Shard) routeSends(inv *Invocation) {
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.cancel || ps.skip {
			continue
		}
		t := &ps.env.Target
		var cause error
		switch {
		case s.cfg.Handler.Lookup(t.Namespace, t.Type) == nil:
			cause = fmt.Errorf("%w: %s (sent by %s)", ErrUnknownType, t.FunctionType(), inv.self)
		case ps.fireAt != 0 && s.cfg.ExternalSends &&
			s.cfg.Partition(format.KeyGroup(t.Hash())) != s.cfg.Partition(format.KeyGroup(inv.selfHash)):
			cause = fmt.Errorf("%w: %s (sent by %s)", ErrDelayedAcrossPartitions, t, inv.self)
		default:
			continue
		}
		ps.skip = true
		s.cfg.Handler.DeadLetter(*t, ps.env.Type, cause)
		inv.egress = append(inv.egress, egressOut{name: DeadLetterEgress, typ: DeadLetterType,
			payload: deadLetterJSON(&ps.env, cause, s.cfg.MaxRecordBytes/2)})
	}
}

// encode builds the effect record of inv. It changes nothing but the ids
// of the invocation's sends and the shard's id block.
func (s *Shard) encode(inv *Invocation, msgs []format.Envelope) ([]byte, error) {
	rb := &s.rb
	rb.Begin(s.recBuf, inv.self)
	for i := range msgs {
		rb.Consumed(msgs[i].ID)
	}
	rb.BeginStates()
	for i := range inv.slots {
		sl := &inv.slots[i]
		switch {
		case !sl.dirty:
		case sl.present:
			rb.State(sl.spec.Name, format.OpSet, sl.writtenAt, sl.value)
		default:
			rb.State(sl.spec.Name, format.OpDelete, sl.writtenAt, nil)
		}
	}
	inv.encodeMaps(rb)
	rb.BeginMessages()
	inv.markReplaced()
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.skip || ps.cancel {
			continue
		}
		id, err := s.nextID()
		if err != nil {
			return nil, err
		}
		ps.env.ID = id
		rb.Message(&ps.env, ps.fireAt, ps.token)
	}
	// Every token this invocation touched (a cancel, or a delayed send that
	// replaces a pending one) cancels the pending delayed message in the
	// record too, or the store would keep it and it would fire after a
	// restart.
	rb.BeginCancels()
	s.cancels = s.cancels[:0]
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.token == "" || (ps.fireAt == 0 && !ps.cancel) {
			continue
		}
		if id, ok := s.pendingTimer(inv.selfHash, ps.token); ok && !containsID(s.cancels, id) {
			s.cancels = append(s.cancels, id)
			rb.Cancel(id)
		}
	}
	rb.BeginEgress()
	for i := range inv.egress {
		eg := &inv.egress[i]
		rb.Egress(eg.name, eg.typ, eg.payload)
	}
	rb.BeginKeys()
	for i := range msgs {
		if k := msgs[i].Key; k != "" {
			rb.Key(msgs[i].ID, inv.now+s.cfg.KeyRetention, k)
		}
	}
	rb.BeginReply()
	switch {
	case inv.hasReply && inv.replyTo&format.ReplyKeep != 0:
		rb.Reply(inv.replyTo&^format.ReplyKeep, inv.now+s.cfg.KeyRetention, inv.replyType, inv.replyPayload)
	case inv.hasReply && inv.replyTo != 0 && s.cfg.ExternalSends:
		rb.Reply(inv.replyTo, 0, inv.replyType, inv.replyPayload) // not kept: shipped only
	}
	return rb.End(), nil
}

func containsID(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// apply changes the shard's memory as the record encoded by encode says.
func (s *Shard) apply(inv *Invocation) {
	if inv.anyDirty() {
		s.storeBlob(inv)
	}
	if len(inv.mapOps) > 0 {
		s.applyMaps(inv, s.seq+1) // the batch being built
	}
	for i := range inv.sends {
		ps := &inv.sends[i]
		if ps.token != "" && (ps.fireAt != 0 || ps.cancel) {
			s.cancelTimer(inv.selfHash, ps.token)
		}
	}
	for i := range inv.sends {
		ps := &inv.sends[i]
		switch {
		case ps.skip || ps.cancel:
		case ps.fireAt != 0:
			s.addTimer(ps.fireAt, ps.env, ps.token)
		case s.cfg.ExternalSends:
			s.produced.Add(1) // the node produces it from the record
		default:
			s.deliver(&ps.env)
		}
		ps.env = format.Envelope{}
	}
}

// commitDeadLetter consumes msgs with no effect but a dead-letters egress
// record each: one effect record per message, so that the size of a dead
// letter never depends on how many messages failed together. Whatever the
// failed invocation had written or sent is discarded.
func (s *Shard) commitDeadLetter(target format.Address, msgs []format.Envelope, cause error) {
	inv := &s.inv
	for i := range msgs {
		m := &msgs[i]
		inv.discard(target)
		s.cfg.Handler.DeadLetter(target, m.Type, cause)
		inv.egress = append(inv.egress, egressOut{name: DeadLetterEgress, typ: DeadLetterType,
			payload: deadLetterJSON(m, cause, s.cfg.MaxRecordBytes/2)})
		rec, err := s.encode(inv, msgs[i:i+1])
		if err != nil {
			s.fail(err)
			return
		}
		s.recBuf = rec[:0]
		s.batch.add(rec)
		s.stageAck(m.Ack)
		s.qbytes -= EnvelopeBytes(m)
		s.consumed.Add(1)
	}
	inv.end()
}

// deadLetterUnroutable dead-letters the messages that arrived for function
// types that are not registered.
func (s *Shard) deadLetterUnroutable() bool {
	if len(s.unroutable) == 0 {
		return false
	}
	for i := range s.unroutable {
		e := &s.unroutable[i]
		cause := fmt.Errorf("%w: %s", ErrUnknownType, e.Target.FunctionType())
		s.commitDeadLetter(e.Target, s.unroutable[i:i+1], cause)
	}
	clear(s.unroutable)
	s.unroutable = s.unroutable[:0]
	return true
}

// deadLetterJSON is the dead-letter record of message m. A payload longer
// than maxPayload bytes is cut (and the record says so) so that a dead
// letter always fits in a record.
func deadLetterJSON(m *format.Envelope, cause error, maxPayload int) []byte {
	rec := struct {
		Target    string `json:"target"`
		Caller    string `json:"caller,omitempty"`
		Type      string `json:"type"`
		Error     string `json:"error"`
		PayloadB6 string `json:"payload_b64"`
		Bytes     int    `json:"payload_bytes,omitempty"`
		Cut       bool   `json:"payload_truncated,omitempty"`
	}{
		Target: m.Target.String(), Type: m.Type, Error: cause.Error(),
	}
	p := m.Payload
	if n := maxPayload * 3 / 4; len(p) > n {
		rec.Bytes, rec.Cut = len(p), true
		p = p[:n]
	}
	rec.PayloadB6 = base64.StdEncoding.EncodeToString(p)
	if !m.Caller.IsZero() {
		rec.Caller = m.Caller.String()
	}
	b, _ := json.Marshal(rec)
	return b
}
