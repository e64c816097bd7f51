// Command loadgen drives the RS-1 ride-sharing workload (workload-rides.md)
// against a target — the engine in-process (default), a running
// cmd/engine over HTTP, a bare HTTP baseline, or a registered peer such as
// Restate — checks the workload's invariants, and writes a Markdown report
// with SVG plots into --out. Progress goes to stderr; the last line on
// stdout is one JSON object with the headline figures.
//
// Examples:
//
//	go run ./cmd/loadgen                                  # 10 s closed loop, inproc
//	go run ./cmd/loadgen --shards 1,2                     # scaling sweep
//	go run ./cmd/loadgen --rate 20000 --duration 30s      # open loop
//	go run ./cmd/loadgen --target http://127.0.0.1:8080 --admin http://127.0.0.1:8081
//	go run ./cmd/loadgen --memory-scenario=1000000        # memory per instance
//	go run ./cmd/loadgen --tracing-overhead 5             # tracing off vs on
//	go run ./cmd/loadgen --index                          # rewrite results/README.md
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/loadgen"
	"github.com/shardfn/shardfn/loadgen/report"
	"github.com/shardfn/shardfn/rides"
)

// memoryFlag is --memory-scenario: alone it means 10,000,000 passengers,
// --memory-scenario=N sets N; 0 (the default) is off.
type memoryFlag struct{ n int }

func (m *memoryFlag) String() string { return strconv.Itoa(m.n) }
func (m *memoryFlag) Set(s string) error {
	if s == "true" {
		m.n = 10_000_000
		return nil
	}
	if s == "false" {
		m.n = 0
		return nil
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n < 0 {
		return fmt.Errorf("want a passenger count, got %q", s)
	}
	m.n = n
	return nil
}
func (m *memoryFlag) IsBoolFlag() bool { return true }

func main() {
	os.Exit(run())
}

func run() int {
	var (
		target      = flag.String("target", "inproc", "inproc | baseline | http://host:port (a running cmd/engine) | name[:url] of a registered target, e.g. restate:http://127.0.0.1:8080")
		admin       = flag.String("admin", "", "admin address of an http target (state, metrics); default the target address")
		duration    = flag.Duration("duration", 10*time.Second, "measured window")
		warmup      = flag.Duration("warmup", 2*time.Second, "unrecorded warm-up before the window (0 for none)")
		rate        = flag.Float64("rate", 0, "open loop at this many events/s (0: closed loop)")
		schedule    = flag.String("schedule", "poisson", "open-loop schedule: poisson or uniform")
		concurrency = flag.Int("concurrency", 64, "workers: events in flight (closed loop) or senders (open loop)")
		drivers     = flag.Int("drivers", 10000, "number of drivers")
		passengers  = flag.Int("passengers", 100000, "number of passengers")
		grid        = flag.Int("grid", 100, "grid side G (G x G cells)")
		skew        = flag.Bool("skew", false, "choose drivers and passengers by Zipf 0.99 instead of uniformly")
		requests    = flag.Float64("requests", 0.1, "share of ride requests in the mix (the rest are locations)")
		shardsFlag  = flag.String("shards", "", "inproc shard count, or a list such as 1,2,4 for a scaling sweep (default: the engine's default)")
		out         = flag.String("out", "results", "report folder")
		profile     = flag.Bool("profile", false, "CPU profile over the measured window (in-process targets), summarised in the report")
		finishDelay = flag.Duration("finish-delay", 2*time.Second, "mean delay from a ride's start to its finish (must match the target's)")
		seed        = flag.Uint64("seed", 1, "random seed")
		budget      = flag.Int64("memory-budget", 0, "inproc engine MemoryBudget in bytes (0: engine default)")
		dataDir     = flag.String("data-dir", "", "inproc data directory (default: a fresh temporary one, removed after)")
		conns       = flag.Int("conns", 1024, "maximum HTTP connections (http and baseline targets)")
		noCheck     = flag.Bool("no-check", false, "skip the invariant checks")
		index       = flag.Bool("index", false, "only regenerate <out>/README.md, the index of all reports, and exit")
		memShards   = flag.Int("memory-shards", 0, "shards of the memory scenario's engine (0: default)")
		traceRounds = flag.Int("tracing-overhead", 0, "measure tracing's cost instead: N rounds of RS-1 in process with tracing off and on (OTEL_* settings, default sampler), exporting to an in-process OTLP collector; writes <out>/tracing-overhead.md")
		mem         memoryFlag
	)
	flag.Var(&mem, "memory-scenario", "run the memory scenario instead: --memory-scenario alone = 10,000,000 passengers, --memory-scenario=N for N")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: unexpected arguments %v\n", flag.Args())
		return 2
	}
	command := strings.Join(append([]string{"go run ./cmd/loadgen"}, os.Args[1:]...), " ")

	if *index {
		if err := report.Index(*out); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if mem.n > 0 {
		return memoryScenario(ctx, mem.n, *memShards, *out, command)
	}

	cfg := loadgen.Config{
		Duration: *duration, Warmup: *warmup, Rate: *rate, Uniform: *schedule == "uniform",
		Concurrency: *concurrency, Drivers: *drivers, Passengers: *passengers, Grid: *grid,
		Skew: *skew, RequestShare: *requests, FinishDelay: *finishDelay, Seed: *seed,
		Progress: os.Stderr, Profile: *profile, NoCheck: *noCheck,
	}
	if *warmup == 0 {
		cfg.Warmup = -1
	}
	if *requests == 0 {
		cfg.RequestShare = -1
	}
	if *schedule != "poisson" && *schedule != "uniform" {
		fmt.Fprintf(os.Stderr, "loadgen: --schedule %q: want poisson or uniform\n", *schedule)
		return 2
	}
	var shardList []int
	if *shardsFlag != "" {
		for _, f := range strings.Split(*shardsFlag, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "loadgen: --shards %q: want positive integers separated by commas\n", *shardsFlag)
				return 2
			}
			shardList = append(shardList, n)
		}
	}
	inproc := *target == "inproc" || *target == ""
	if len(shardList) > 1 && !inproc {
		fmt.Fprintln(os.Stderr, "loadgen: a --shards sweep needs --target inproc")
		return 2
	}
	if len(shardList) == 0 {
		shardList = []int{0}
	}
	if *traceRounds > 0 {
		if !inproc || len(shardList) > 1 {
			fmt.Fprintln(os.Stderr, "loadgen: --tracing-overhead needs --target inproc and at most one --shards value")
			return 2
		}
		topts := loadgen.TargetOptions{Inproc: loadgen.InprocOptions{
			Engine: engine.Options{Shards: shardList[0], MemoryBudget: *budget, DataDir: *dataDir},
			Rides:  rides.Config{FinishDelay: *finishDelay, Grid: *grid},
		}}
		return tracingOverhead(ctx, *traceRounds, cfg, topts, *out, command)
	}

	rep := report.Report{Kind: report.KindRun, Time: time.Now(), Command: command}
	if len(shardList) > 1 {
		rep.Kind = report.KindSweep
	}
	var optsText []string
	for _, n := range shardList {
		topts := loadgen.TargetOptions{Admin: *admin, Conns: *conns, Inproc: loadgen.InprocOptions{
			Engine: engine.Options{Shards: n, MemoryBudget: *budget, DataDir: *dataDir},
			Rides:  rides.Config{FinishDelay: *finishDelay, Grid: *grid},
		}}
		t, err := loadgen.NewTarget(*target, topts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		shards := n
		if ip, ok := t.(*loadgen.Inproc); ok {
			o := ip.Engine().Options()
			shards = o.Shards
			o.Logger = nil
			optsText = append(optsText, fmt.Sprintf("%+v", o))
			fmt.Fprintf(os.Stderr, "engine options: %+v\n", o)
		}
		fmt.Fprintf(os.Stderr, "RS-1 against %s, %d shards\n", t.Name(), shards)
		res, err := loadgen.Run(ctx, t, cfg)
		cerr := t.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		if cerr != nil {
			res.Notes = append(res.Notes, "closing the target: "+cerr.Error())
		}
		res.Shards = shards
		rep.Runs = append(rep.Runs, res)
		if res.Profile != nil && rep.Profile == nil {
			if ps, err := report.SummariseProfile(res.Profile, 20); err == nil {
				rep.Profile = &ps
			} else {
				res.Notes = append(res.Notes, err.Error())
			}
		}
		fmt.Fprintf(os.Stderr, "%d shards: %.0f events/s, %.0f invocations/s, location p99 %.2f ms, request p99 %.2f ms, errors %d, invariants %s\n",
			shards, res.EventsPerS, res.InvocationsPerS, res.Location.P99Ms, res.Request.P99Ms, res.Errors, res.InvariantsText)
	}
	rep.Options = strings.Join(optsText, " | ")
	rep.Machine = report.Machine(*dataDir)
	path, err := report.Write(*out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if err := report.Index(*out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
	}
	fmt.Fprintln(os.Stderr, "report:", path)

	last := rep.Runs[len(rep.Runs)-1]
	line := map[string]any{
		"events_per_s":       round(last.EventsPerS),
		"invocations_per_s":  round(last.InvocationsPerS),
		"location_p50_ms":    last.Location.P50Ms,
		"location_p99_ms":    last.Location.P99Ms,
		"location_p999_ms":   last.Location.P999Ms,
		"request_p50_ms":     last.Request.P50Ms,
		"request_p99_ms":     last.Request.P99Ms,
		"request_p999_ms":    last.Request.P999Ms,
		"errors":             last.Errors,
		"invariants":         last.InvariantsText,
		"target":             last.Target,
		"shards":             last.Shards,
		"rides_started":      last.Started,
		"rides_failed":       last.Failed,
		"requests_refused":   last.Refused,
		"rss_bytes":          last.RSSBytes,
		"bytes_per_instance": round(last.BytesPerInstance),
		"report":             path,
	}
	if len(rep.Runs) > 1 {
		var sweep []map[string]any
		for _, r := range rep.Runs {
			sweep = append(sweep, map[string]any{"shards": r.Shards, "events_per_s": round(r.EventsPerS),
				"invocations_per_s": round(r.InvocationsPerS), "invariants": r.InvariantsText})
		}
		line["sweep"] = sweep
	}
	code := 0
	for _, r := range rep.Runs {
		if r.InvariantsText != "ok" && r.InvariantsText != "skipped" {
			code = 1
		}
	}
	b, _ := json.Marshal(line)
	fmt.Println(string(b))
	return code
}

func round(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

func memoryScenario(ctx context.Context, n, shards int, out, command string) int {
	fmt.Fprintf(os.Stderr, "memory scenario: %d passengers\n", n)
	ms, err := loadgen.RunMemory(ctx, loadgen.MemoryConfig{Passengers: n, Shards: shards, Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	rep := report.Report{Kind: report.KindMemory, Time: time.Now(), Command: command, Memory: ms, Machine: report.Machine("")}
	path, err := report.Write(out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if err := report.Index(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
	}
	fmt.Fprintln(os.Stderr, "report:", path)
	line := map[string]any{"target": "inproc", "memory": ms, "report": path}
	for _, m := range ms {
		key := "bytes_per_instance_evicting"
		if m.Label == "no eviction" {
			key = "bytes_per_instance"
		}
		line[key] = round(m.BytesPerInstance)
		line["rss_bytes_"+strings.ReplaceAll(m.Label, " ", "_")] = m.RSSAfter
	}
	b, _ := json.Marshal(line)
	fmt.Println(string(b))
	return 0
}
