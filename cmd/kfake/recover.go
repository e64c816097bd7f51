package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Abort markers after a crash.
//
// kfake, restarted from its data directory after a kill, aborts the
// transactions that were open at the kill, but writes no abort marker for
// them: it only notes the aborted range in memory and lists it in fetch
// responses. A read_committed reader (franz-go's, and the Java client's
// the same way) drops a producer's transactional batches from an aborted
// range's first offset until it meets that producer's abort marker. With
// no marker, every later transaction of the same producer id (a
// transactional producer keeps its id across epochs) that a fetch returns
// together with the aborted range is dropped too: committed records that
// read_committed consumers never see. Kafka itself always ends an aborted
// transaction with a marker.
//
// So cmd/kfake, after loading a data directory, finds every partition whose
// log ends inside a producer's transaction that no broker-side state keeps
// open, and writes the missing abort marker (WriteTxnMarkers, the request
// a Kafka transaction coordinator sends to a partition leader). While it
// does, InitProducerId answers COORDINATOR_LOAD_IN_PROGRESS (clients
// retry): a producer whose transaction was aborted so cannot produce again
// before its marker is written, since kfake bumped its epoch at the load.

// recoverAbortMarkers writes the abort markers of the transactions the
// load of c's data directory aborted implicitly; it returns how many it
// wrote.
func recoverAbortMarkers(ctx context.Context, c *kfake.Cluster) (int, error) {
	var done atomic.Bool
	c.ControlKey(22, func(req kmsg.Request) (kmsg.Response, error, bool) {
		if done.Load() {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
	defer done.Store(true)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	if err := topics.Error(); err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics.Names()...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics.Names()...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("end offsets: %w", err)
	}
	written := 0
	for _, td := range topics.Sorted() {
		for _, pd := range td.Partitions.Sorted() {
			s, _ := starts.Lookup(td.Topic, pd.Partition)
			e, _ := ends.Lookup(td.Topic, pd.Partition)
			if e.Offset <= s.Offset {
				continue
			}
			open, err := openAtEnd(ctx, cl, td.Topic, td.ID, pd.Partition, pd.Leader, s.Offset, e.Offset)
			if err != nil {
				return written, err
			}
			if len(open) == 0 {
				continue
			}
			// A transaction the broker holds open (restored by a clean
			// shutdown, or begun since the load) is not touched.
			live, err := adm.DescribeProducers(ctx, kadm.TopicsSet{td.Topic: {pd.Partition: {}}})
			if err != nil {
				return written, fmt.Errorf("describe producers of %s/%d: %w", td.Topic, pd.Partition, err)
			}
			live.EachPartition(func(p kadm.DescribedProducersPartition) {
				if err == nil && p.Err != nil {
					err = fmt.Errorf("describe producers of %s/%d: %w", td.Topic, pd.Partition, p.Err)
				}
			})
			if err != nil {
				return written, err
			}
			live.EachProducer(func(p kadm.DescribedProducer) {
				if p.CurrentTxnStartOffset >= 0 {
					delete(open, p.ProducerID)
				}
			})
			for pid, epoch := range open {
				if err := writeAbortMarker(ctx, cl, td.Topic, pd.Partition, pd.Leader, pid, epoch); err != nil {
					return written, err
				}
				written++
			}
		}
	}
	return written, nil
}

// openAtEnd reads partition p's log in [from, end) and returns the
// producers (id and epoch) whose last transactional batch no control
// batch of theirs follows.
func openAtEnd(ctx context.Context, cl *kgo.Client, topic string, id [16]byte, p, leader int32, from, end int64) (map[int64]int16, error) {
	open := map[int64]int16{}
	off := from
	for off < end {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxWaitMillis, req.MaxBytes = -1, 100, 64<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, off, 32<<20
		rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil {
			return nil, fmt.Errorf("read %s/%d at %d: %w", topic, p, off, err)
		}
		next := off
		for _, t := range resp.Topics {
			for _, r := range t.Partitions {
				if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
					return nil, fmt.Errorf("read %s/%d at %d: %w", topic, p, off, err)
				}
				next = max(next, scanBatches(r.RecordBatches, open))
			}
		}
		if next == off {
			return nil, fmt.Errorf("read %s/%d: no progress at offset %d of %d", topic, p, off, end)
		}
		off = next
	}
	return open, nil
}

// scanBatches updates open with the record batches in raw and returns the
// offset after the last whole batch.
func scanBatches(raw []byte, open map[int64]int16) int64 {
	next := int64(-1)
	for len(raw) >= 12 {
		n := int(binary.BigEndian.Uint32(raw[8:12])) + 12
		if n > len(raw) {
			break // a partial batch at the end of the response
		}
		var b kmsg.RecordBatch
		if err := b.ReadFrom(raw[:n]); err != nil {
			break
		}
		raw = raw[n:]
		next = b.FirstOffset + int64(b.LastOffsetDelta) + 1
		const transactional, control = 0x10, 0x20
		switch {
		case b.Attributes&control != 0:
			delete(open, b.ProducerID)
		case b.Attributes&transactional != 0:
			open[b.ProducerID] = b.ProducerEpoch
		}
	}
	return next
}

func writeAbortMarker(ctx context.Context, cl *kgo.Client, topic string, p, leader int32, pid int64, epoch int16) error {
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed = pid, epoch, false
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = topic, []int32{p}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	for try := 0; ; try++ {
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err == nil {
			for _, rm := range resp.Markers {
				for _, rt := range rm.Topics {
					for _, rp := range rt.Partitions {
						if err == nil {
							err = kerr.ErrorForCode(rp.ErrorCode)
						}
					}
				}
			}
		}
		if err == nil {
			return nil
		}
		if try == 10 || ctx.Err() != nil {
			return fmt.Errorf("abort marker for producer %d on %s/%d: %w", pid, topic, p, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
