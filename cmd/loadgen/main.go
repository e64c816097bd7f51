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
//	go run ./cmd/loadgen --scaling                        # durable batched sweep, 1..cores shards
//	go run ./cmd/loadgen --rate 20000 --duration 30s      # open loop
//	go run ./cmd/loadgen --target http://127.0.0.1:8080 --admin http://127.0.0.1:8081
//	go run ./cmd/loadgen --memory-scenario=1000000        # memory per instance
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

// options are the parsed command line.
type options struct {
	target, admin, out, dataDir string
	conns                       int
	budget                      int64
	index                       bool
	memory, memoryShards        int // the memory scenario's passengers (0: off) and shards
	shards                      []int
	cfg                         loadgen.Config
	rides                       rides.Config
	command                     string // the command line, for the report
}

func run() int {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	if o.index {
		if err := report.Index(o.out); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *scalingMode {
		return scalingScenario(ctx, o)
	}
	if o.memory > 0 {
		return memoryScenario(ctx, o.memory, o.memoryShards, o.out, o.command)
	}
	rep, err := runTargets(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	path, err := writeReport(o.out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	printLine(summaryLine(rep.Runs, path))
	for _, r := range rep.Runs {
		if r.InvariantsText != "ok" && r.InvariantsText != "skipped" {
			return 1
		}
	}
	return 0
}

// parseFlags reads the command line; its errors are usage errors.
func parseFlags() (options, error) {
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
		mem         memoryFlag
	)
	flag.Var(&mem, "memory-scenario", "run the memory scenario instead: --memory-scenario alone = 10,000,000 passengers, --memory-scenario=N for N")
	flag.Parse()
	o := options{
		target: *target, admin: *admin, out: *out, dataDir: *dataDir, conns: *conns, budget: *budget,
		index: *index, memory: mem.n, memoryShards: *memShards,
		rides:   rides.Config{FinishDelay: *finishDelay, Grid: *grid},
		command: strings.Join(append([]string{"go run ./cmd/loadgen"}, os.Args[1:]...), " "),
		cfg: loadgen.Config{
			Duration: *duration, Warmup: *warmup, Rate: *rate, Uniform: *schedule == "uniform",
			Concurrency: *concurrency, Drivers: *drivers, Passengers: *passengers, Grid: *grid,
			Skew: *skew, RequestShare: *requests, FinishDelay: *finishDelay, Seed: *seed,
			Progress: os.Stderr, Profile: *profile, NoCheck: *noCheck,
		},
	}
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", flag.Args())
	}
	if o.index || o.memory > 0 {
		return o, nil
	}
	if *warmup == 0 {
		o.cfg.Warmup = -1
	}
	if *requests == 0 {
		o.cfg.RequestShare = -1
	}
	if *schedule != "poisson" && *schedule != "uniform" {
		return o, fmt.Errorf("--schedule %q: want poisson or uniform", *schedule)
	}
	var err error
	if o.shards, err = parseShards(*shardsFlag); err != nil {
		return o, err
	}
	if len(o.shards) > 1 && *target != "inproc" && *target != "" {
		return o, fmt.Errorf("a --shards sweep needs --target inproc")
	}
	if len(o.shards) == 0 {
		o.shards = []int{0}
	}
	return o, nil
}

// parseShards reads --shards: a list of positive counts separated by
// commas.
func parseShards(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var list []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--shards %q: want positive integers separated by commas", s)
		}
		list = append(list, n)
	}
	return list, nil
}

// runTargets runs RS-1 once per shard count, each against a target of its
// own, and gathers the runs into a report.
func runTargets(ctx context.Context, o options) (report.Report, error) {
	rep := report.Report{Kind: report.KindRun, Time: time.Now(), Command: o.command}
	if len(o.shards) > 1 {
		rep.Kind = report.KindSweep
	}
	var optsText []string
	for _, n := range o.shards {
		res, engineOpts, err := runTarget(ctx, o, n)
		if err != nil {
			return rep, err
		}
		if engineOpts != "" {
			optsText = append(optsText, engineOpts)
		}
		rep.Runs = append(rep.Runs, res)
		if res.Profile != nil && rep.Profile == nil {
			if ps, err := report.SummariseProfile(res.Profile, 20); err == nil {
				rep.Profile = &ps
			} else {
				res.Notes = append(res.Notes, err.Error())
			}
		}
		fmt.Fprintf(os.Stderr, "%d shards: %.0f events/s, %.0f invocations/s, location p99 %.2f ms, request p99 %.2f ms, errors %d, invariants %s\n",
			res.Shards, res.EventsPerS, res.InvocationsPerS, res.Location.P99Ms, res.Request.P99Ms, res.Errors, res.InvariantsText)
	}
	rep.Options = strings.Join(optsText, " | ")
	rep.Machine = report.Machine(o.dataDir)
	return rep, nil
}

// runTarget makes the target for n shards (0: the engine's default), runs
// RS-1 against it and closes it. engineOpts is the in-process engine's
// effective options, printed ("" for other targets).
func runTarget(ctx context.Context, o options, n int) (res *loadgen.Result, engineOpts string, err error) {
	t, err := loadgen.NewTarget(o.target, loadgen.TargetOptions{Admin: o.admin, Conns: o.conns, Inproc: loadgen.InprocOptions{
		Engine: engine.Options{Shards: n, MemoryBudget: o.budget, DataDir: o.dataDir},
		Rides:  o.rides,
	}})
	if err != nil {
		return nil, "", err
	}
	shards := n
	if ip, ok := t.(*loadgen.Inproc); ok {
		eo := ip.Engine().Options()
		shards = eo.Shards
		eo.Logger = nil
		engineOpts = fmt.Sprintf("%+v", eo)
		fmt.Fprintf(os.Stderr, "engine options: %s\n", engineOpts)
	}
	fmt.Fprintf(os.Stderr, "RS-1 against %s, %d shards\n", t.Name(), shards)
	res, err = loadgen.Run(ctx, t, o.cfg)
	cerr := t.Close()
	if err != nil {
		return nil, "", err
	}
	if cerr != nil {
		res.Notes = append(res.Notes, "closing the target: "+cerr.Error())
	}
	res.Shards = shards
	return res, engineOpts, nil
}

// writeReport writes rep into out, regenerates out's index and says where
// the report is.
func writeReport(out string, rep report.Report) (string, error) {
	path, err := report.Write(out, rep)
	if err != nil {
		return "", err
	}
	if err := report.Index(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
	}
	fmt.Fprintln(os.Stderr, "report:", path)
	return path, nil
}

// summaryLine is the last run's headline figures (and the sweep's, when
// there are several runs), for the JSON line on stdout.
func summaryLine(runs []*loadgen.Result, path string) map[string]any {
	last := runs[len(runs)-1]
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
	if len(runs) > 1 {
		var sweep []map[string]any
		for _, r := range runs {
			sweep = append(sweep, map[string]any{"shards": r.Shards, "events_per_s": round(r.EventsPerS),
				"invocations_per_s": round(r.InvocationsPerS), "invariants": r.InvariantsText})
		}
		line["sweep"] = sweep
	}
	return line
}

// printLine prints line as one JSON object on stdout.
func printLine(line map[string]any) {
	b, _ := json.Marshal(line)
	fmt.Println(string(b))
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
	path, err := writeReport(out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	line := map[string]any{"target": "inproc", "memory": ms, "report": path}
	for _, m := range ms {
		key := "bytes_per_instance_evicting"
		if m.Label == "no eviction" {
			key = "bytes_per_instance"
		}
		line[key] = round(m.BytesPerInstance)
		line["rss_bytes_"+strings.ReplaceAll(m.Label, " ", "_")] = m.RSSAfter
	}
	printLine(line)
	return 0
}
