package cluster

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/store"
)

// warmup is a node's warm-up state (node.go holds one).
type warmup struct {
	pos      []atomic.Int64 // by partition: the changelog position of the store's copy (an upper bound while an epoch is open)
	mu       sync.Mutex
	warm     []int32 // this node's warm-up set (its last assignment's)
	on       bool    // the group runs the warm-up balancer
	leadGen  int32   // the generation this node last balanced as leader
	leadAt   time.Time
	leadHeld int
	lastAsk  time.Time     // the last rebalance this node asked for
	askWait  time.Duration // how long after lastAsk this node may ask again because its copies caught up
	asked    bool          // it asked since its last assignment
}

// setWarm records this node's warm-up set from a new assignment. If the
// node had asked for that rebalance and the set did not shrink (nothing
// moved here: the leader found the copies behind after all), the wait
// before the next such request doubles, up to most; a set that shrank or
// is empty resets it. So a node whose copies keep falling behind between
// its pass and the leader's balance (a bound smaller than an epoch's
// records) does not make the group rebalance every second.
func (w *warmup) setWarm(warm []int32, on bool, most time.Duration) (changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case len(warm) == 0 || len(warm) < len(w.warm):
		w.askWait = warmupProbeCooldown
	case w.asked:
		w.askWait = min(2*max(w.askWait, warmupProbeCooldown), max(most, warmupProbeCooldown))
	}
	w.asked = false
	changed = !slices.Equal(warm, w.warm) || on != w.on
	w.warm, w.on = warm, on
	return changed
}

// mayAsk reports whether a node whose warm-up copies caught up may ask
// for a rebalance at now, and records the request if so.
func (w *warmup) mayAsk(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.warm) == 0 || now.Sub(w.lastAsk) < max(w.askWait, warmupProbeCooldown) {
		return false
	}
	w.lastAsk, w.asked = now, true
	return true
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
		wasOn := w.on
		w.mu.Unlock()
		if wasOn && !on && n.cfg.WarmupLag >= 0 {
			n.log.Warn("the group balances with cooperative-sticky (a member does not offer the warm-up balancer): partitions move without warm-up")
		}
		changed := w.setWarm(warm, on, n.cfg.ProbingInterval)
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
	if caught && w.mayAsk(time.Now()) {
		n.stats.WarmupProbes.Add(1)
		n.log.Info("warm-up: asking the group for a rebalance", "why", "this node's warm-up copies are within the lag bound")
		n.sess.Client().ForceRebalance()
		return
	}
	w.mu.Lock()
	probe := w.leadHeld > 0 && w.leadGen == gen && time.Since(w.leadAt) >= n.cfg.ProbingInterval && time.Since(w.lastAsk) >= n.cfg.ProbingInterval
	held := w.leadHeld
	if probe {
		w.lastAsk = time.Now()
	}
	w.mu.Unlock()
	if !probe {
		return
	}
	why := fmt.Sprintf("probing: %d partitions wait for their targets to warm up", held)
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
