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
// does, InitProducerId answers COORDINATOR_LOAD_IN_PROGRESS and Produce
// NOT_LEADER_FOR_PARTITION (clients retry both): a producer whose
// transaction was aborted so cannot produce again before its marker is
// written, since kfake bumped its epoch at the load.

// Producer sequences after a crash.
//
// kfake keeps the idempotent producers' sequence windows (what lets a
// broker recognise a retried batch it already wrote) only in a file it
// writes at a clean stop. After a kill it has none, and a batch written
// just before the kill, whose acknowledgement the producer never got, is
// written a second time when the producer retries it: an acknowledged
// message twice in the log. Kafka rebuilds the windows from the log. So
// does cmd/kfake: the same scan records the last batches of every
// idempotent producer per partition, and a produced batch equal to one of
// them (producer id, epoch, first and last sequence) is answered with the
// offset it already has instead of being written again (dedupeProduce).
//
// Both need a read of every partition's whole log at each start from a data
// directory: a start takes longer the more the directory holds.

// recovery is what the scan of a loaded data directory found.
type recovery struct {
	markers int
	batches map[seqKey]*lastBatches
	names   map[[16]byte]string // topic id -> name (produce v13 names topics by id)
}

type seqKey struct {
	topic string
	part  int32
	pid   int64
}

// lastBatches are a producer's last (up to 5, as Kafka keeps) idempotent
// batches in a partition.
type lastBatches struct {
	n int
	b [5]seqBatch
}

type seqBatch struct {
	epoch       int16
	first, last int32
	offset      int64
}

func (l *lastBatches) add(b seqBatch) {
	if l.n == len(l.b) {
		copy(l.b[:], l.b[1:])
		l.n--
	}
	l.b[l.n] = b
	l.n++
}

func (l *lastBatches) find(epoch int16, first, last int32) (int64, bool) {
	for i := 0; i < l.n; i++ {
		if b := l.b[i]; b.epoch == epoch && b.first == first && b.last == last {
			return b.offset, true
		}
	}
	return 0, false
}

// recoverLog writes the abort markers of the transactions the load of c's
// data directory aborted implicitly and installs the produce deduplication
// of the batches the log already holds; it returns how many markers it
// wrote.
func recoverLog(ctx context.Context, c *kfake.Cluster) (int, error) {
	// Until the scan is done, producers wait: InitProducerId and Produce
	// answer retriable errors (a Kafka broker loading its state does the
	// same), so no batch is written before its retry could be recognised
	// and no aborted producer starts a transaction before its marker.
	var scanned atomic.Pointer[recovery]
	c.ControlKey(22, func(req kmsg.Request) (kmsg.Response, error, bool) {
		if scanned.Load() != nil {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
	c.ControlKey(0, func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		rec := scanned.Load()
		if rec == nil {
			return produceError(req.(*kmsg.ProduceRequest), kerr.NotLeaderForPartition.Code), nil, true
		}
		if len(rec.batches) == 0 {
			c.DropControl()
			return nil, nil, false
		}
		return dedupeProduce(req.(*kmsg.ProduceRequest), rec)
	})
	rec, err := scanLog(ctx, c)
	scanned.Store(&rec)
	return rec.markers, err
}

// produceError answers every partition of req with code.
func produceError(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// dedupeProduce answers a produce request whose batches the log already
// holds (the retries of batches written before a kill) with their offsets.
// When only some of its partitions are such retries, they are taken out of
// the request and kfake handles the rest; the producer sends the ones left
// unanswered again, alone, and they are answered then.
func dedupeProduce(req *kmsg.ProduceRequest, rec *recovery) (kmsg.Response, error, bool) {
	type dup struct {
		ti, pi int
		offset int64
	}
	var dups []dup
	total := 0
	for ti := range req.Topics {
		t := &req.Topics[ti]
		for pi := range t.Partitions {
			total++
			p := &t.Partitions[pi]
			raw := p.Records
			// One batch: base offset 8, length 4, leader epoch 4, magic 1,
			// crc 4, attributes 2, last offset delta 4, timestamps 16,
			// producer id 8, producer epoch 2, base sequence 4.
			if len(raw) < 61 || int(binary.BigEndian.Uint32(raw[8:12]))+12 != len(raw) || raw[16] != 2 {
				continue
			}
			const transactional = 0x10
			if binary.BigEndian.Uint16(raw[21:23])&transactional != 0 {
				continue // a transaction open at a kill was aborted; its producer is fenced
			}
			pid := int64(binary.BigEndian.Uint64(raw[43:51]))
			epoch := int16(binary.BigEndian.Uint16(raw[51:53]))
			first := int32(binary.BigEndian.Uint32(raw[53:57]))
			last := first + int32(binary.BigEndian.Uint32(raw[23:27]))
			if pid < 0 || first < 0 {
				continue
			}
			topic := t.Topic
			if topic == "" {
				topic = rec.names[t.TopicID]
			}
			l := rec.batches[seqKey{topic, p.Partition, pid}]
			if l == nil {
				continue
			}
			if off, ok := l.find(epoch, first, last); ok {
				dups = append(dups, dup{ti, pi, off})
			}
		}
	}
	switch {
	case len(dups) == 0:
		return nil, nil, false
	case len(dups) < total:
		for i := len(dups) - 1; i >= 0; i-- {
			t := &req.Topics[dups[i].ti]
			t.Partitions = append(t.Partitions[:dups[i].pi], t.Partitions[dups[i].pi+1:]...)
		}
		return nil, nil, false
	}
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for ti := range req.Topics {
		t := &req.Topics[ti]
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = rt.Partitions[:0]
		resp.Topics = append(resp.Topics, rt)
	}
	for _, d := range dups {
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.Partition = req.Topics[d.ti].Partitions[d.pi].Partition
		rp.BaseOffset = d.offset
		resp.Topics[d.ti].Partitions = append(resp.Topics[d.ti].Partitions, rp)
	}
	return resp, nil, true
}

// scanLog writes the missing abort markers and returns them with the
// idempotent producers' last batches.
func scanLog(ctx context.Context, c *kfake.Cluster) (recovery, error) {
	rec := recovery{batches: map[seqKey]*lastBatches{}, names: map[[16]byte]string{}}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		return rec, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		return rec, fmt.Errorf("list topics: %w", err)
	}
	if err := topics.Error(); err != nil {
		return rec, fmt.Errorf("list topics: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics.Names()...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return rec, fmt.Errorf("start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics.Names()...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return rec, fmt.Errorf("end offsets: %w", err)
	}
	written := &rec.markers
	for _, td := range topics.Sorted() {
		rec.names[td.ID] = td.Topic
		for _, pd := range td.Partitions.Sorted() {
			s, _ := starts.Lookup(td.Topic, pd.Partition)
			e, _ := ends.Lookup(td.Topic, pd.Partition)
			if e.Offset <= s.Offset {
				continue
			}
			open, err := scanPartition(ctx, cl, td.Topic, td.ID, pd.Partition, pd.Leader, s.Offset, e.Offset, rec.batches)
			if err != nil {
				return rec, err
			}
			if len(open) == 0 {
				continue
			}
			// A transaction the broker holds open (restored by a clean
			// shutdown, or begun since the load) is not touched.
			live, err := adm.DescribeProducers(ctx, kadm.TopicsSet{td.Topic: {pd.Partition: {}}})
			if err != nil {
				return rec, fmt.Errorf("describe producers of %s/%d: %w", td.Topic, pd.Partition, err)
			}
			live.EachPartition(func(p kadm.DescribedProducersPartition) {
				if err == nil && p.Err != nil {
					err = fmt.Errorf("describe producers of %s/%d: %w", td.Topic, pd.Partition, p.Err)
				}
			})
			if err != nil {
				return rec, err
			}
			live.EachProducer(func(p kadm.DescribedProducer) {
				if p.CurrentTxnStartOffset >= 0 {
					delete(open, p.ProducerID)
				}
			})
			for pid, epoch := range open {
				if err := writeAbortMarker(ctx, cl, td.Topic, pd.Partition, pd.Leader, pid, epoch); err != nil {
					return rec, err
				}
				*written++
			}
		}
	}
	return rec, nil
}

// scanPartition reads partition p's log in [from, end), records the
// idempotent producers' last batches in known and returns the producers
// (id and epoch) whose last transactional batch no control batch of theirs
// follows.
func scanPartition(ctx context.Context, cl *kgo.Client, topic string, id [16]byte, p, leader int32, from, end int64, known map[seqKey]*lastBatches) (map[int64]int16, error) {
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
				next = max(next, scanBatches(r.RecordBatches, open, func(b *kmsg.RecordBatch) {
					if b.ProducerID < 0 || b.FirstSequence < 0 {
						return
					}
					k := seqKey{topic, p, b.ProducerID}
					l := known[k]
					if l == nil {
						l = &lastBatches{}
						known[k] = l
					}
					l.add(seqBatch{epoch: b.ProducerEpoch, first: b.FirstSequence, last: b.FirstSequence + b.LastOffsetDelta, offset: b.FirstOffset})
				}))
			}
		}
		if next == off {
			return nil, fmt.Errorf("read %s/%d: no progress at offset %d of %d", topic, p, off, end)
		}
		off = next
	}
	return open, nil
}

// scanBatches updates open with the record batches in raw, calls data with
// each non-control batch and returns the offset after the last whole batch.
func scanBatches(raw []byte, open map[int64]int16, data func(*kmsg.RecordBatch)) int64 {
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
			continue
		case b.Attributes&transactional != 0:
			open[b.ProducerID] = b.ProducerEpoch
		}
		data(&b)
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
