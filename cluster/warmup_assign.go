package cluster

import "slices"

// warmMember is a group member as the assignment function sees it.
type warmMember struct {
	ID, Name   string  // member id; node name (instance id) for logs
	Owned      []int32 // input partitions it owned when it joined
	Generation int32   // the generation its Owned is of
	Pos        []int64 // its changelog positions by partition; nil: unknown (its metadata cannot be read)
}

// warmDecision is one partition whose target was not its owner.
type warmDecision struct {
	Partition          int32
	Kind               string // "move" (target caught up), "hold" (stays on its owner while the target warms up), "substitute" (to another caught-up member short of its share), "orphan" (no live owner: a caught-up member)
	To, Target, Owner  string // names; Owner "" when no member owned it
	ToPos, TargetPos   int64  // their positions (-1: unknown)
	Best               int64  // the best position any member advertised
	Lag                int64  // the bound
	TargetUnknownCatch bool   // the target's positions are unknown: moved as cooperative-sticky would
}

// warmupResult is the assignment of the input topic.
type warmupResult struct {
	Active    map[string][]int32 // member id -> partitions it consumes
	Warming   map[string][]int32 // member id -> partitions it warms up
	Decisions []warmDecision
	Held      int // partitions kept on their owner, or given to another member than their target, while the target warms up
}

// warmupAssign decides the input topic's assignment from the target
// (cooperative-sticky's, member id -> partitions): a partition moves to
// its target only if the target is caught up (its position at least the
// best position minus lag; a member of unknown positions counts as caught
// up), else stays on its owner, or, without a live owner, goes to a
// caught-up member; the target then warms the partition up. Members must
// be sorted (instance id, then member id). It is pure: no I/O.
func warmupAssign(members []warmMember, target map[string][]int32, parts int32, lag int64) warmupResult {
	a := newAssigner(members, target, parts, lag)
	orphans := a.placeTargets()
	a.substitute()
	a.placeOrphans(orphans)
	slices.SortFunc(a.res.Decisions, func(x, y warmDecision) int { return int(x.Partition - y.Partition) })
	return a.res
}

// assigner is warmupAssign's state.
type assigner struct {
	members    []warmMember
	parts      int32
	lag        int64
	idx        map[string]int // member id -> index
	owner, tgt []int          // by partition: member index, -1 for none
	count      []int          // by member: partitions given so far
	quota      []int          // by member: its share in the target
	res        warmupResult
}

// newAssigner finds each partition's owner (the member claiming it with
// the highest generation) and target.
func newAssigner(members []warmMember, target map[string][]int32, parts int32, lag int64) *assigner {
	a := &assigner{members: members, parts: parts, lag: lag, idx: make(map[string]int, len(members)),
		owner: make([]int, parts), tgt: make([]int, parts), count: make([]int, len(members)), quota: make([]int, len(members)),
		res: warmupResult{Active: map[string][]int32{}, Warming: map[string][]int32{}}}
	for i, m := range members {
		a.idx[m.ID] = i
	}
	for p := range a.owner {
		a.owner[p], a.tgt[p] = -1, -1
	}
	for i, m := range members {
		for _, p := range m.Owned {
			if p < 0 || p >= parts {
				continue
			}
			if o := a.owner[p]; o < 0 || m.Generation > members[o].Generation {
				a.owner[p] = i
			}
		}
	}
	for id, ps := range target {
		i, ok := a.idx[id]
		if !ok {
			continue
		}
		a.quota[i] = len(ps)
		for _, p := range ps {
			if p >= 0 && p < parts {
				a.tgt[p] = i
			}
		}
	}
	return a
}

// pos is member i's position of partition p (-1: unknown).
func (a *assigner) pos(i int, p int32) int64 {
	if a.members[i].Pos == nil {
		return -1
	}
	return a.members[i].Pos[p]
}

// caught: member i's copy of p is within the bound of best (or its
// positions are unknown).
func (a *assigner) caught(i int, p int32, best int64) bool {
	return a.members[i].Pos == nil || a.pos(i, p) >= best-a.lag
}

func (a *assigner) give(i int, p int32) {
	a.res.Active[a.members[i].ID] = append(a.res.Active[a.members[i].ID], p)
	a.count[i]++
}

func (a *assigner) warm(i int, p int32) {
	a.res.Warming[a.members[i].ID] = append(a.res.Warming[a.members[i].ID], p)
	a.res.Held++
}

func (a *assigner) name(i int) string {
	if i < 0 {
		return ""
	}
	return a.members[i].Name
}

// placeTargets gives each partition to its target if the target is
// caught up, else holds it on its owner; it returns the partitions with
// neither (no live owner, a lagging target), to place once the others
// are.
func (a *assigner) placeTargets() []warmDecision {
	var orphans []warmDecision
	for p := range a.parts {
		t, o := a.tgt[p], a.owner[p]
		if t < 0 { // cooperative-sticky left it unassigned (no member consumes the topic)
			continue
		}
		if t == o {
			a.give(t, p)
			continue
		}
		best := int64(0)
		for i := range a.members {
			best = max(best, a.pos(i, p))
		}
		d := warmDecision{Partition: p, Target: a.name(t), Owner: a.name(o), TargetPos: a.pos(t, p), Best: best, Lag: a.lag}
		switch {
		case a.caught(t, p, best):
			a.give(t, p)
			d.Kind, d.To, d.ToPos, d.TargetUnknownCatch = "move", a.name(t), a.pos(t, p), a.members[t].Pos == nil
		case o >= 0:
			a.give(o, p)
			a.warm(t, p)
			d.Kind, d.To, d.ToPos = "hold", a.name(o), a.pos(o, p)
		default:
			orphans = append(orphans, d)
			continue
		}
		a.res.Decisions = append(a.res.Decisions, d)
	}
	return orphans
}

// substitute gives a partition held on its owner to another caught-up
// member that has fewer partitions than its target share (its own
// targets lag) instead: a standby copy (the ring's, standby.go) is
// usually caught up, so members fill their share sooner and fewer
// partitions wait for a warm-up.
func (a *assigner) substitute() {
	for k := range a.res.Decisions {
		d := &a.res.Decisions[k]
		if d.Kind != "hold" {
			continue
		}
		p, o, t := d.Partition, a.owner[d.Partition], a.tgt[d.Partition]
		u := -1
		for i := range a.members {
			if i == o || a.members[i].Pos == nil || !a.caught(i, p, d.Best) || a.count[i] >= a.quota[i] {
				continue
			}
			if u < 0 || a.quota[i]-a.count[i] > a.quota[u]-a.count[u] {
				u = i
			}
		}
		if u < 0 {
			continue
		}
		a.res.Active[a.members[o].ID] = slices.DeleteFunc(a.res.Active[a.members[o].ID], func(q int32) bool { return q == p })
		a.count[o]--
		a.give(u, p)
		tid := a.members[t].ID
		a.res.Warming[tid] = slices.DeleteFunc(a.res.Warming[tid], func(q int32) bool { return q == p })
		if len(a.res.Warming[tid]) == 0 {
			delete(a.res.Warming, tid)
		}
		a.res.Held--
		d.Kind, d.To, d.ToPos = "substitute", a.name(u), a.pos(u, p)
	}
}

// placeOrphans gives each partition without a live owner whose target
// lags to a caught-up member (within the bound of the best position):
// the one with the fewest partitions, then the furthest ahead, then the
// first. In the second rebalance of a cooperative move the sticky target
// of a partition revoked for a caught-up member may be another member
// that lags: the partition then still goes to a caught-up member rather
// than back to where it was revoked from.
func (a *assigner) placeOrphans(orphans []warmDecision) {
	for _, d := range orphans {
		p, t := d.Partition, a.tgt[d.Partition]
		c := -1
		for i := range a.members {
			if a.members[i].Pos == nil || !a.caught(i, p, d.Best) {
				continue
			}
			if c < 0 || a.count[i] < a.count[c] || (a.count[i] == a.count[c] && a.pos(i, p) > a.pos(c, p)) {
				c = i
			}
		}
		a.give(c, p)
		a.warm(t, p)
		d.Kind, d.To, d.ToPos = "orphan", a.name(c), a.pos(c, p)
		a.res.Decisions = append(a.res.Decisions, d)
	}
}
