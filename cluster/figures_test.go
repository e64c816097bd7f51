package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/loadgen"
	"github.com/shardfn/shardfn/loadgen/report"
	"github.com/shardfn/shardfn/rides"
)

// TestClusterFigures measures, in one process and one run, RS-1 on a
// single-node engine (its WAL, fsync'd) and on cluster nodes over an
// in-process kfake (1 node, then 3), with the same load, and a restore:
// a node without data taking over partitions. It writes the report to
// the file CLUSTER_FIGURES names (make bench-cluster: results/cluster.md)
// and is skipped without it. Performance is reported, never asserted.
func TestClusterFigures(t *testing.T) {
	out := os.Getenv("CLUSTER_FIGURES")
	if out == "" {
		t.Skip("set CLUSTER_FIGURES=<file> (make bench-cluster)")
	}
	dur := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("CLUSTER_FIGURES_DURATION")); err == nil {
		dur = d
	}
	cfg := loadgen.Config{Duration: dur, Warmup: 2 * time.Second, Concurrency: 64, Drivers: 2000, Passengers: 10000, Grid: 30,
		RequestShare: 0.1, FinishDelay: 500 * time.Millisecond, RequestTimeout: 20 * time.Second, DrainTimeout: 60 * time.Second}
	commitInterval := 20 * time.Millisecond
	var rows []figureRow
	run := func(name string, tg loadgen.Target) {
		t.Helper()
		r, err := loadgen.Run(context.Background(), tg, cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %.0f events/s, request p50 %.1f ms p99 %.1f ms, %s", name, r.EventsPerS, r.Request.P50Ms, r.Request.P99Ms, r.InvariantsText)
		rows = append(rows, figureRow{name, r})
	}

	// Single node: the same engine with its own WAL.
	in, err := loadgen.NewInproc(loadgen.InprocOptions{Engine: engine.Options{Shards: 2, MemoryBudget: 64 << 20},
		Rides: rides.Config{FinishDelay: cfg.FinishDelay}})
	if err != nil {
		t.Fatal(err)
	}
	run("single node (WAL, fsync), no Kafka", in)
	_ = in.Close()

	for _, nodes := range []int{1, 3} {
		c := newTestCluster(t, 64)
		c.name = fmt.Sprintf("fig%d", nodes)
		c.specs = rides.Specs()
		c.commit = commitInterval
		for i := range nodes {
			c.start(string(rune('a' + i)))
		}
		c.settled(60 * time.Second)
		run(fmt.Sprintf("cluster, %d node(s) on kfake", nodes), nodesTarget{c})
		if nodes == 3 {
			// Restore: a node with no data takes over a node's partitions.
			c.stop("c", true)
			start := time.Now()
			d := c.start("d")
			c.settled(120 * time.Second)
			took := time.Since(start)
			st := d.Stats()
			recs, secs := st.Restored.Load(), time.Duration(st.RestoreNanos.Load()).Seconds()
			t.Logf("restore: %d changelog records in %.2f s; a fresh node serving after %v", recs, secs, took)
			rows = append(rows, figureRow{name: fmt.Sprintf("restore: %d records in %.2f s (%.0f records/s on kfake); the fresh node served its partitions %.2f s after it started",
				recs, secs, float64(recs)/max(secs, 1e-9), took.Seconds())})
		}
	}

	if err := os.WriteFile(out, []byte(figuresReport(cfg, rows, commitInterval)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// figureRow is one measured system (r nil: a line of text).
type figureRow struct {
	name string
	r    *loadgen.Result
}

// figuresReport renders results/cluster.md.
func figuresReport(cfg loadgen.Config, rows []figureRow, commitInterval time.Duration) string {
	m := report.Machine("")
	var b strings.Builder
	fmt.Fprintf(&b, "# Cluster mode: RS-1 on kfake\n\n")
	fmt.Fprintf(&b, "Written by `make bench-cluster` (`CLUSTER_FIGURES=results/cluster.md go test -run TestClusterFigures -timeout 30m ./cluster/`) at %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(&b, "**Every cluster figure is on kfake**: franz-go's in-process Kafka-protocol test cluster (three brokers on loopback in the benchmark's own process, no replication, no disk), not Kafka. All nodes, the broker and the load generator share this one machine, so three nodes here show the cost of cluster mode, not its scaling.\n\n")
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s memory, %s; %s; %s; commit %s.\n\n", m.CPU, m.Cores, report.Bytes(m.MemBytes), m.Disk, m.Kernel, m.GoVersion, m.Commit)
	fmt.Fprintf(&b, "Load: closed loop, %d workers, %v measured after %v warm-up, %d drivers, %d passengers, %dx%d grid, %.0f %% requests, rides finishing after %v. Cluster: %d partitions, commit interval %v, 2 shards per node.\n\n",
		cfg.Concurrency, cfg.Duration, cfg.Warmup, cfg.Drivers, cfg.Passengers, cfg.Grid, cfg.Grid, 100*cfg.RequestShare, cfg.FinishDelay, 64, commitInterval)
	fmt.Fprintf(&b, "| system | events/s | location p50 ms | location p99 ms | request p50 ms | request p99 ms | errors | invariants |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	var base float64
	for _, r := range rows {
		if r.r == nil {
			continue
		}
		if base == 0 {
			base = r.r.EventsPerS
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.1f | %.1f | %.1f | %.1f | %d | %s |\n", r.name, r.r.EventsPerS, r.r.Location.P50Ms, r.r.Location.P99Ms,
			r.r.Request.P50Ms, r.r.Request.P99Ms, r.r.Errors, r.r.InvariantsText)
	}
	b.WriteString("\n")
	for _, r := range rows {
		if r.r != nil && base > 0 && !strings.HasPrefix(r.name, "single") {
			fmt.Fprintf(&b, "- %s: %.2f of the single node's events/s.\n", r.name, r.r.EventsPerS/base)
		}
		if r.r == nil {
			fmt.Fprintf(&b, "- %s.\n", r.name)
		}
	}
	b.WriteString(`
## What these figures are, and what only a real Kafka cluster can show

- A request's latency in cluster mode is bounded below by hops × (commit interval + a transaction's round trips): every message between functions goes through the input topic and is visible to its consumer only once the sender's transaction committed. RS-1's request crosses several functions, so its latency is several commit intervals; the single node's is a few fsyncs.
- On one 2-core machine, the broker, every node and the load generator compete for the same cores: three nodes cannot be faster than one here. Scaling with nodes, replication (acks from in-sync replicas), the latency of transaction markers and real disk behaviour can only be measured on a Kafka cluster on several machines. ` + "`scripts/bench-cluster-real.sh`" + ` is the script for that: start a node per machine against the Kafka cluster (its header says how), then run it from a load machine; it drives RS-1 through any node with cmd/loadgen over HTTP (state reads for the invariant checks are forwarded to their owners).
- Takeover after a SIGKILL is measured by the multi-process test (` + "`make cluster-crash`" + `); see its report below when present.
`)
	return b.String()
}
