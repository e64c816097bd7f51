package cluster

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors are the node's Prometheus metrics (the HTTP server registers
// them with SetEngine).
func (n *Node) Collectors() []prometheus.Collector {
	labels := prometheus.Labels{"node": n.cfg.Node, "cluster": n.cfg.Name}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shardfn_cluster_" + name, Help: help, ConstLabels: labels}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardfn_cluster_" + name, Help: help, ConstLabels: labels}, f)
	}
	st := &n.stats
	return []prometheus.Collector{
		engineCollector{n},
		gauge("partitions_active", "Partitions this node's engine serves.", func() float64 { return float64(len(n.Owned())) }),
		gauge("partitions", "P, the cluster's partition count.", func() float64 { return float64(n.parts) }),
		gauge("ready", "1 while the node runs an engine over its partitions.", func() float64 {
			if n.Ready() {
				return 1
			}
			return 0
		}),
		counter("commits_total", "Transactions committed.", func() float64 { return float64(st.Commits.Load()) }),
		counter("aborts_total", "Epochs aborted (rebalances, fencing, errors).", func() float64 { return float64(st.Aborts.Load()) }),
		counter("rebalances_total", "Assignment changes seen.", func() float64 { return float64(st.Rebalances.Load()) }),
		counter("engine_restarts_total", "Engines opened over a new assignment.", func() float64 { return float64(st.Restarts.Load()) }),
		gauge("commit_seconds", "Duration of the last commit (flush, offsets, end of transaction).", func() float64 {
			return time.Duration(st.CommitNanos.Load()).Seconds()
		}),
		gauge("last_pause_seconds", "How long the last engine restart (restore included) held processing.", func() float64 {
			return time.Duration(st.LastPauseNanos.Load()).Seconds()
		}),
		counter("restored_records_total", "Changelog records restored into the store.", func() float64 { return float64(st.Restored.Load()) }),
		counter("restore_seconds_total", "Time spent restoring changelogs.", func() float64 { return time.Duration(st.RestoreNanos.Load()).Seconds() }),
		gauge("standby_partitions", "Partitions of which this node keeps a standby copy (the next node's, and its warm-up copies).", func() float64 { return float64(st.StandbyPartitions.Load()) }),
		gauge("standby_lag_records", "Changelog records the standby copies lack (at the last pass).", func() float64 { return float64(st.StandbyLag.Load()) }),
		counter("standby_applied_records_total", "Changelog records applied to standby copies.", func() float64 { return float64(st.StandbyApplied.Load()) }),
		counter("replayed_input_total", "Input records skipped because the state had applied them (an offset that went back).", func() float64 { return float64(st.Replayed.Load()) }),
		gauge("warmup_partitions", "Partitions this node warms up (reads their changelog) before the group moves them here.", func() float64 { return float64(st.WarmingPartitions.Load()) }),
		gauge("warmup_lag_records", "Changelog offsets this node's warm-up copies lack (at the last pass).", func() float64 { return float64(st.WarmupLag.Load()) }),
		gauge("warmup_held_partitions", "As the group's leader: partitions kept on their owner (or a caught-up member) at the last balance while their target warms up.", func() float64 { return float64(st.WarmupHeld.Load()) }),
		counter("warmup_probes_total", "Rebalances this node asked for: its warm-up copies caught up, or (leader) probing while partitions wait.", func() float64 { return float64(st.WarmupProbes.Load()) }),
		gauge("takeover_lag_records", "Changelog offsets the store lacked, at the last takeover, of the partition it lacked most of (restored before serving).", func() float64 { return float64(st.TakeoverLag.Load()) }),
		gauge("input_lag_records", "Input records of this node's partitions not yet committed (sampled).", func() float64 { return float64(st.InputLag.Load()) }),
	}
}

// sampleLag refreshes Stats.InputLag every few seconds: the last stable
// offset of each owned input partition minus the group's committed offset.
func (n *Node) sampleLag() {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	group := "shardfn-" + n.cfg.Name
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		ends, err1 := n.adm.ListCommittedOffsets(ctx, n.topics.In)
		offs, err2 := n.adm.FetchOffsets(ctx, group)
		cancel()
		if err1 != nil || err2 != nil {
			continue
		}
		var lag int64
		for _, p := range n.Owned() {
			end, ok := ends.Lookup(n.topics.In, p)
			if !ok {
				continue
			}
			at := int64(0)
			if o, ok := offs.Lookup(n.topics.In, p); ok && o.At >= 0 {
				at = o.At
			}
			lag += max(end.Offset-at, 0)
		}
		n.stats.InputLag.Store(lag)
	}
}
