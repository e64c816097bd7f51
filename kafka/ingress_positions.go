package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
)

// flushLoop flushes the positions of every assigned partition each
// CommitInterval, until the ingress closes.
func (in *Ingress) flushLoop() {
	defer in.wg.Done()
	t := time.NewTicker(in.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		}
		in.flush(in.ctx, in.partitions(), true)
	}
}

// flush records the acknowledged positions of ps durably in the engine
// (then a restart resumes there) and commits them to the group (for
// monitoring, group-offsets start-up and the next owner of a partition).
func (in *Ingress) flush(ctx context.Context, ps []*partition, commit bool) {
	in.flushMu.Lock()
	defer in.flushMu.Unlock()
	if in.abandoned.Load() {
		return
	}
	if in.recordPositions(ps) && commit {
		in.commitPositions(ctx, ps)
	}
}

// recordPositions makes the acknowledged positions of ps that moved
// durable in the engine; it reports whether it could. Under flushMu.
func (in *Ingress) recordPositions(ps []*partition) bool {
	var msgs []engine.Outgoing
	var moved []*partition
	for _, p := range ps {
		if a := p.acked.Load(); a != p.recorded {
			msgs = append(msgs, positionMsg(in.spec.ID, p.tp, a))
			moved = append(moved, p)
		}
	}
	if len(msgs) == 0 {
		return true
	}
	if err := in.sendRetry(in.sendCtx, msgs); err != nil {
		in.log.Warn("cannot record the consumed positions (the records will be read again after a restart and not applied twice)", "err", err)
		return false
	}
	for i, p := range moved {
		a, _ := msgs[i].Message.AsInt64()
		p.recorded = a
	}
	return true
}

// commitPositions commits the recorded positions of ps that the group has
// not been told yet. Under flushMu.
func (in *Ingress) commitPositions(ctx context.Context, ps []*partition) {
	offs := map[string]map[int32]kgo.EpochOffset{}
	var commits []*partition
	for _, p := range ps {
		if p.recorded != p.committed {
			if offs[p.tp.Topic] == nil {
				offs[p.tp.Topic] = map[int32]kgo.EpochOffset{}
			}
			offs[p.tp.Topic][p.tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: p.recorded}
			commits = append(commits, p)
		}
	}
	if len(commits) == 0 {
		return
	}
	var cerr error
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	in.cl.CommitOffsetsSync(cctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, pt := range t.Partitions {
				if e := kerr.ErrorForCode(pt.ErrorCode); e != nil && cerr == nil {
					cerr = fmt.Errorf("%s/%d: %w", t.Topic, pt.Partition, e)
				}
			}
		}
	})
	if cerr != nil {
		in.m.commitErrors.WithLabelValues(in.spec.ID).Inc()
		in.log.Debug("group offset commit failed (monitoring only; the engine's positions are durable)", "err", cerr)
		return
	}
	for _, p := range commits {
		p.committed = p.recorded
	}
}
