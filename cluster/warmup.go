package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/store"
)

// The warm-up balancer (KIP-441's idea, Kafka Streams' high-availability
// assignor). The group's leader computes the cooperative-sticky assignment
// of the input topic (the target), then moves a partition to its target
// only if the target's copy of the partition's changelog is within
// WarmupLag offsets of the best copy any member advertises (the current
// owner's, as a rule). Otherwise the partition stays on its current owner,
// and the target is told to warm its copy up: it reads the partition's
// changelog into its store (standby.go) and asks for a rebalance once its
// copies are caught up; the leader also asks for one every
// ProbingInterval while a warm-up is pending. A partition whose owner is
// no longer a member goes to its target if the target is caught up, else
// to the most caught-up member.
//
// Each member advertises, in its JoinGroup metadata's UserData, the
// position of its store's copy of every changelog partition it holds
// (warmupMeta); the leader puts each member's warm-up set in the UserData
// of the member's assignment (warmSet). Other topics the group consumes (a
// module's Kafka ingresses: no state) are balanced by cooperative-sticky
// alone. The cooperative protocol's rule holds: a partition revoked from a
// member is not given to another in the same generation
// (kgo.BalancePlan.AdjustCooperative runs on the final plan), so a move
// takes two rebalances, the second deciding again on fresh positions.

const (
	// warmupProtocol is the balancer's protocol name in the group.
	warmupProtocol = "shardfn-warmup"
	// warmupMetaVersion is the version of the join metadata's UserData
	// (positions) and of the assignment's UserData (warm-up set).
	warmupMetaVersion = 1
	// DefaultWarmupLag is the default of Config.WarmupLag.
	DefaultWarmupLag = 10000
	// warmupProbeCooldown: a member asks for a rebalance because its
	// warm-up copies caught up at most this often.
	warmupProbeCooldown = time.Second
)

// encodeWarmupMeta encodes a member's changelog positions: version,
// partition count, number of entries, then (partition gap, position)
// uvarint pairs for the partitions with a position above 0.
func encodeWarmupMeta(pos []int64) []byte {
	n := 0
	for _, o := range pos {
		if o > 0 {
			n++
		}
	}
	b := make([]byte, 0, 8+n*5)
	b = append(b, warmupMetaVersion)
	b = binary.AppendUvarint(b, uint64(len(pos)))
	b = binary.AppendUvarint(b, uint64(n))
	last := -1
	for p, o := range pos {
		if o > 0 {
			b = binary.AppendUvarint(b, uint64(p-last-1))
			b = binary.AppendUvarint(b, uint64(o))
			last = p
		}
	}
	return b
}

// errWarmupMeta: a member's positions cannot be read.
var errWarmupMeta = errors.New("cluster: warm-up metadata")

// decodeWarmupMeta is encodeWarmupMeta's inverse, for a cluster of parts
// partitions.
func decodeWarmupMeta(b []byte, parts int32) ([]int64, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty (the member runs no warm-up balancer)", errWarmupMeta)
	}
	if b[0] != warmupMetaVersion {
		return nil, fmt.Errorf("%w: version %d, this node reads version %d (a newer node? run one version in a cluster)", errWarmupMeta, b[0], warmupMetaVersion)
	}
	r := uvarints{b: b[1:]}
	np, n := r.next(), r.next()
	if r.err == nil && np != uint64(parts) {
		return nil, fmt.Errorf("%w: the member has %d partitions, this node %d", errWarmupMeta, np, parts)
	}
	if r.err == nil && n > uint64(parts) {
		return nil, fmt.Errorf("%w: %d entries for %d partitions", errWarmupMeta, n, parts)
	}
	pos := make([]int64, parts)
	p := int64(-1)
	for i := uint64(0); i < n && r.err == nil; i++ {
		gap, o := r.next(), r.next()
		p += int64(gap) + 1
		if r.err == nil && (gap >= uint64(parts) || p >= int64(parts) || o > 1<<62) {
			r.err = fmt.Errorf("entry %d out of range (partition %d, position %d)", i, p, o)
		}
		if r.err == nil {
			pos[p] = int64(o)
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes past the end", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", errWarmupMeta, r.err)
	}
	return pos, nil
}

// encodeWarmSet encodes the partitions a member is to warm up: version,
// count, partition gaps (ps sorted).
func encodeWarmSet(ps []int32) []byte {
	b := make([]byte, 0, 2+len(ps)*2)
	b = append(b, warmupMetaVersion)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	last := int32(-1)
	for _, p := range ps {
		b = binary.AppendUvarint(b, uint64(p-last-1))
		last = p
	}
	return b
}

// decodeWarmSet is encodeWarmSet's inverse. Empty user data (an
// assignment of cooperative-sticky) is an empty set.
func decodeWarmSet(b []byte, parts int32) ([]int32, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != warmupMetaVersion {
		return nil, fmt.Errorf("%w: warm-up set version %d, this node reads version %d", errWarmupMeta, b[0], warmupMetaVersion)
	}
	r := uvarints{b: b[1:]}
	n := r.next()
	if r.err == nil && n > uint64(parts) {
		return nil, fmt.Errorf("%w: warm-up set of %d partitions, the cluster has %d", errWarmupMeta, n, parts)
	}
	ps := make([]int32, 0, n)
	p := int64(-1)
	for i := uint64(0); i < n && r.err == nil; i++ {
		gap := r.next()
		p += int64(gap) + 1
		if r.err == nil && (gap >= uint64(parts) || p >= int64(parts)) {
			r.err = fmt.Errorf("partition %d out of range", p)
		}
		if r.err == nil {
			ps = append(ps, int32(p))
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes past the end", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: warm-up set: %v", errWarmupMeta, r.err)
	}
	return ps, nil
}

type uvarints struct {
	b   []byte
	err error
}

func (r *uvarints) next() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated")
		return 0
	}
	r.b = r.b[n:]
	return v
}

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
// up), else stays on its owner, or, without a live owner, goes to the
// most caught-up member; the target then warms the partition up. Members
// must be sorted (instance id, then member id). It is pure: no I/O.
func warmupAssign(members []warmMember, target map[string][]int32, parts int32, lag int64) warmupResult {
	res := warmupResult{Active: map[string][]int32{}, Warming: map[string][]int32{}}
	idx := make(map[string]int, len(members))
	for i, m := range members {
		idx[m.ID] = i
	}
	owner := make([]int, parts)
	tgt := make([]int, parts)
	for p := range owner {
		owner[p], tgt[p] = -1, -1
	}
	for i, m := range members {
		for _, p := range m.Owned {
			if p < 0 || p >= parts {
				continue
			}
			if o := owner[p]; o < 0 || m.Generation > members[o].Generation {
				owner[p] = i
			}
		}
	}
	for id, ps := range target {
		i, ok := idx[id]
		if !ok {
			continue
		}
		for _, p := range ps {
			if p >= 0 && p < parts {
				tgt[p] = i
			}
		}
	}
	pos := func(i int, p int32) int64 {
		if members[i].Pos == nil {
			return -1
		}
		return members[i].Pos[p]
	}
	count := make([]int, len(members))
	give := func(i int, p int32) {
		res.Active[members[i].ID] = append(res.Active[members[i].ID], p)
		count[i]++
	}
	name := func(i int) string {
		if i < 0 {
			return ""
		}
		return members[i].Name
	}
	var orphans []warmDecision
	for p := range parts {
		t, o := tgt[p], owner[p]
		if t < 0 { // cooperative-sticky left it unassigned (no member consumes the topic)
			continue
		}
		if t == o {
			give(t, p)
			continue
		}
		best := int64(0)
		for i := range members {
			best = max(best, pos(i, p))
		}
		d := warmDecision{Partition: p, Target: name(t), Owner: name(o), TargetPos: pos(t, p), Best: best, Lag: lag}
		switch {
		case members[t].Pos == nil || pos(t, p) >= best-lag:
			give(t, p)
			d.Kind, d.To, d.ToPos, d.TargetUnknownCatch = "move", name(t), pos(t, p), members[t].Pos == nil
		case o >= 0:
			give(o, p)
			res.Warming[members[t].ID] = append(res.Warming[members[t].ID], p)
			res.Held++
			d.Kind, d.To, d.ToPos = "hold", name(o), pos(o, p)
		default:
			orphans = append(orphans, d) // once the others are placed
			continue
		}
		res.Decisions = append(res.Decisions, d)
	}
	// A partition held on its owner goes instead to another caught-up
	// member that has fewer partitions than its target share (its own
	// targets lag): a standby copy (the ring's, standby.go) is usually
	// caught up, so members fill their share sooner and fewer partitions
	// wait for a warm-up.
	quota := make([]int, len(members))
	for id, ps := range target {
		if i, ok := idx[id]; ok {
			quota[i] = len(ps)
		}
	}
	for k := range res.Decisions {
		d := &res.Decisions[k]
		if d.Kind != "hold" {
			continue
		}
		p, o, t := d.Partition, owner[d.Partition], tgt[d.Partition]
		u := -1
		for i := range members {
			if i == o || members[i].Pos == nil || pos(i, p) < d.Best-lag || count[i] >= quota[i] {
				continue
			}
			if u < 0 || quota[i]-count[i] > quota[u]-count[u] {
				u = i
			}
		}
		if u < 0 {
			continue
		}
		res.Active[members[o].ID] = slices.DeleteFunc(res.Active[members[o].ID], func(q int32) bool { return q == p })
		count[o]--
		give(u, p)
		tid := members[t].ID
		res.Warming[tid] = slices.DeleteFunc(res.Warming[tid], func(q int32) bool { return q == p })
		if len(res.Warming[tid]) == 0 {
			delete(res.Warming, tid)
		}
		res.Held--
		d.Kind, d.To, d.ToPos = "substitute", name(u), pos(u, p)
	}
	// A partition without a live owner whose target lags goes to a
	// caught-up member (within the bound of the best position): the one
	// with the fewest partitions, then the furthest ahead, then the
	// first. In the second rebalance of a cooperative move the sticky
	// target of a partition revoked for a caught-up member may be another
	// member that lags: the partition then still goes to a caught-up
	// member rather than back to where it was revoked from.
	for _, d := range orphans {
		p, t := d.Partition, tgt[d.Partition]
		c := -1
		for i := range members {
			if members[i].Pos == nil || pos(i, p) < d.Best-lag {
				continue
			}
			if c < 0 || count[i] < count[c] || (count[i] == count[c] && pos(i, p) > pos(c, p)) {
				c = i
			}
		}
		give(c, p)
		res.Warming[members[t].ID] = append(res.Warming[members[t].ID], p)
		res.Held++
		d.Kind, d.To, d.ToPos = "orphan", name(c), pos(c, p)
		res.Decisions = append(res.Decisions, d)
	}
	slices.SortFunc(res.Decisions, func(a, b warmDecision) int { return int(a.Partition - b.Partition) })
	return res
}

// warmupBalancer is the kgo.GroupBalancer; the node gives it its
// positions and takes the warm-up sets and balance results.
type warmupBalancer struct {
	topic    string // the input topic
	parts    int32
	lag      int64
	log      *slog.Logger
	coop     kgo.GroupBalancer // cooperative-sticky: the join metadata's base
	sticky   kgo.ConsumerBalancerBalance
	position func() []int64                    // the node's changelog positions
	assigned func(warm []int32, warmup bool)   // member side: this node's warm-up set, and whether the group runs the warm-up balancer
	balanced func(gen int32, res warmupResult) // leader side
}

func newWarmupBalancer(topic string, parts int32, lag int64, log *slog.Logger, position func() []int64,
	assigned func([]int32, bool), balanced func(int32, warmupResult)) *warmupBalancer {
	return &warmupBalancer{topic: topic, parts: parts, lag: lag, log: log, coop: kgo.CooperativeStickyBalancer(),
		sticky: kgo.StickyBalancer().(kgo.ConsumerBalancerBalance), position: position, assigned: assigned, balanced: balanced}
}

func (*warmupBalancer) ProtocolName() string { return warmupProtocol }
func (*warmupBalancer) IsCooperative() bool  { return true }

// JoinGroupMetadata is cooperative-sticky's (topics, owned partitions,
// generation) with this node's changelog positions as UserData.
func (b *warmupBalancer) JoinGroupMetadata(topics []string, current map[string][]int32, gen int32) []byte {
	raw := b.coop.JoinGroupMetadata(topics, current, gen)
	meta := kmsg.NewConsumerMemberMetadata()
	if err := meta.ReadFrom(raw); err != nil {
		return raw // cannot happen: kgo wrote it
	}
	meta.UserData = encodeWarmupMeta(b.position())
	return meta.AppendTo(nil)
}

func (b *warmupBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(assignment); err != nil {
		return nil, fmt.Errorf("cluster: sync assignment: %w", err)
	}
	m := make(map[string][]int32, len(a.Topics))
	for _, t := range a.Topics {
		m[t.Topic] = t.Partitions
	}
	warm, err := decodeWarmSet(a.UserData, b.parts)
	if err != nil {
		b.log.Warn("the leader's warm-up set cannot be read; warming nothing up", "err", err)
	}
	b.assigned(warm, true)
	return m, nil
}

func (b *warmupBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	return cb, cb.MemberTopics(), err
}

// Balance is the leader's: cooperative-sticky's target, warmupAssign on
// the input topic, then the cooperative adjustment.
func (b *warmupBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	var ms []warmMember
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		w := warmMember{ID: m.MemberID, Name: m.MemberID, Generation: meta.Generation}
		if m.InstanceID != nil {
			w.Name = *m.InstanceID
		}
		sm := kmsg.NewStickyMemberMetadata()
		sm.Generation = meta.Generation
		for _, o := range meta.OwnedPartitions {
			if o.Topic == b.topic {
				w.Owned = o.Partitions
			}
			a := kmsg.NewStickyMemberMetadataCurrentAssignment()
			a.Topic, a.Partitions = o.Topic, o.Partitions
			sm.CurrentAssignment = append(sm.CurrentAssignment, a)
		}
		pos, err := decodeWarmupMeta(meta.UserData, b.parts)
		if err != nil {
			b.log.Warn("a member's changelog positions cannot be read: partitions move to it without warm-up, as cooperative-sticky would move them", "member", w.Name, "err", err)
		}
		w.Pos = pos
		ms = append(ms, w)
		// The sticky target is computed by the eager sticky balancer
		// (the cooperative one adjusts its plan at once), which reads
		// what each member owns from StickyMemberMetadata UserData.
		meta.UserData = sm.AppendTo(nil)
	})
	plan, ok := b.sticky.Balance(cb, topics).(*kgo.BalancePlan)
	if !ok {
		cb.SetError(errors.New("cluster: the sticky balancer returned no plan"))
		return nil
	}
	pm := plan.AsMemberIDMap()
	if np := topics[b.topic]; np != b.parts {
		// The input topic's partition count in the client's metadata is
		// not the cluster's (a metadata refresh in flight): balance as
		// cooperative-sticky.
		b.log.Warn("warm-up skipped in this rebalance: the input topic's partition count is unknown or differs", "topic", b.topic, "partitions", np, "want", b.parts)
		plan.AdjustCooperative(cb)
		b.balanced(cb.Info().Generation, warmupResult{})
		return plan
	}
	target := make(map[string][]int32, len(pm))
	for id, ts := range pm {
		target[id] = ts[b.topic]
	}
	res := warmupAssign(ms, target, topics[b.topic], b.lag)
	for id, ts := range pm {
		if ps := res.Active[id]; len(ps) > 0 {
			ts[b.topic] = ps
		} else {
			delete(ts, b.topic)
		}
	}
	plan.AdjustCooperative(cb)
	logDecisions(b.log, res.Decisions)
	b.balanced(cb.Info().Generation, res)
	return &warmupPlan{plan: pm, warm: res.Warming}
}

// logDecisions logs the leader's decisions, one line per kind, source
// and destination, with their partitions and the positions of the first.
func logDecisions(log *slog.Logger, ds []warmDecision) {
	type group struct {
		kind, owner, to, target string
	}
	var order []group
	parts := map[group][]int32{}
	first := map[group]warmDecision{}
	for _, d := range ds {
		if d.Kind == "move" && d.Owner == "" {
			continue // an unowned partition to its caught-up target: nothing was decided
		}
		g := group{d.Kind, d.Owner, d.To, d.Target}
		if _, ok := parts[g]; !ok {
			order = append(order, g)
			first[g] = d
		}
		parts[g] = append(parts[g], d.Partition)
	}
	for _, g := range order {
		d := first[g]
		switch g.kind {
		case "move":
			log.Info("warm-up: partitions move to their caught-up target", "partitions", ranges(parts[g]), "from", g.owner, "to", g.to,
				"position", d.TargetPos, "best", d.Best, "lag_bound", d.Lag, "positions_unknown", d.TargetUnknownCatch)
		case "substitute":
			log.Info("warm-up: partitions move to a caught-up member short of its share instead of their lagging target", "partitions", ranges(parts[g]),
				"from", g.owner, "to", g.to, "position", d.ToPos, "target", g.target, "target_position", d.TargetPos, "best", d.Best, "lag_bound", d.Lag)
		case "hold":
			log.Info("warm-up: partitions stay on their owner while their target warms up", "partitions", ranges(parts[g]), "owner", g.owner,
				"target", g.target, "target_position", d.TargetPos, "best", d.Best, "lag_bound", d.Lag)
		case "orphan":
			log.Info("warm-up: partitions without a live owner go to the most caught-up member while their target warms up",
				"partitions", ranges(parts[g]), "to", g.to, "position", d.ToPos, "target", g.target, "target_position", d.TargetPos,
				"best", d.Best, "lag_bound", d.Lag)
		}
	}
}

// warmupPlan is the sync assignment: the plan, with each member's warm-up
// set of the input topic in its assignment's UserData.
type warmupPlan struct {
	plan map[string]map[string][]int32
	warm map[string][]int32
}

func (p *warmupPlan) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	out := make([]kmsg.SyncGroupRequestGroupAssignment, 0, len(p.plan))
	for member, ts := range p.plan {
		var a kmsg.ConsumerMemberAssignment
		for topic, ps := range ts {
			slices.Sort(ps)
			t := kmsg.NewConsumerMemberAssignmentTopic()
			t.Topic, t.Partitions = topic, ps
			a.Topics = append(a.Topics, t)
		}
		sort.Slice(a.Topics, func(i, j int) bool { return a.Topics[i].Topic < a.Topics[j].Topic })
		if w := p.warm[member]; len(w) > 0 {
			slices.Sort(w)
			a.UserData = encodeWarmSet(w)
		}
		s := kmsg.NewSyncGroupRequestGroupAssignment()
		s.MemberID, s.MemberAssignment = member, a.AppendTo(nil)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MemberID < out[j].MemberID })
	return out
}

// stickyFallback is cooperative-sticky, offered after the warm-up
// balancer (a group with a member that does not offer the warm-up
// balancer runs cooperative-sticky), or alone when warm-up is off: an
// assignment under it clears the node's warm-up set.
type stickyFallback struct {
	kgo.GroupBalancer
	assigned func([]int32, bool)
}

func (s stickyFallback) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	s.assigned(nil, false)
	return s.GroupBalancer.ParseSyncAssignment(assignment)
}

// warmup is a node's warm-up state (node.go holds one).
type warmup struct {
	pos      []atomic.Int64 // by partition: the changelog position of the store's copy (an upper bound while an epoch is open)
	mu       sync.Mutex
	warm     []int32 // this node's warm-up set (its last assignment's)
	on       bool    // the group runs the warm-up balancer
	leadGen  int32   // the generation this node last balanced as leader
	leadAt   time.Time
	leadHeld int
	lastAsk  time.Time // the last rebalance this node asked for
}

// positions is a copy of the node's changelog positions.
func (w *warmup) positions() []int64 {
	out := make([]int64, len(w.pos))
	for p := range w.pos {
		out[p] = w.pos[p].Load()
	}
	return out
}

// notePosition raises partition p's position to at least off.
func (w *warmup) notePosition(p int32, off int64) {
	if p < 0 || int(p) >= len(w.pos) {
		return
	}
	for {
		cur := w.pos[p].Load()
		if off <= cur || w.pos[p].CompareAndSwap(cur, off) {
			return
		}
	}
}

// setPositions replaces the positions with the store's.
func (w *warmup) setPositions(pos map[int32]int64) {
	for p := range w.pos {
		w.pos[p].Store(pos[int32(p)])
	}
}

// warming is this node's warm-up set.
func (w *warmup) warming() []int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.warm)
}

// warmupObserve, when set (tests), is called with each balance a node
// computes as the group's leader.
var warmupObserve atomic.Pointer[func(node string, res warmupResult)]

// warmupBalancers makes the node's group balancers (Start): the warm-up
// balancer and cooperative-sticky after it, or cooperative-sticky alone
// with WarmupLag < 0.
func (n *Node) warmupBalancers() []kgo.GroupBalancer {
	w := &n.warm
	assigned := func(warm []int32, on bool) {
		w.mu.Lock()
		changed := !slices.Equal(warm, w.warm) || on != w.on
		if on != w.on && !on && n.cfg.WarmupLag >= 0 {
			n.log.Warn("the group balances with cooperative-sticky (a member does not offer the warm-up balancer): partitions move without warm-up")
		}
		w.warm, w.on = warm, on
		w.mu.Unlock()
		n.stats.WarmingPartitions.Store(int64(len(warm)))
		if changed && len(warm) > 0 {
			n.log.Info("warm-up: warming partitions up before they move here", "partitions", ranges(warm))
		}
	}
	fallback := stickyFallback{GroupBalancer: kgo.CooperativeStickyBalancer(), assigned: assigned}
	if n.cfg.WarmupLag < 0 {
		return []kgo.GroupBalancer{fallback}
	}
	b := newWarmupBalancer(n.topics.In, n.parts, n.cfg.WarmupLag, n.log, w.positions, assigned,
		func(gen int32, res warmupResult) {
			w.mu.Lock()
			w.leadGen, w.leadAt, w.leadHeld = gen, time.Now(), res.Held
			w.mu.Unlock()
			n.stats.WarmupHeld.Store(int64(res.Held))
			if f := warmupObserve.Load(); f != nil {
				(*f)(n.cfg.Node, res)
			}
		})
	return []kgo.GroupBalancer{b, fallback}
}

// warmupProbe asks the group for a rebalance (the node loop's, between
// epochs) when this node is the leader of the current generation, that
// generation's balance kept partitions from their targets, and
// ProbingInterval has passed; or when caught is true (this node's warm-up
// copies are within the lag bound) and the cooldown has passed.
func (n *Node) warmupProbe(caught bool) {
	if n.cfg.WarmupLag < 0 {
		return
	}
	w := &n.warm
	_, gen := n.sess.Client().GroupMetadata()
	w.mu.Lock()
	why := ""
	switch {
	case caught && len(w.warm) > 0 && time.Since(w.lastAsk) >= warmupProbeCooldown:
		why = "this node's warm-up copies are within the lag bound"
	case w.leadHeld > 0 && w.leadGen == gen && time.Since(w.leadAt) >= n.cfg.ProbingInterval && time.Since(w.lastAsk) >= n.cfg.ProbingInterval:
		why = fmt.Sprintf("probing: %d partitions wait for their targets to warm up", w.leadHeld)
	}
	if why != "" {
		w.lastAsk = time.Now()
	}
	w.mu.Unlock()
	if why == "" {
		return
	}
	n.stats.WarmupProbes.Add(1)
	n.log.Info("warm-up: asking the group for a rebalance", "why", why)
	n.sess.Client().ForceRebalance()
}

// warmupStart readies the node's warm-up state before it first joins the
// group: the positions its store holds (a restarted node advertises the
// copies it kept).
func (n *Node) warmupStart() error {
	n.warm.pos = make([]atomic.Int64, n.parts)
	st, err := store.OpenPebble(filepath.Join(n.cfg.Engine.DataDir, "store"), store.PebbleOptions{Logger: n.log})
	if err != nil {
		return fmt.Errorf("cluster: open store for its changelog positions: %w", err)
	}
	defer st.Close()
	pos, err := engine.ClusterPositions(st, n.parts)
	if err != nil {
		return err
	}
	n.warm.setPositions(pos)
	return nil
}

// noteRestore records, once a reopen's restore is done, the store's
// positions (pos, raised to ends for the owned partitions) and how far
// behind the changelog's end the store was for each partition the node
// takes over (not in the engine it replaces).
func (n *Node) noteRestore(pos, ends map[int32]int64) {
	prev := *n.adopted.Load()
	var worst int64
	var worstP int32 = -1
	for p, end := range ends {
		if int(p) < len(prev) && prev[p] {
			continue
		}
		if gap := end - pos[p]; gap > worst {
			worst, worstP = gap, p
		}
	}
	all := make(map[int32]int64, len(pos))
	for p, o := range pos {
		all[p] = o
	}
	for p, end := range ends {
		all[p] = max(all[p], end)
	}
	n.warm.setPositions(all)
	n.stats.TakeoverLag.Store(worst)
	if worst > n.stats.MaxTakeoverLag.Load() {
		n.stats.MaxTakeoverLag.Store(worst)
	}
	if worstP >= 0 {
		n.log.Info("taking partitions over", "largest_lag", worst, "of_partition", worstP)
	}
}
