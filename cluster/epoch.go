package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/kafka"
	"github.com/shardfn/shardfn/store"
)

// expireInterval and expireBatch pace the expiry of idempotency keys and
// kept replies: at most expireBatch entries per epoch, at most once per
// expireInterval.
const (
	expireInterval = time.Second
	expireBatch    = 4096
)

// epoch runs one transaction: deliver recs, wait for them to be consumed,
// ship what the engine appended, commit, then apply.
func (n *Node) epoch(ep *engine.Epoch, recs []*kgo.Record) error {
	e := n.eng.Load()
	ep.Reset() // an aborted epoch leaves its effects in ep
	if err := n.sess.Begin(); err != nil {
		return beginError{err}
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.TxnTimeout/2)
	defer cancel()
	ship := &shipper{n: n, positions: map[int32]int64{}}
	if err := n.expire(e, ep); err != nil {
		return n.endAbort(err)
	}
	polled := len(recs)
	recs, err := n.routeModuleIngress(e, recs, ship)
	if err != nil {
		return n.endAbort(err)
	}
	pending := make(map[uint64]struct{}, len(recs))
	i := 0
	for {
		var err error
		if i, err = n.deliver(e, recs, i, pending, ship); err != nil {
			return n.endAbort(err)
		}
		if err := e.CollectEpoch(ep); err != nil {
			return n.endAbort(err)
		}
		for _, id := range ep.Consumed[ship.consumed:] {
			delete(pending, id)
		}
		ship.consumed = len(ep.Consumed)
		ship.produce(ep)
		if i == len(recs) && len(pending) == 0 {
			break
		}
		select {
		case <-n.wake:
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return n.endAbort(fmt.Errorf("%d input messages not consumed within %v", len(pending), n.cfg.TxnTimeout/2))
		}
		if err := e.Err(); err != nil {
			return n.endAbort(err)
		}
	}
	if ep.Records > 0 || polled > 0 {
		n.stats.LastActive.Store(time.Now().UnixNano())
	}
	consumed := n.inputPositions(ep, recs)
	ship.produce(ep)
	if ep.Records == 0 && polled == 0 && len(ep.Changes) == 0 {
		_, err := n.sess.End(n.ctx, kgo.TryAbort) // nothing to commit
		return err
	}
	start := time.Now()
	if err := n.sess.Client().Flush(n.ctx); err != nil {
		return n.endAbort(fmt.Errorf("flush: %w", err))
	}
	if err := ship.err(); err != nil {
		return n.endAbort(err)
	}
	if polled == 0 {
		// Nothing polled: the session commits no offsets, so the broker
		// would not check this node's group generation. A node that was
		// dropped from the group without knowing it (its heartbeats lost)
		// could then commit the effects of delayed messages of partitions
		// another node owns now. Check membership inside the transaction.
		if err := n.fenceCheck(); err != nil {
			return n.endAbort(fmt.Errorf("fence check: %w", err))
		}
	}
	if err := n.commit(ep); err != nil {
		return err
	}
	n.logCommitted(recs, ship)
	n.stats.Commits.Add(1)
	n.stats.CommitNanos.Store(int64(time.Since(start)))
	if err := e.CommitEpoch(ep, ship.positions); err != nil {
		return err
	}
	for p, off := range consumed {
		n.inPos[p] = off
	}
	for _, ids := range ship.replyAgain { // retried idempotent requests
		if m, ok, err := e.KeptReply(ids[0]); err == nil && ok {
			n.sendReply(ids[1]&^format.ReplyKeep, m.Type, m.Value)
		}
	}
	ship.reset(ep)
	return nil
}

// logCommitted logs, at debug level, the input offsets and changelog
// positions an epoch committed.
func (n *Node) logCommitted(recs []*kgo.Record, ship *shipper) {
	if !n.log.Enabled(n.ctx, slog.LevelDebug) {
		return
	}
	lo, hi := map[int32]int64{}, map[int32]int64{}
	for _, r := range recs {
		if _, ok := lo[r.Partition]; !ok {
			lo[r.Partition] = r.Offset
		}
		hi[r.Partition] = r.Offset
	}
	n.log.Debug("epoch committed", "first", fmt.Sprint(lo), "last", fmt.Sprint(hi), "changelog", fmt.Sprint(ship.positions))
}

// deliver hands recs[i:] to the engine until it is overloaded and returns
// how far it got; pending gains the ids of the messages delivered.
func (n *Node) deliver(e *engine.Engine, recs []*kgo.Record, i int, pending map[uint64]struct{}, ship *shipper) (int, error) {
	for ; i < len(recs); i++ {
		if p := recs[i].Partition; int(p) < len(n.inPos) && recs[i].Offset < n.inPos[p] {
			// The state already holds this record's effects (its input
			// position is past it): the group's offset went back.
			if n.stats.Replayed.Add(1)%1000 == 1 { // the first, then every thousandth
				n.log.Warn("input record below the partition's applied position: skipped", "partition", p, "offset", recs[i].Offset, "applied_to", n.inPos[p], "skipped_so_far", n.stats.Replayed.Load())
			}
			continue
		}
		m, err := format.DecodeStoredMessage(recs[i].Value)
		if err != nil {
			// A record no node can read: skipped (its offset commits),
			// reported. Only a foreign producer writes such records.
			n.log.Error("input record is not a message; skipped", "partition", recs[i].Partition, "offset", recs[i].Offset, "err", err)
			continue
		}
		key := recordKey(recs[i])
		d, first, err := e.Deliver(m, key)
		if errors.Is(err, engine.ErrOverloaded) {
			return i, nil
		}
		if err != nil {
			return i, fmt.Errorf("deliver: %w", err)
		}
		if d == engine.Delivered {
			pending[m.Env.ID] = struct{}{}
			if off, ok := replayedOffset(key); ok { // a replayed dead letter: marked in this transaction (ops.go)
				n.sess.Produce(n.ctx, n.replayMarkRecord(off, m.Env.Target), ship.done)
			}
		} else if m.Env.ReplyTo != 0 {
			ship.replyAgain = append(ship.replyAgain, [2]uint64{first, m.Env.ReplyTo})
		}
	}
	return i, nil
}

// commit ends the epoch's transaction with a commit, under the membership
// the engine was opened with (not the client's latest).
func (n *Node) commit(ep *engine.Epoch) error {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.TxnTimeout)
	defer cancel()
	ctx = kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		req.MemberID, req.Generation = n.member, n.gen
		return nil
	})
	committed, err := n.sess.End(ctx, kgo.TryCommit)
	if err != nil || !committed {
		return fmt.Errorf("transaction not committed: %v", err)
	}
	if f := n.testAfterCommit.Load(); f != nil {
		(*f)(ep)
	}
	return nil
}

// expire adds to ep, at most once per expireInterval, the deletions of the
// idempotency keys and kept replies past their retention: they travel in
// the epoch's transaction (changelog tombstones).
func (n *Node) expire(e *engine.Engine, ep *engine.Epoch) error {
	if time.Since(n.lastExpire) < expireInterval {
		return nil
	}
	n.lastExpire = time.Now()
	if _, err := e.CollectExpired(ep, expireBatch); err != nil {
		return fmt.Errorf("expire idempotency keys: %w", err)
	}
	return nil
}

func (n *Node) endAbort(cause error) error {
	_, _ = n.sess.End(n.ctx, kgo.TryAbort)
	return cause
}

// shipper produces an epoch's records into the open transaction.
type shipper struct {
	n                            *Node
	consumed, changes, sends, eg int
	replies                      int
	mu                           sync.Mutex
	positions                    map[int32]int64 // changelog partition -> next offset
	firstErr                     error
	replyAgain                   [][2]uint64 // (first request id, retry's reply-to) of duplicate requests
}

// Changelog record: key = class byte + store key ('k' point operations,
// 'r' a range deletion, keyed by its start so that compaction keeps the
// last of each); value = nil (a deletion: a tombstone), 's' + value (a
// set), or 'r' + end key (a range deletion).
func changeRecord(topic string, ch *engine.Change) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: ch.Partition}
	switch ch.Kind {
	case store.ChangeSet:
		r.Key = append([]byte{'k'}, ch.Key...)
		r.Value = append([]byte{'s'}, ch.Value...)
	case store.ChangeDelete:
		r.Key = append([]byte{'k'}, ch.Key...)
	case store.ChangeDeleteRange:
		r.Key = append([]byte{'r'}, ch.Key...)
		r.Value = append([]byte{'r'}, ch.Value...)
	}
	return r
}

// decodeChange is changeRecord's inverse.
func decodeChange(r *kgo.Record) (store.ChangeKind, []byte, []byte, error) {
	if len(r.Key) == 0 {
		return 0, nil, nil, fmt.Errorf("%w: changelog record without a key at %s/%d@%d", store.ErrCorrupt, r.Topic, r.Partition, r.Offset)
	}
	switch {
	case r.Key[0] == 'k' && r.Value == nil:
		return store.ChangeDelete, r.Key[1:], nil, nil
	case r.Key[0] == 'k' && len(r.Value) > 0 && r.Value[0] == 's':
		return store.ChangeSet, r.Key[1:], r.Value[1:], nil
	case r.Key[0] == 'r' && len(r.Value) > 0 && r.Value[0] == 'r':
		return store.ChangeDeleteRange, r.Key[1:], r.Value[1:], nil
	}
	return 0, nil, nil, fmt.Errorf("%w: changelog record of unknown shape at %s/%d@%d", store.ErrCorrupt, r.Topic, r.Partition, r.Offset)
}

func (s *shipper) produce(ep *engine.Epoch) {
	n := s.n
	t := n.topics
	for ; s.changes < len(ep.Changes); s.changes++ {
		n.sess.Produce(n.ctx, changeRecord(t.Changelog, &ep.Changes[s.changes]), s.changelogDone)
	}
	for ; s.sends < len(ep.Sends); s.sends++ {
		m := &ep.Sends[s.sends]
		n.sess.Produce(n.ctx, &kgo.Record{Topic: t.In, Partition: m.Partition, Value: append([]byte(nil), m.Msg...)}, s.done)
	}
	for ; s.replies < len(ep.Replies); s.replies++ {
		r := &ep.Replies[s.replies]
		n.sess.Produce(n.ctx, replyRecord(t.Replies, r.RequestID, string(r.Type), r.Payload), s.done)
	}
	for ; s.eg < len(ep.Egress); s.eg++ {
		g := &ep.Egress[s.eg]
		if eg, ok := n.egress[g.Name]; ok {
			if r, err := kafka.DecodeRecord(g.Payload); err == nil {
				kr := &kgo.Record{Topic: r.Topic, Value: append([]byte(nil), r.Value...)}
				if r.Key != "" {
					kr.Key = []byte(r.Key)
				}
				for _, h := range r.Headers {
					kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: append([]byte(nil), h.Value...)})
				}
				n.sess.Produce(n.ctx, kr, s.done)
				continue
			} else {
				n.log.Error("Kafka egress record cannot be decoded; kept in the cluster's egress topic", "egress", eg.ID, "err", err)
			}
		}
		n.sess.Produce(n.ctx, &kgo.Record{Topic: t.Egress, Key: []byte(g.Name), Value: encodeEgress(g),
			Headers: []kgo.RecordHeader{{Key: "egress", Value: []byte(g.Name)}}}, s.done)
	}
}

func (s *shipper) changelogDone(r *kgo.Record, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.firstErr == nil {
			s.firstErr = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
		}
		return
	}
	if r.Offset+1 > s.positions[r.Partition] {
		s.positions[r.Partition] = r.Offset + 1
	}
	s.n.warm.notePosition(r.Partition, r.Offset+1) // advertised to the warm-up balancer (warmup.go)
}

func (s *shipper) done(r *kgo.Record, err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstErr == nil {
		s.firstErr = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
	}
}

func (s *shipper) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

// reset readies s and ep for the next epoch.
func (s *shipper) reset(ep *engine.Epoch) {
	ep.Reset()
	s.consumed, s.changes, s.sends, s.eg, s.replies = 0, 0, 0, 0, 0
	clear(s.positions)
	s.replyAgain = s.replyAgain[:0]
}

// encodeEgress is an egress record's value: source address, type, payload.
func encodeEgress(g *engine.ClusterEgress) []byte {
	b := format.AppendAddress(nil, g.Source)
	b = binary.AppendUvarint(b, uint64(len(g.Type)))
	b = append(b, g.Type...)
	return append(b, g.Payload...)
}

// routeModuleIngress turns the polled records of the module's Kafka
// ingress topics into messages produced to the input topic inside the
// open transaction (their offsets commit with them), and returns the
// input topic's records.
func (n *Node) routeModuleIngress(e *engine.Engine, recs []*kgo.Record, ship *shipper) ([]*kgo.Record, error) {
	if len(n.routers) == 0 {
		return recs, nil
	}
	in := recs[:0:0]
	var outs []engine.Outgoing
	for _, r := range recs {
		router, ok := n.routers[r.Topic]
		if !ok {
			in = append(in, r)
			continue
		}
		outs = router.Route(outs[:0], r)
		for i := range outs {
			id, err := e.NewMessageID()
			if err != nil {
				return nil, err
			}
			// The transaction makes the routing exactly once: no
			// idempotency key is needed (keys do not expire here).
			n.sess.Produce(n.ctx, n.inRecord(id, outs[i].To, outs[i].Message, 0, ""), ship.done)
		}
	}
	return in, nil
}

// inputPositions adds to ep, for each input partition recs came from, the
// next offset to consume, as a store operation of that partition: the
// position travels with the state in the changelog, so the owner of a
// partition knows which input its state has applied, whatever the group's
// committed offset says (deliver skips records below it).
func (n *Node) inputPositions(ep *engine.Epoch, recs []*kgo.Record) map[int32]int64 {
	if len(recs) == 0 {
		return nil
	}
	next := map[int32]int64{}
	for _, r := range recs {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	for p, off := range next {
		ep.Changes = append(ep.Changes, engine.Change{Partition: p, Kind: store.ChangeSet,
			Key: inputPositionKey(p), Value: engine.ChangelogPositionValue(off)})
	}
	return next
}

// inputPositionKey is the store key of input partition p's applied
// position ('M' metadata: the engine never writes it).
func inputPositionKey(p int32) []byte { return fmt.Appendf(nil, "Min/%05d", p) }
