package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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
// ProbingInterval while a warm-up is pending. A held partition goes to
// another caught-up member short of its share if there is one. A
// partition whose owner is no longer a member goes to its target if the
// target is caught up, else to the caught-up member with the fewest
// partitions. The decisions are warmupAssign's (warmup_assign.go, pure).
//
// Each member advertises, in its JoinGroup metadata's UserData, the
// position of its store's copy of every changelog partition it holds
// (encodeWarmupMeta, warmup_meta.go); the leader puts each member's
// warm-up set in the UserData of the member's assignment
// (encodeWarmSet). The node's side (positions, warm-up set, probing) is
// in warmup_node.go. Other topics the group consumes (a
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
