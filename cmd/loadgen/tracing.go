package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/shardfn/shardfn/loadgen"
	"github.com/shardfn/shardfn/loadgen/report"
	"github.com/shardfn/shardfn/tracing"
)

// tracingRun is one RS-1 run of the tracing overhead measurement.
type tracingRun struct {
	on             bool
	eventsPerS     float64
	invocationsS   float64
	locP99, reqP99 float64
	cpuPerInv      float64 // µs of process CPU per invocation in the window
	share          float64 // tracing code's share of the window's CPU profile (-1: not profiled)
	spans          int64
	invariants     string
}

// tracingOverhead is --tracing-overhead N: RS-1 in process, N times with
// tracing off and N times on, alternating (off/on, then on/off, ...) so
// that drift on a shared machine falls on both; each run is a fresh
// engine. Tracing on is tracing.FromEnv with the environment's OTEL_*
// settings (the default sampler unless OTEL_TRACES_SAMPLER says
// otherwise), exporting over OTLP/HTTP to an in-process collector
// (tracing.Collector), which decodes every request in this same process.
// It writes <out>/tracing-overhead.md.
func tracingOverhead(ctx context.Context, n int, cfg loadgen.Config, topts loadgen.TargetOptions, out, command string) int {
	col, err := tracing.NewCollector()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	defer col.Close()
	exportTo(col)
	runs, setup, err := tracingRounds(ctx, n, col, cfg, topts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	sum := summariseTracing(runs)
	text := tracingReport(runs, sum, setup, report.Machine(topts.Inproc.Engine.DataDir), command)
	if err := os.MkdirAll(out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	path := filepath.Join(out, "tracing-overhead.md")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if err := report.Index(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
	}
	fmt.Fprintf(os.Stderr, "tracing off %.0f events/s, on %.0f events/s (medians of %d): cost %.1f %%, median of the rounds' costs %.1f %%\nreport: %s\n",
		sum.offEv, sum.onEv, n, sum.overhead(), median(sum.paired), path)
	fmt.Printf("{\"events_per_s_off\":%.1f,\"events_per_s_on\":%.1f,\"overhead_percent\":%.2f,\"paired_overhead_percent\":%.2f,\"report\":%q}\n",
		sum.offEv, sum.onEv, sum.overhead(), median(sum.paired), path)
	for _, r := range runs {
		if r.invariants != "ok" && r.invariants != "skipped" {
			return 1
		}
	}
	return 0
}

// exportTo points the OTLP exporter, which reads its endpoint from the
// process environment, at col over OTLP/HTTP.
func exportTo(col *tracing.Collector) {
	os.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.Endpoint())
	os.Unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	os.Unsetenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	os.Unsetenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	os.Unsetenv("OTEL_TRACES_EXPORTER")
	os.Unsetenv("OTEL_SDK_DISABLED")
}

// tracingRounds runs n rounds, each one run with tracing off and one on
// (off/on, then on/off, ...). setup describes tracing's set-up.
func tracingRounds(ctx context.Context, n int, col *tracing.Collector, cfg loadgen.Config, topts loadgen.TargetOptions) (runs []tracingRun, setup string, err error) {
	for i := 0; i < n; i++ {
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			r, desc, err := tracingOnce(ctx, on, col, cfg, topts)
			if err != nil {
				return nil, "", err
			}
			if desc != "" {
				setup = desc
			}
			runs = append(runs, r)
			fmt.Fprintf(os.Stderr, "round %d, tracing %s: %.0f events/s, %.0f invocations/s, %.2f CPU µs/invocation, %d spans exported\n",
				i+1, onOff(on), r.eventsPerS, r.invocationsS, r.cpuPerInv, r.spans)
		}
	}
	return runs, setup, nil
}

// tracingSummary is the medians of the runs with tracing off and on.
type tracingSummary struct {
	offEv, onEv, offInv, onInv, offCPU, onCPU float64
	// paired is each round's cost: its on run's events/s against its off
	// run's, adjacent in time (less exposed to load that comes and goes on
	// a shared machine).
	paired []float64
	// shares is tracing's CPU profile share of each profiled run with
	// tracing on, in percent.
	shares []float64
}

// overhead is tracing's cost in events/s, in percent of the off median.
func (s tracingSummary) overhead() float64 { return 100 * (s.offEv - s.onEv) / s.offEv }

func summariseTracing(runs []tracingRun) tracingSummary {
	med := func(on bool, f func(tracingRun) float64) float64 {
		var v []float64
		for _, r := range runs {
			if r.on == on {
				v = append(v, f(r))
			}
		}
		return median(v)
	}
	ev := func(r tracingRun) float64 { return r.eventsPerS }
	inv := func(r tracingRun) float64 { return r.invocationsS }
	cpu := func(r tracingRun) float64 { return r.cpuPerInv }
	s := tracingSummary{
		offEv: med(false, ev), onEv: med(true, ev),
		offInv: med(false, inv), onInv: med(true, inv),
		offCPU: med(false, cpu), onCPU: med(true, cpu),
	}
	for i := 0; i+1 < len(runs); i += 2 {
		off, on := runs[i], runs[i+1]
		if off.on {
			off, on = on, off
		}
		s.paired = append(s.paired, 100*(off.eventsPerS-on.eventsPerS)/off.eventsPerS)
	}
	for _, r := range runs {
		if r.on && r.share >= 0 {
			s.shares = append(s.shares, 100*r.share)
		}
	}
	return s
}

// tracingReport is <out>/tracing-overhead.md.
func tracingReport(runs []tracingRun, s tracingSummary, setup string, m report.MachineInfo, command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Tracing overhead: RS-1 in process, tracing off vs on\n\n")
	fmt.Fprintf(&b, "Measured %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s, %s; %s; %s; commit %s.\n\n",
		m.CPU, m.Cores, report.Bytes(m.MemBytes), m.Disk, m.Kernel, m.GoVersion, m.Commit)
	fmt.Fprintf(&b, "Command: `%s`\n\n", command)
	fmt.Fprintf(&b, "Tracing on: %s. Spans go over OTLP/HTTP (protobuf) to an in-process collector "+
		"(`tracing.Collector`, which decodes every export request in the same process, so its CPU counts against the engine), "+
		"through the SDK's batch span processor with its defaults. Each run is a fresh engine with a durable data directory; "+
		"runs alternate off/on, then on/off, so that drift on the machine falls on both.\n\n", setup)
	fmt.Fprintf(&b, "| | events/s (median) | invocations/s (median) | process CPU µs per invocation (median) |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| tracing off | %.0f | %.0f | %.2f |\n| tracing on | %.0f | %.0f | %.2f |\n", s.offEv, s.offInv, s.offCPU, s.onEv, s.onInv, s.onCPU)
	fmt.Fprintf(&b, "| **cost of tracing** | **%.1f %%** | %.1f %% | %.1f %% |\n\n", s.overhead(), 100*(s.offInv-s.onInv)/s.offInv, 100*(s.onCPU-s.offCPU)/s.offCPU)
	fmt.Fprintf(&b, "Median of the %d rounds' own costs (each round's events/s with tracing on against its run with tracing off, adjacent in time): **%.1f %%** (rounds: %s).\n\n",
		len(s.paired), median(s.paired), percents(s.paired))
	if len(s.shares) > 0 {
		fmt.Fprintf(&b, "CPU profiles of the measured windows (`--profile`): samples with a tracing frame on the stack (the OpenTelemetry SDK and exporter, the in-process collector, shardfn's tracing code; garbage collection of their allocations is not counted) are a median **%.2f %%** of the runs with tracing on (%s). This share does not depend on what else the machine runs.\n\n",
			median(s.shares), percents(s.shares))
	}
	fmt.Fprintf(&b, "Every run:\n\n| # | tracing | events/s | invocations/s | CPU µs/invocation | tracing's CPU share | location p99 ms | request p99 ms | spans exported | invariants |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for i, r := range runs {
		share := ""
		if r.share >= 0 {
			share = fmt.Sprintf("%.2f %%", 100*r.share)
		}
		fmt.Fprintf(&b, "| %d | %s | %.0f | %.0f | %.2f | %s | %.2f | %.2f | %d | %s |\n", i+1, onOff(r.on), r.eventsPerS, r.invocationsS, r.cpuPerInv, share, r.locP99, r.reqP99, r.spans, r.invariants)
	}
	return b.String()
}

func tracingOnce(ctx context.Context, on bool, col *tracing.Collector, cfg loadgen.Config, topts loadgen.TargetOptions) (tracingRun, string, error) {
	var tr *tracing.Tracing
	desc := ""
	if on {
		var err error
		tr, err = tracing.FromEnv(ctx, tracing.Options{})
		if err != nil {
			return tracingRun{}, "", err
		}
		desc = tr.String()
		topts.Inproc.Engine.TracerProvider = tr.Provider()
	}
	before := col.Spans()
	t, err := loadgen.NewTarget("inproc", topts)
	if err != nil {
		return tracingRun{}, "", err
	}
	res, err := loadgen.Run(ctx, t, cfg)
	cerr := t.Close()
	if err == nil {
		err = cerr
	}
	if tr != nil {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if serr := tr.Shutdown(sctx); serr != nil && err == nil {
			err = serr
		}
		cancel()
	}
	if err != nil {
		return tracingRun{}, "", err
	}
	return tracingRun{on: on, eventsPerS: res.EventsPerS, invocationsS: res.InvocationsPerS,
		locP99: res.Location.P99Ms, reqP99: res.Request.P99Ms, spans: col.Spans() - before, invariants: res.InvariantsText,
		cpuPerInv: cpuPerInvocation(res), share: tracingShare(res.Profile)}, desc, nil
}

// cpuPerInvocation is the process's CPU time per invocation over the
// window, in µs (0 when unknown).
func cpuPerInvocation(res *loadgen.Result) float64 {
	if res.Invocations == 0 {
		return 0
	}
	return res.CPUSeconds * 1e6 / float64(res.Invocations)
}

func percents(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.1f %%", x))
	}
	return strings.Join(s, ", ")
}

// tracingShare is the share of a CPU profile's samples with a tracing
// frame on their stack (-1 without a profile): the OpenTelemetry SDK and
// exporter, the in-process collector, and shardfn's own tracing code.
func tracingShare(data []byte) float64 {
	if len(data) == 0 {
		return -1
	}
	p, err := profile.Parse(bytes.NewReader(data))
	if err != nil || len(p.SampleType) == 0 {
		return -1
	}
	idx := len(p.SampleType) - 1
	var total, traced int64
	for _, smp := range p.Sample {
		v := smp.Value[idx]
		total += v
	frames:
		for _, loc := range smp.Location {
			for _, ln := range loc.Line {
				if ln.Function != nil && isTracingFrame(ln.Function.Name) {
					traced += v
					break frames
				}
			}
		}
	}
	if total == 0 {
		return -1
	}
	return float64(traced) / float64(total)
}

func isTracingFrame(name string) bool {
	for _, p := range []string{
		"go.opentelemetry.io/",
		"github.com/shardfn/shardfn/tracing.",
		"github.com/shardfn/shardfn/engine.(*tracing).",
		"github.com/shardfn/shardfn/engine.(*shardTracer).",
		"github.com/shardfn/shardfn/engine.endIngress",
		"github.com/shardfn/shardfn/engine.spanContext",
		"github.com/shardfn/shardfn/engine.traceContext",
		"github.com/shardfn/shardfn/shard.(*Shard).trace",
		"github.com/shardfn/shardfn/shard.(*AsyncCall).trace",
		"github.com/shardfn/shardfn/remote.(*Function).traceAttempt",
		"github.com/shardfn/shardfn/remote.traceAttemptEnd",
		"github.com/shardfn/shardfn/remote.injectTrace",
	} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
