package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/internal/format"
)

// Ingress on any node: a message is numbered by this node's engine and
// produced (idempotent producer, all in-sync replicas) to the input
// partition of its target; the owner consumes it in a transaction. Send
// returns once the input topic holds it: from then on it is applied exactly
// once, by whichever node owns its partition. A request carries this
// node's request id as its reply-to; the owner produces the reply to the
// replies topic once its transaction committed, and every node reads that
// topic for the replies it waits for.

// ErrNotReady: the node has no engine yet (joining, restoring, or
// reopening after a rebalance). Retry.
var ErrNotReady = fmt.Errorf("%w: cluster node not ready (joining or rebalancing)", engine.ErrOverloaded)

func (n *Node) engine() (*engine.Engine, error) {
	if err := n.Err(); err != nil {
		// The node keeps retrying (a broker restarting, a changelog it
		// cannot read yet): the client retries too, or reads /ready.
		return nil, fmt.Errorf("%w: it cannot open its engine and keeps retrying: %v", ErrNotReady, err)
	}
	e := n.eng.Load()
	if e == nil {
		return nil, ErrNotReady
	}
	return e, nil
}

// produceMsg numbers and produces one message; replyTo 0 for a send.
func (n *Node) produceMsg(ctx context.Context, to engine.Address, msg engine.Message, replyTo, id uint64, key string) error {
	r := n.inRecord(id, to, msg, replyTo, key)
	if err := n.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("%w: produce to the input topic: %v", engine.ErrInDoubt, err)
	}
	return nil
}

// keyHeader carries an ingress message's idempotency key in its input
// record.
const keyHeader = "idempotency-key"

// inRecord is the input record of an ingress message (no caller): the
// stored message encoding, and the idempotency key in a header.
func (n *Node) inRecord(id uint64, to engine.Address, msg engine.Message, replyTo uint64, key string) *kgo.Record {
	noCaller := format.AppendAddress(nil, engine.Address{})
	r := &kgo.Record{Topic: n.topics.In, Partition: PartitionOfAddress(to, n.parts),
		Value: format.AppendStoredMessage(nil, id, 0, noCaller, format.AppendAddress(nil, to), []byte(msg.Type), msg.Value, replyTo, nil, nil)}
	if key != "" {
		r.Headers = []kgo.RecordHeader{{Key: keyHeader, Value: []byte(key)}}
	}
	return r
}

// recordKey is the idempotency key of an input record, if any.
func recordKey(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == keyHeader {
			return string(h.Value)
		}
	}
	return ""
}

// check validates a message as the engine's ingress would.
func (n *Node) check(e *engine.Engine, to engine.Address, msg engine.Message) error {
	return e.ValidateIngress(to, msg)
}

// Send produces msg for to and returns its id once the input topic holds
// it. With an IdempotencyKey, the owner applies the key's first message to
// the address and drops the others (the keys are in the changelog, so a
// retry through any node, after any move of the partition, is dropped).
func (n *Node) Send(ctx context.Context, to engine.Address, msg engine.Message, opts ...engine.SendOption) (uint64, error) {
	e, err := n.engine()
	if err != nil {
		return 0, err
	}
	if err := n.check(e, to, msg); err != nil {
		return 0, err
	}
	key := engine.KeyOf(opts...)
	if err := checkIngressKey(key); err != nil {
		return 0, err
	}
	id, err := e.NewMessageID()
	if err != nil {
		return 0, err
	}
	return id, n.produceMsg(ctx, to, msg, 0, id, key)
}

// SendBatch produces every message (not atomically across partitions: a
// failure leaves the earlier ones sent; the error says so).
func (n *Node) SendBatch(ctx context.Context, msgs []engine.Outgoing) error {
	e, err := n.engine()
	if err != nil {
		return err
	}
	for i := range msgs {
		if err := checkIngressKey(msgs[i].Key); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return n.sendBatch(ctx, e, msgs)
}

// sendBatch is SendBatch, keys of replayed dead letters allowed (ops.go).
func (n *Node) sendBatch(ctx context.Context, e *engine.Engine, msgs []engine.Outgoing) error {
	for i := range msgs {
		if err := n.check(e, msgs[i].To, msgs[i].Message); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	rs := make([]*kgo.Record, len(msgs))
	for i := range msgs {
		id, err := e.NewMessageID()
		if err != nil {
			return err
		}
		m := &msgs[i]
		rs[i] = n.inRecord(id, m.To, m.Message, 0, m.Key)
	}
	if err := n.prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("%w: batch of %d: some messages may be in the input topic: %v", engine.ErrInDoubt, len(msgs), err)
	}
	return nil
}

// Request produces msg with this node as its reply-to and waits for the
// reply.
func (n *Node) Request(ctx context.Context, to engine.Address, msg engine.Message, opts ...engine.SendOption) (engine.Message, error) {
	e, err := n.engine()
	if err != nil {
		return engine.Message{}, err
	}
	if err := n.check(e, to, msg); err != nil {
		return engine.Message{}, err
	}
	key := engine.KeyOf(opts...)
	if err := checkIngressKey(key); err != nil {
		return engine.Message{}, err
	}
	id, err := e.NewMessageID()
	if err != nil {
		return engine.Message{}, err
	}
	ch := make(chan engine.Message, 1)
	n.reqMu.Lock()
	n.requests[id] = ch
	n.reqMu.Unlock()
	defer func() {
		n.reqMu.Lock()
		delete(n.requests, id)
		n.reqMu.Unlock()
	}()
	replyTo := id
	if key != "" {
		replyTo |= format.ReplyKeep // kept with the key: a retry is answered with it
	}
	if err := n.produceMsg(ctx, to, msg, replyTo, id, key); err != nil {
		return engine.Message{}, err
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		return engine.Message{}, fmt.Errorf("%w: request to %s: %w", engine.ErrInDoubt, to, ctx.Err())
	case <-n.ctx.Done():
		return engine.Message{}, engine.ErrClosed
	}
}

// replyRecord is the replies topic's record of the reply to reqID: key =
// the request id (8 bytes, big endian), value = uvarint type length, type,
// payload.
func replyRecord(topic string, reqID uint64, typ string, payload []byte) *kgo.Record {
	v := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(typ)+len(payload)), uint64(len(typ)))
	v = append(append(v, typ...), payload...)
	return &kgo.Record{Topic: topic, Partition: 0, Key: binary.BigEndian.AppendUint64(nil, reqID), Value: v}
}

// sendReply produces again, outside any transaction, the kept reply of an
// idempotent request to a retry of it (first replies travel in the
// transaction that committed their work: shipper.produce). It runs after
// the epoch that saw the retry committed; a node that dies between the two
// loses this copy, and the client retries again.
func (n *Node) sendReply(reqID uint64, typ string, payload []byte) {
	r := replyRecord(n.topics.Replies, reqID, typ, payload)
	n.prod.Produce(n.ctx, r, func(r *kgo.Record, err error) {
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("reply lost: produce failed", "request", reqID, "err", err)
		}
	})
}

// readReplies delivers the replies this node waits for.
func (n *Node) readReplies() {
	for {
		fs := n.rep.PollFetches(n.ctx)
		if n.ctx.Err() != nil {
			return
		}
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Key) != 8 {
				return
			}
			id := binary.BigEndian.Uint64(r.Key)
			n.reqMu.Lock()
			ch := n.requests[id]
			n.reqMu.Unlock()
			if ch == nil {
				return
			}
			l, k := binary.Uvarint(r.Value)
			if k <= 0 || uint64(len(r.Value)-k) < l {
				n.log.Warn("malformed reply record", "offset", r.Offset)
				return
			}
			select {
			case ch <- engine.Message{Type: string(r.Value[k : k+int(l)]), Value: r.Value[k+int(l):]}:
			default:
			}
		})
	}
}

// State reads an instance's state on the node that owns it.
func (n *Node) State(ctx context.Context, addr engine.Address) ([]engine.StateValue, error) {
	e, err := n.ownedEngine(addr) // ops.go
	if err != nil {
		return nil, err
	}
	return e.State(ctx, addr)
}

// ErrNotOwner: a read for an address whose partition another node owns.
var ErrNotOwner = engine.ErrNotOwner

// ReadEgress reads egress name from the cluster's egress topic
// (read_committed: records of committed transactions only). Offsets are
// the topic's: one topic carries every egress, so the offsets of one
// egress are increasing but not dense (from the first record, ask again
// from the last offset + 1). wait bounds how long an empty read waits.
func (n *Node) ReadEgress(ctx context.Context, name string, from uint64, max, maxBytes int, wait time.Duration) ([]engine.EgressRecord, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty egress name", engine.ErrBadMessage)
	}
	max = min(cmp.Or(max, 100), 10000)
	if from > math.MaxInt64 {
		return nil, fmt.Errorf("%w: offset %d out of range", engine.ErrBadMessage, from)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ends, err := n.adm.ListCommittedOffsets(rctx, n.topics.Egress)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: egress end offset: %w", err)
	}
	end := int64(0)
	if o, ok := ends.Lookup(n.topics.Egress, 0); ok {
		end = o.Offset
	}
	deadline := time.Now().Add(wait)
	for end <= int64(from) { // nothing yet: wait for more, at most wait
		if !time.Now().Before(deadline) {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if ends, err = n.adm.ListCommittedOffsets(rctx, n.topics.Egress); err == nil {
			if o, ok := ends.Lookup(n.topics.Egress, 0); ok {
				end = o.Offset
			}
		}
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{n.topics.Egress: {0: kgo.NewOffset().At(int64(from))}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}, n.cfg.ClientOpts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []engine.EgressRecord
	size := 0
	for {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return nil, fmt.Errorf("cluster: read egress %s: %w", name, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("cluster: read egress %s: %w", name, ferr)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if done || r.Offset >= end {
				done = true
				return
			}
			if r.Offset+1 >= end {
				done = true
			}
			if r.Attrs.IsControl() || string(r.Key) != name {
				return
			}
			rec, err := decodeEgress(r)
			if err != nil {
				n.log.Warn("unreadable egress record", "offset", r.Offset, "err", err)
				return
			}
			if maxBytes > 0 && len(out) > 0 && size+len(rec.Message.Value) > maxBytes {
				done = true
				return
			}
			size += len(rec.Message.Value)
			out = append(out, rec)
			if len(out) >= max {
				done = true
			}
		})
		if done {
			return out, nil
		}
	}
}

// decodeEgress is encodeEgress's inverse.
func decodeEgress(r *kgo.Record) (engine.EgressRecord, error) {
	src, rest, err := format.DecodeAddressPrefix(r.Value)
	if err != nil {
		return engine.EgressRecord{}, err
	}
	l, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < l {
		return engine.EgressRecord{}, fmt.Errorf("%w: egress record type", format.ErrCorrupt)
	}
	typ := string(rest[k : k+int(l)])
	return engine.EgressRecord{Offset: uint64(r.Offset), Source: src,
		Message: engine.Message{Type: typ, Value: rest[k+int(l):]}}, nil
}
