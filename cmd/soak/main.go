// Command soak runs the soak test of the shardfn server (make soak): a real
// cmd/engine child process on loopback under ten times its sustainable
// rate, with every hostile request shape of issue 10, for a few minutes;
// then SIGTERM, a restart and a check of every acknowledged write. It
// writes a Markdown report (default results/soak.md) and exits 1 when a
// pass criterion failed, 2 when the run could not be carried out. See
// package internal/soak.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shardfn/shardfn/internal/soak"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var c soak.Config
	var report, engineLog, note string
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Engine, "engine", "bin/engine", "the cmd/engine binary to run")
	fs.StringVar(&c.DataDir, "data-dir", "", "the engine's data directory (default: a fresh temporary one)")
	fs.DurationVar(&c.Duration, "duration", envDuration("SOAK_DURATION", 3*time.Minute), "length of the load (env SOAK_DURATION)")
	fs.DurationVar(&c.Calibrate, "calibrate", 10*time.Second, "length of the closed-loop phase that measures the sustainable rate")
	fs.DurationVar(&c.WarmUp, "warm-up", 75*time.Second, "longest phase filling the state cache (to 80 % of the budget) before the calibration; negative: none")
	fs.Float64Var(&c.WarmUpFill, "warm-up-fill", 0.8, "share of the memory budget the warm-up fills the state cache to")
	fs.Float64Var(&c.Factor, "factor", 10, "offered rate over the sustainable rate")
	fs.Int64Var(&c.MemoryBudget, "memory-budget", 32<<20, "the engine's --memory-budget in bytes (small enough for the warm-up to fill it on a small machine)")
	fs.IntVar(&c.Shards, "shards", 2, "the engine's --shards")
	fs.IntVar(&c.MaxConns, "max-conns", 1024, "the engine's --max-conns")
	fs.Int64Var(&c.MaxBody, "max-body", 4<<20, "the engine's --max-body in bytes")
	fs.IntVar(&c.MailboxCapacity, "mailbox-capacity", 256, "the engine's --mailbox-capacity (with --max-queued-bytes it bounds how long an accepted message waits under overload)")
	fs.Int64Var(&c.MaxQueuedBytes, "max-queued-bytes", 512<<10, "the engine's --max-queued-bytes in bytes")
	fs.IntVar(&c.BatchSize, "batch", 100, "location messages per /batch (at most --mailbox-capacity/2)")
	fs.IntVar(&c.Workers, "workers", 512, "connections of the location senders")
	fs.DurationVar(&c.ProbeP99Bound, "probe-p99", 5*time.Second, "pass bound of the probe's p99 latency")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", 10*time.Second, "a probe write not answered within this is a failure")
	fs.IntVar(&c.ProbeFailures, "probe-failures", 0, "probe failures allowed")
	var skip string
	fs.StringVar(&skip, "skip", "", "comma-separated shapes not to run ("+strings.Join(soak.Shapes, ", ")+"); the report says which")
	fs.StringVar(&report, "report", "results/soak.md", "the Markdown report to write (empty: none)")
	fs.StringVar(&engineLog, "engine-log", "", "file for the engine's log (default: none)")
	fs.StringVar(&note, "note", "The machine is shared with other engineers' builds and tests (2 cores): the client, the engine and their work compete for the CPU, so rates and latencies are noisy; the pass criteria are bounds, not performance claims.", "a note for the report")
	err := fs.Parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "soak: unexpected arguments %q (flags only; see -h)\n", fs.Args())
		return 2
	}
	if c.Skip, err = parseSkip(skip); err != nil {
		fmt.Fprintln(stderr, "soak: --skip:", err)
		return 2
	}
	if _, err := os.Stat(c.Engine); err != nil {
		fmt.Fprintf(stderr, "soak: the engine binary %s: %v (make soak builds it: go build -o bin/ ./cmd/engine)\n", c.Engine, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var elog io.Writer = io.Discard
	if engineLog != "" {
		f, err := os.Create(engineLog)
		if err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
		defer f.Close()
		elog = f
	}
	meta := soak.ReadMeta("go run ./cmd/soak " + strings.Join(args, " "))
	if cmd := os.Getenv("SOAK_COMMAND"); cmd != "" {
		meta.Command = cmd
	}
	meta.Note = note
	s, err := soak.Run(ctx, c, stdout, elog)
	if err != nil {
		fmt.Fprintln(stderr, "soak: the run could not be carried out:", err)
		return 2
	}
	cs := soak.Verdict(s)
	if report != "" {
		if err := writeReport(report, meta, s, cs); err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
		fmt.Fprintln(stdout, "soak: report written to", report)
	}
	return printVerdict(stdout, cs)
}

// parseSkip parses --skip: comma-separated shape names.
func parseSkip(skip string) (map[string]bool, error) {
	if skip == "" {
		return nil, nil
	}
	m := map[string]bool{}
	for _, n := range strings.Split(skip, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(soak.Shapes, n) {
			return nil, fmt.Errorf("unknown shape %q (%s)", n, strings.Join(soak.Shapes, ", "))
		}
		m[n] = true
	}
	return m, nil
}

// writeReport writes the Markdown report to path.
func writeReport(path string, meta soak.Meta, s *soak.Summary, cs []soak.Criterion) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = soak.WriteReport(f, meta, s, cs)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// printVerdict prints each criterion and returns the exit status: 1 when
// one failed.
func printVerdict(stdout io.Writer, cs []soak.Criterion) int {
	failed := 0
	for _, k := range cs {
		r := "PASS"
		if !k.Pass {
			r = "FAIL"
			failed++
		}
		fmt.Fprintf(stdout, "%s  %s\n      %s\n", r, k.Name, k.Detail)
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "soak: FAIL (%d of %d criteria)\n", failed, len(cs))
		return 1
	}
	fmt.Fprintln(stdout, "soak: PASS")
	return 0
}

// envDuration reads a duration from the environment, or def.
func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		fmt.Fprintf(os.Stderr, "soak: %s=%q is not a duration (e.g. 3m); using %s\n", name, v, def)
	}
	return def
}
