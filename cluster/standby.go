package cluster

import (
	"context"
	"maps"
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
// served: the engine reads only the partitions it owns. The same pass
// keeps the warm-up copies: the partitions the group's leader holds back
// on their owner until this node's copy is caught up (warmup.go).

// standbyBudget bounds the changelog records one pass applies, so that a
// pass never holds up the node's commits for long.
const standbyBudget = 20000

// standbyPass brings the standby copies and the warm-up copies (the
// partitions the group's leader asked this node to warm up, warmup.go)
// up to date, or as far as the budget allows, warm-up copies first. While
// it warms partitions up, a pass runs at least every warmupPassInterval,
// and a node whose warm-up copies all come within the lag bound asks for
// a rebalance (warmupProbe), so that they move here.
func (n *Node) standbyPass(e *engine.Engine) {
	warm := n.warm.warming()
	every := n.cfg.StandbyInterval
	if len(warm) > 0 && (every < 0 || every > warmupPassInterval) {
		every = warmupPassInterval
	}
	if every < 0 || time.Since(n.lastStandby) < every {
		n.warmupProbe(false)
		return
	}
	n.lastStandby = time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	var set []int32
	if n.cfg.StandbyInterval >= 0 {
		set = n.standbySet(ctx)
	}
	owned := *n.owned.Load()
	isWarm := make(map[int32]bool, len(warm))
	for _, p := range warm {
		if int(p) < len(owned) && !owned[p] {
			isWarm[p] = true
		}
	}
	set = slices.DeleteFunc(set, func(p int32) bool { return isWarm[p] })
	set = append(slices.Sorted(maps.Keys(isWarm)), set...)
	n.stats.StandbyPartitions.Store(int64(len(set)))
	if len(set) == 0 {
		n.stats.WarmupLag.Store(0)
		n.warmupProbe(false)
		return
	}
	lso, err := n.adm.ListCommittedOffsets(ctx, n.topics.Changelog)
	if err != nil {
		return
	}
	budget := standbyBudget
	var lag, warmLag int64
	caught := len(isWarm) > 0
	for _, p := range set {
		o, ok := lso.Lookup(n.topics.Changelog, p)
		if !ok || o.Err != nil {
			caught = false // its end is unknown
			continue
		}
		end := o.Offset
		from, err := e.ChangelogPosition(p)
		reached := from
		if err == nil && end > from && budget > 0 {
			reached = n.standbyRead(ctx, e, p, from, end, &budget)
		}
		behind := max(end-reached, 0)
		lag += behind
		if isWarm[p] {
			warmLag += behind
			if err != nil || behind > n.cfg.WarmupLag {
				caught = false
			}
		}
	}
	n.stats.StandbyLag.Store(lag)
	n.stats.WarmupLag.Store(warmLag)
	n.warmupProbe(caught)
}

// warmupPassInterval is the longest time between two passes while the
// node warms partitions up.
const warmupPassInterval = 250 * time.Millisecond

// standbyRead applies changelog partition p from offset from towards end
// to the standby copy, spending budget, and returns where the copy is.
func (n *Node) standbyRead(ctx context.Context, e *engine.Engine, p int32, from, end int64, budget *int) int64 {
	var changes []engine.Change
	reached, err := n.readChangelogUpTo(ctx, n.sess.Client(), p, from, end, *budget, func(r *kgo.Record) error {
		kind, k, v, err := decodeChange(r)
		if err == nil {
			changes = append(changes, engine.Change{Partition: p, Kind: kind, Key: slices.Clone(k), Value: slices.Clone(v)})
		}
		return err
	})
	if reached <= from || (err != nil && len(changes) == 0) {
		return from
	}
	if err := e.ApplyStandby(changes, map[int32]int64{p: reached}); err != nil {
		n.log.Warn("standby copy not applied", "partition", p, "err", err)
		*budget = 0
		return from
	}
	*budget -= len(changes)
	n.stats.StandbyApplied.Add(uint64(len(changes)))
	n.warm.notePosition(p, reached)
	return reached
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
