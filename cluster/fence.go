package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reserveIDs reserves a span of message ids: the offset of a record this
// node appends to the meta topic is unique in the cluster forever, so
// span o is [(o+1) << 32, (o+2) << 32).
func (n *Node) reserveIDs() (uint64, uint64, error) {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	r := &kgo.Record{Topic: n.topics.Meta, Partition: 0, Key: []byte("ids"), Value: []byte(n.cfg.Node)}
	if err := n.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return 0, 0, err
	}
	o := uint64(r.Offset)
	if o >= 1<<30 {
		return 0, 0, errors.New("cluster: the meta topic's offsets passed 2^30: message ids are exhausted")
	}
	return (o + 1) << 32, (o + 2) << 32, nil
}

// fencePredecessor starts and aborts a transaction at once: registering
// the transactional id fences this node's previous incarnation and aborts
// the transaction it left open, instead of leaving its partitions' readers
// (and this node's own restore) waiting for the transaction timeout.
func (n *Node) fencePredecessor() error {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	if err := n.sess.Begin(); err != nil {
		return fmt.Errorf("cluster: begin the fencing transaction: %w", err)
	}
	r := &kgo.Record{Topic: n.topics.Meta, Partition: 0, Key: []byte("fence"), Value: []byte(n.cfg.Node)}
	perr := n.sess.ProduceSync(ctx, r).FirstErr()
	if _, err := n.sess.End(ctx, kgo.TryAbort); err != nil || perr != nil {
		return fmt.Errorf("cluster: fence the previous incarnation of node %s: %w", n.cfg.Node, errors.Join(perr, err))
	}
	return nil
}

// metaTopicID is the meta topic's id (cached).
func (n *Node) metaTopicID(ctx context.Context) ([16]byte, error) {
	if id := n.metaID.Load(); id != nil {
		return *id, nil
	}
	td, err := n.adm.ListTopics(ctx, n.topics.Meta)
	if err != nil {
		return [16]byte{}, err
	}
	d, ok := td[n.topics.Meta]
	if !ok || d.Err != nil {
		return [16]byte{}, fmt.Errorf("topic %s: %v", n.topics.Meta, d.Err)
	}
	id := [16]byte(d.ID)
	n.metaID.Store(&id)
	return id, nil
}

// fenceCheck adds to the open transaction an offset commit for the meta
// topic's partition 0 (an offset the group never reads: no consumer
// position changes), made with the group generation and member id the
// engine was opened under, so that the broker refuses the transaction if
// this node is no longer that member (KIP-447's check, which the session
// makes only when it commits offsets of polled records). Committing an
// input partition's offset instead could move back the offset of a
// partition another node owns now.
func (n *Node) fenceCheck() error {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.TxnTimeout/2)
	defer cancel()
	cl := n.sess.Client()
	member, gen := n.member, n.gen
	if m, g := cl.GroupMetadata(); m != member || g != gen {
		return fmt.Errorf("the group generation moved from %d to %d", gen, g)
	}
	if member == "" || gen < 0 {
		return errors.New("not a group member")
	}
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return err
	}
	txnID := "shardfn-" + n.cfg.Name + "-" + n.cfg.Node
	group := "shardfn-" + n.cfg.Name
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, pid, epoch, group
	aresp, err := add.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(aresp.ErrorCode); err != nil {
		return err
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = txnID, group, pid, epoch
	req.Generation, req.MemberID, req.InstanceID = gen, member, &n.cfg.Node
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = n.topics.Meta                              // v0-5
	if rt.TopicID, err = n.metaTopicID(ctx); err != nil { // v6+
		return err
	}
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch = 0, 0, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, q := range t.Partitions {
			if err := kerr.ErrorForCode(q.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}
