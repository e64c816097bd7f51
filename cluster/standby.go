package cluster

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// Standby copies. Each node keeps a warm copy of the partitions of the
// next node in the ring of group members (sorted by name): between epochs,
// at most every StandbyInterval and for a bounded number of records, it
// reads their changelogs (read committed) into its store with their
// positions. When such a partition moves here (its owner left, died or
// lost it in a rebalance), the restore reads only the changelog written
// since the last pass instead of the whole partition. Each partition so
// has one standby (with two or more nodes). The standby is a copy, never
// served: the engine reads only the partitions it owns.

// standbyBudget bounds the changelog records one pass applies, so that a
// pass never holds up the node's commits for long.
const standbyBudget = 20000

// standbyPass brings the standby copies up to date (or as far as the
// budget allows).
func (n *Node) standbyPass(e *engine.Engine) {
	if n.cfg.StandbyInterval < 0 || time.Since(n.lastStandby) < n.cfg.StandbyInterval {
		return
	}
	n.lastStandby = time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	set := n.standbySet(ctx)
	n.stats.StandbyPartitions.Store(int64(len(set)))
	if len(set) == 0 {
		return
	}
	lso, err := n.adm.ListCommittedOffsets(ctx, n.topics.Changelog)
	if err != nil {
		return
	}
	budget := standbyBudget
	var lag int64
	for _, p := range set {
		end := int64(0)
		if o, ok := lso.Lookup(n.topics.Changelog, p); ok {
			end = o.Offset
		}
		from, err := e.ChangelogPosition(p)
		if err != nil || end <= from {
			continue
		}
		if budget <= 0 {
			lag += end - from
			continue
		}
		var changes []engine.Change
		reached, err := n.readChangelogUpTo(ctx, n.sess.Client(), p, from, end, budget, func(r *kgo.Record) error {
			kind, k, v, err := decodeChange(r)
			if err == nil {
				changes = append(changes, engine.Change{Partition: p, Kind: kind, Key: slices.Clone(k), Value: slices.Clone(v)})
			}
			return err
		})
		if reached <= from || (err != nil && len(changes) == 0) {
			continue
		}
		if err := e.ApplyStandby(changes, map[int32]int64{p: reached}); err != nil {
			n.log.Warn("standby copy not applied", "partition", p, "err", err)
			return
		}
		budget -= len(changes)
		n.stats.StandbyApplied.Add(uint64(len(changes)))
		lag += end - reached
	}
	n.stats.StandbyLag.Store(lag)
}

// standbySet is the partitions of the member after this node in the ring
// of group members (none with a single member).
func (n *Node) standbySet(ctx context.Context) []int32 {
	ds, err := n.adm.DescribeGroups(ctx, "shardfn-"+n.cfg.Name)
	if err != nil || ds.Error() != nil {
		return nil
	}
	owners := map[string][]int32{}
	for _, g := range ds {
		for _, m := range g.Members {
			a, ok := m.Assigned.AsConsumer()
			if !ok || m.InstanceID == nil {
				continue
			}
			owners[*m.InstanceID] = owners[*m.InstanceID][:0]
			for _, t := range a.Topics {
				if t.Topic == n.topics.In {
					owners[*m.InstanceID] = append(owners[*m.InstanceID], t.Partitions...)
				}
			}
		}
	}
	var names []string
	for name := range owners {
		names = append(names, name)
	}
	slices.Sort(names)
	i := slices.Index(names, n.cfg.Node)
	if i < 0 || len(names) < 2 {
		return nil
	}
	next := names[(i+1)%len(names)]
	var set []int32
	owned := *n.owned.Load()
	for _, p := range owners[next] {
		if int(p) < len(owned) && !owned[p] {
			set = append(set, p)
		}
	}
	slices.Sort(set)
	return set
}
