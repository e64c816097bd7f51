package kafka

import (
	"context"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// Listings of offsets that decide where a partition starts.
const (
	listStart = "start" // the partition's first offset
	listEnd   = "end"   // its end
	listDate  = "date"  // the first offset at or after the startup date
)

// startNeed is a partition whose start is an offset to list.
type startNeed struct {
	tp   TopicPartition
	list string // listStart, listEnd or listDate
}

// adjust decides where each newly assigned partition starts: at the
// engine's durable position if it has one, otherwise at the startup
// position, which is then recorded durably before anything is consumed
// (so that a restart resumes there, not at a later "latest").
func (in *Ingress) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	select {
	case <-in.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var needs []startNeed
	starts := map[TopicPartition]int64{}
	for topic, ps := range offsets {
		for part, off := range ps {
			tp := TopicPartition{Topic: topic, Partition: part}
			if err := in.placeStart(ctx, tp, off.EpochOffset().Offset, starts, &needs); err != nil {
				return nil, err
			}
		}
	}
	if len(needs) > 0 {
		topics := make([]string, 0, len(offsets))
		for t := range offsets {
			topics = append(topics, t)
		}
		if err := in.listStarts(ctx, topics, needs, starts); err != nil {
			return nil, err
		}
		// Record the resolved start durably before consuming.
		var msgs []engine.Outgoing
		for _, n := range needs {
			msgs = append(msgs, positionMsg(in.spec.ID, n.tp, starts[n.tp]))
		}
		if err := in.sendRetry(ctx, msgs); err != nil {
			return nil, fmt.Errorf("kafka: ingress %s: record start positions: %w", in.spec.ID, err)
		}
	}
	out := make(map[string]map[int32]kgo.Offset, len(offsets))
	for tp, start := range starts {
		if out[tp.Topic] == nil {
			out[tp.Topic] = map[int32]kgo.Offset{}
		}
		out[tp.Topic][tp.Partition] = kgo.NewOffset().At(start)
		in.startPartition(tp, start)
		in.log.Info("partition assigned", "partition", tp.String(), "start", start)
	}
	return out, nil
}

// placeStart decides where tp starts, given the group's committed offset
// (-1 when none): into starts when the offset is known, into needs when it
// is to be listed.
func (in *Ingress) placeStart(ctx context.Context, tp TopicPartition, committed int64, starts map[TopicPartition]int64, needs *[]startNeed) error {
	pos, ok, err := readPosition(ctx, in.eng, in.spec.ID, tp)
	if err != nil {
		return err
	}
	if ok {
		if committed > pos {
			in.log.Info("the group committed past the engine's position: another member consumed meanwhile; starting at the group's offset",
				"partition", tp.String(), "engine_position", pos, "group_offset", committed)
			pos = committed
		}
		starts[tp] = pos
		return nil
	}
	reset := listEnd
	if in.spec.ResetEarliest {
		reset = listStart
	}
	switch in.spec.Startup {
	case StartGroupOffsets:
		if committed >= 0 {
			starts[tp] = committed
		} else {
			*needs = append(*needs, startNeed{tp, reset})
		}
	case StartEarliest:
		*needs = append(*needs, startNeed{tp, listStart})
	case StartLatest:
		*needs = append(*needs, startNeed{tp, listEnd})
	case StartSpecificOffsets:
		if o, ok := in.spec.SpecificOffsets[tp]; ok {
			starts[tp] = o
		} else if committed >= 0 {
			starts[tp] = committed
		} else {
			*needs = append(*needs, startNeed{tp, reset})
		}
	case StartDate:
		*needs = append(*needs, startNeed{tp, listDate})
	}
	return nil
}

// listStarts lists the offsets that needs ask for (each listing once, over
// topics) and puts them into starts.
func (in *Ingress) listStarts(ctx context.Context, topics []string, needs []startNeed, starts map[TopicPartition]int64) error {
	lists := map[string]kadm.ListedOffsets{}
	for _, n := range needs {
		l, ok := lists[n.list]
		if !ok {
			var err error
			switch n.list {
			case listStart:
				l, err = in.adm.ListStartOffsets(ctx, topics...)
			case listEnd:
				l, err = in.adm.ListEndOffsets(ctx, topics...)
			case listDate:
				l, err = in.adm.ListOffsetsAfterMilli(ctx, in.spec.StartDate.UnixMilli(), topics...)
			}
			if err != nil {
				return fmt.Errorf("kafka: ingress %s: list offsets: %w", in.spec.ID, err)
			}
			lists[n.list] = l
		}
		lo, ok := l.Lookup(n.tp.Topic, n.tp.Partition)
		if !ok || lo.Err != nil {
			return fmt.Errorf("kafka: ingress %s: list offsets of %s: %v", in.spec.ID, n.tp, lo.Err)
		}
		o := lo.Offset
		if o < 0 && n.list == listDate { // no record at or after the date: the end
			end, err := in.adm.ListEndOffsets(ctx, n.tp.Topic)
			if err != nil {
				return err
			}
			e, _ := end.Lookup(n.tp.Topic, n.tp.Partition)
			o = e.Offset
		}
		starts[n.tp] = max(o, 0)
	}
	return nil
}

func (in *Ingress) startPartition(tp TopicPartition, start int64) {
	p := &partition{in: in, tp: tp, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	p.acked.Store(start)
	p.recorded, p.committed = start, -1
	p.hwm.Store(-1)
	in.mu.Lock()
	if in.ctx.Err() != nil { // closing
		in.mu.Unlock()
		return
	}
	old := in.parts[tp]
	in.parts[tp] = p
	in.mu.Unlock()
	if old != nil {
		old.halt()
	}
	in.wg.Add(1)
	go p.run()
}

func (in *Ingress) revoked(ctx context.Context, _ *kgo.Client, ps map[string][]int32) {
	in.release(ctx, ps, true)
}

func (in *Ingress) lost(ctx context.Context, _ *kgo.Client, ps map[string][]int32) {
	in.release(ctx, ps, false)
}

// release stops the workers of partitions taken away, records their
// positions and, for a revocation, commits them for the next owner.
func (in *Ingress) release(ctx context.Context, ps map[string][]int32, commit bool) {
	var gone []*partition
	in.mu.Lock()
	for topic, parts := range ps {
		for _, part := range parts {
			tp := TopicPartition{Topic: topic, Partition: part}
			if p := in.parts[tp]; p != nil {
				delete(in.parts, tp)
				gone = append(gone, p)
			}
		}
	}
	in.mu.Unlock()
	for _, p := range gone {
		p.halt()
	}
	if len(gone) > 0 {
		in.flush(ctx, gone, commit)
		for _, p := range gone {
			in.m.lag.DeleteLabelValues(in.spec.ID, p.tp.Topic, strconv.Itoa(int(p.tp.Partition)))
			in.log.Info("partition released", "partition", p.tp.String(), "position", p.acked.Load(), "committed", commit)
		}
	}
}
