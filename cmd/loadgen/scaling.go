package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/shardfn/shardfn/loadgen"
	"github.com/shardfn/shardfn/loadgen/report"
)

var (
	scalingMode      = flag.Bool("scaling", false, "run the shard-scaling sweep instead: durable batched location events at each --shards count (default 1,2,4,8,16 capped at the cores)")
	scalingProducers = flag.Int("scaling-producers", 4, "--scaling: goroutines sending batches")
	scalingBatch     = flag.Int("scaling-batch", 256, "--scaling: events per SendBatch")
)

// scalingShards is the sweep's shard counts: --shards when given, else the
// powers of two up to 16 that do not exceed the cores, and the core count
// itself when it is not among them.
func scalingShards(given []int) []int {
	if len(given) > 0 && given[0] > 0 {
		return given
	}
	var s []int
	cores := runtime.NumCPU()
	for n := 1; n <= 16 && n <= cores; n *= 2 {
		s = append(s, n)
	}
	if last := s[len(s)-1]; last < cores && last < 16 {
		s = append(s, min(cores, 16))
	}
	return s
}

func scalingScenario(ctx context.Context, o options) int {
	c := loadgen.ScalingConfig{
		Shards: scalingShards(o.shards), Producers: *scalingProducers, Batch: *scalingBatch,
		Duration: o.cfg.Duration, Warmup: o.cfg.Warmup, Drivers: o.cfg.Drivers, Grid: o.cfg.Grid,
		Seed: o.cfg.Seed, Progress: os.Stderr,
	}
	if c.Warmup < 0 {
		c.Warmup = time.Nanosecond
	}
	fmt.Fprintf(os.Stderr, "scaling sweep: shards %v, %d producers, batches of %d\n", c.Shards, c.Producers, c.Batch)
	rep := report.ScalingReport{Time: time.Now(), Command: o.command, Machine: report.Machine(""), LoadBefore: report.LoadAverage()}
	var prof bytes.Buffer
	if o.cfg.Profile {
		if err := pprof.StartCPUProfile(&prof); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: profile:", err)
			return 1
		}
	}
	points, err := loadgen.RunScaling(ctx, c)
	if o.cfg.Profile {
		pprof.StopCPUProfile()
		if s, perr := report.SummariseProfile(prof.Bytes(), 25); perr == nil {
			rep.Profile = &s
		} else {
			fmt.Fprintln(os.Stderr, "loadgen: profile:", perr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	rep.Config, rep.Points, rep.LoadAfter = c, points, report.LoadAverage()
	path, err := report.WriteScaling(o.out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if err := report.Index(o.out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	printLine(map[string]any{"target": "inproc", "kind": "scaling", "points": points, "report": path})
	return 0
}
