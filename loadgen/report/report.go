package report

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shardfn/shardfn/loadgen"
)

// Kinds of report.
const (
	KindRun    = "run"
	KindSweep  = "sweep"
	KindMemory = "memory"
)

// Report is everything one report file shows.
type Report struct {
	// Kind is KindRun (one run), KindSweep (runs at several shard counts)
	// or KindMemory (the memory scenario).
	Kind    string
	Time    time.Time
	Command string
	Machine MachineInfo
	// Options describes the effective engine options (inproc) or the
	// target.
	Options string
	Runs    []*loadgen.Result
	Memory  []loadgen.MemoryResult
	// Profile is the CPU profile summary of the (first profiled) run.
	Profile *ProfileSummary
}

// Summary is the JSON in a report's first line, read back by Index.
type Summary struct {
	Kind            string  `json:"kind"`
	Time            string  `json:"time"`
	Target          string  `json:"target"`
	Shards          string  `json:"shards"`
	EventsPerS      float64 `json:"events_per_s"`
	InvocationsPerS float64 `json:"invocations_per_s"`
	LocationP99Ms   float64 `json:"location_p99_ms"`
	RequestP99Ms    float64 `json:"request_p99_ms"`
	Invariants      string  `json:"invariants"`
	BytesPerInst    float64 `json:"bytes_per_instance,omitempty"`
	Command         string  `json:"command"`
}

const summaryPrefix = "<!-- rs1-summary "

func (r *Report) summary() Summary {
	s := Summary{Kind: r.Kind, Time: r.Time.UTC().Format(time.RFC3339), Command: r.Command}
	var shards []string
	for _, x := range r.Runs {
		shards = append(shards, fmt.Sprint(x.Shards))
	}
	s.Shards = strings.Join(shards, ",")
	best := (*loadgen.Result)(nil)
	inv := "ok"
	for _, x := range r.Runs {
		if best == nil || x.EventsPerS > best.EventsPerS {
			best = x
		}
		if x.InvariantsText != "ok" && inv == "ok" {
			inv = x.InvariantsText
		}
	}
	if best != nil {
		s.Target, s.EventsPerS, s.InvocationsPerS = best.Target, best.EventsPerS, best.InvocationsPerS
		s.LocationP99Ms, s.RequestP99Ms = best.Location.P99Ms, best.Request.P99Ms
		s.Invariants = inv
	}
	if len(r.Memory) > 0 {
		s.Target = "inproc"
		s.Invariants = "n/a"
		s.BytesPerInst = r.Memory[len(r.Memory)-1].BytesPerInstance
	}
	return s
}

// baseName is the report's file name without extension.
func (r *Report) baseName() string {
	target := "inproc"
	if len(r.Runs) > 0 {
		target = r.Runs[0].Target
	}
	target = strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' {
			return c
		}
		return '-'
	}, strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://"))
	return r.Time.UTC().Format("2006-01-02-150405") + "-" + target + "-" + r.Kind
}

// Write writes the report (Markdown plus SVG plots) into dir and returns
// the Markdown file's path.
func Write(dir string, r Report) (string, error) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	base := r.baseName()
	var b strings.Builder
	sj, _ := json.Marshal(r.summary())
	fmt.Fprintf(&b, "%s%s -->\n", summaryPrefix, sj)
	fmt.Fprintf(&b, "# RS-1 %s: %s\n\n", r.Kind, r.summary().Target)
	fmt.Fprintf(&b, "Measured %s.\n\n", r.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(&b, "## Machine\n\n| | |\n|---|---|\n| CPU | %s |\n| cores | %d |\n| memory | %s |\n| disk (data dir) | %s |\n| kernel | %s |\n| Go | %s |\n| commit | %s |\n\n",
		r.Machine.CPU, r.Machine.Cores, Bytes(r.Machine.MemBytes), r.Machine.Disk, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.Commit)
	fmt.Fprintf(&b, "## Command\n\n```\n%s\n```\n\n", r.Command)
	if r.Options != "" {
		fmt.Fprintf(&b, "Engine options: `%s`\n\n", r.Options)
	}
	if len(r.Runs) > 0 {
		c := r.Runs[0].Config
		loop := fmt.Sprintf("closed loop, concurrency %d", c.Concurrency)
		if c.Rate > 0 {
			sched := "Poisson"
			if c.Uniform {
				sched = "uniform"
			}
			loop = fmt.Sprintf("open loop at %.0f events/s (%s schedule, %d workers; latency from the intended send time)", c.Rate, sched, c.Concurrency)
		}
		keys := "uniform keys"
		if c.Skew {
			keys = "Zipf 0.99 keys"
		}
		fmt.Fprintf(&b, "Workload: %s; %d drivers, %d passengers, %dx%d cells, %.0f %% requests, %s; warm-up %v, window %v, finish delay %v ±%.0f %%, seed %d.\n\n",
			loop, c.Drivers, c.Passengers, c.Grid, c.Grid, c.RequestShare*100, keys, c.Warmup, c.Duration, c.FinishDelay, c.FinishJitter*100, c.Seed)
		writeRuns(&b, r.Runs)
		var series []Series
		for _, x := range r.Runs {
			for _, k := range []struct {
				name string
				l    loadgen.Latency
			}{{"location", x.Location}, {"request", x.Request}} {
				if k.l.Count > 0 {
					name := k.name
					if len(r.Runs) > 1 {
						name = fmt.Sprintf("%s, %d shards", k.name, x.Shards)
					}
					series = append(series, Series{Name: name, Points: k.l.Curve})
				}
			}
		}
		if len(series) > 0 {
			f := base + "-latency.svg"
			if err := os.WriteFile(filepath.Join(dir, f), []byte(LatencySVG("RS-1 latency by percentile", series)), 0o644); err != nil {
				return "", fmt.Errorf("report: %w", err)
			}
			fmt.Fprintf(&b, "![latency percentiles](%s)\n\n", f)
		}
		if r.Kind == KindSweep {
			var pts [][2]float64
			for _, x := range r.Runs {
				pts = append(pts, [2]float64{float64(x.Shards), x.EventsPerS})
			}
			slices.SortFunc(pts, func(a, b [2]float64) int { return cmp.Compare(a[0], b[0]) })
			f := base + "-scaling.svg"
			if err := os.WriteFile(filepath.Join(dir, f), []byte(ScalingSVG("RS-1 scaling", pts)), 0o644); err != nil {
				return "", fmt.Errorf("report: %w", err)
			}
			fmt.Fprintf(&b, "## Scaling\n\n| shards | events/s | speed-up | efficiency |\n|---:|---:|---:|---:|\n")
			for _, p := range pts {
				su := p[1] / pts[0][1] * pts[0][0]
				fmt.Fprintf(&b, "| %g | %.0f | %.2f | %.2f |\n", p[0], p[1], su, su/p[0])
			}
			fmt.Fprintf(&b, "\n![scaling](%s)\n\n", f)
		}
		writeInvariants(&b, r.Runs)
	}
	if len(r.Memory) > 0 {
		writeMemory(&b, r.Memory)
	}
	if r.Profile != nil {
		writeProfile(&b, r.Profile)
	}
	return writeMarkdown(dir, base, &b)
}

// writeMarkdown writes b as dir/base.md and returns its path.
func writeMarkdown(dir, base string, b *strings.Builder) (string, error) {
	path := filepath.Join(dir, base+".md")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	return path, nil
}

func writeRuns(b *strings.Builder, runs []*loadgen.Result) {
	b.WriteString("## Throughput and latency\n\n| shards | kind | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range runs {
		for _, k := range []struct {
			name string
			l    loadgen.Latency
		}{{"location", x.Location}, {"request", x.Request}} {
			if k.l.Count == 0 && k.l.Errors == 0 {
				continue
			}
			fmt.Fprintf(b, "| %d | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f | %d |\n",
				x.Shards, k.name, k.l.PerS, k.l.P50Ms, k.l.P90Ms, k.l.P99Ms, k.l.P999Ms, k.l.MaxMs, k.l.Errors)
		}
	}
	b.WriteString("\n| shards | events/s | invocations/s | invocations/event | rides started / failed / refused | RSS | instances | RSS per instance | drained |\n|---:|---:|---:|---:|---|---:|---:|---:|---|\n")
	for _, x := range runs {
		per := 0.0
		if x.EventsPerS > 0 {
			per = x.InvocationsPerS / x.EventsPerS
		}
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %.2f | %d / %d / %d | %s | %d | %.0f B | %v |\n",
			x.Shards, x.EventsPerS, x.InvocationsPerS, per, x.Started, x.Failed, x.Refused, Bytes(x.RSSBytes), x.Instances, x.BytesPerInstance, x.Drained)
	}
	b.WriteString("\nRSS is the engine's resident set after the run (inproc: the whole load generator process); RSS per instance divides it by the instances holding state, so it is an upper bound.\n\n")
	for _, x := range runs {
		for _, s := range x.ErrorSamples {
			fmt.Fprintf(b, "- error sample (%d shards): `%s`\n", x.Shards, s)
		}
		for _, n := range x.Notes {
			fmt.Fprintf(b, "- note (%d shards): %s\n", x.Shards, n)
		}
	}
	b.WriteString("\n")
}

func writeInvariants(b *strings.Builder, runs []*loadgen.Result) {
	b.WriteString("## Invariants\n\n")
	for _, x := range runs {
		fmt.Fprintf(b, "%d shards: **%s**\n\n", x.Shards, x.InvariantsText)
		if len(x.Invariants) == 0 {
			continue
		}
		b.WriteString("| invariant | result | checked | failed | first failures |\n|---|---|---:|---:|---|\n")
		for _, v := range x.Invariants {
			res := "ok"
			if !v.OK {
				res = "FAILED"
			}
			fmt.Fprintf(b, "| %s | %s | %d | %d | %s |\n", v.Name, res, v.Checked, v.Failed, esc(strings.Join(v.Examples, "; ")))
		}
		b.WriteString("\n")
	}
}

func writeMemory(b *strings.Builder, ms []loadgen.MemoryResult) {
	b.WriteString("## Memory scenario\n\nEach passenger receives one `rides/touch` (one small state value) and goes idle; RSS is measured after a forced GC.\n\n")
	b.WriteString("| run | passengers | budget | touches/s | RSS before | RSS after | Go heap in use | bytes per instance | data dir |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range ms {
		fmt.Fprintf(b, "| %s | %d | %s | %.0f | %s | %s | %s | %.1f | %s |\n", m.Label, m.Passengers, Bytes(m.Budget), m.PerS,
			Bytes(m.RSSBefore), Bytes(m.RSSAfter), Bytes(m.HeapInuse), m.BytesPerInstance, Bytes(m.DiskBytes))
	}
	b.WriteString("\n")
	for _, m := range ms {
		fmt.Fprintf(b, "- %s engine options: `%s`\n", m.Label, m.Options)
	}
	b.WriteString("\n")
}

func writeProfile(b *strings.Builder, p *ProfileSummary) {
	fmt.Fprintf(b, "## CPU profile of the window (%.1f s of CPU sampled)\n\n| flat %% | function | | cum %% | function |\n|---:|---|---|---:|---|\n", p.Total)
	for i := 0; i < max(len(p.Flat), len(p.Cum)); i++ {
		var f, c FuncShare
		if i < len(p.Flat) {
			f = p.Flat[i]
		}
		if i < len(p.Cum) {
			c = p.Cum[i]
		}
		fmt.Fprintf(b, "| %.1f | `%s` | | %.1f | `%s` |\n", f.Share*100, f.Name, c.Share*100, c.Name)
	}
	b.WriteString("\n")
}

// Index rewrites dir/README.md as the list of every report in dir, newest
// first.
func Index(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	type row struct {
		file string
		s    Summary
	}
	var rows []row
	var others []string // hand-written measurement files (first line = title)
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".md") || n == "README.md" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		var s Summary
		if !strings.HasPrefix(line, summaryPrefix) {
			title := strings.TrimSpace(strings.TrimLeft(line, "# "))
			others = append(others, fmt.Sprintf("- [%s](%s): %s", n, n, title))
			continue
		}
		body := strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(line, summaryPrefix)), "-->")
		if json.Unmarshal([]byte(body), &s) != nil {
			continue
		}
		rows = append(rows, row{n, s})
	}
	slices.SortFunc(rows, func(a, b row) int { // newest first
		return cmp.Or(cmp.Compare(b.s.Time, a.s.Time), cmp.Compare(b.file, a.file))
	})
	var b strings.Builder
	b.WriteString("# Benchmark results\n\nReports written by `cmd/loadgen` (the RS-1 workload, see workload-rides.md), newest first. Regenerate with `go run ./cmd/loadgen --index`.\n\n")
	b.WriteString("| when (UTC) | kind | target | shards | events/s | invocations/s | location p99 ms | request p99 ms | bytes/instance | invariants | report |\n|---|---|---|---|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		bpi := ""
		if r.s.BytesPerInst > 0 {
			bpi = fmt.Sprintf("%.0f", r.s.BytesPerInst)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.0f | %.0f | %.2f | %.2f | %s | %s | [%s](%s) |\n",
			r.s.Time, r.s.Kind, r.s.Target, r.s.Shards, r.s.EventsPerS, r.s.InvocationsPerS, r.s.LocationP99Ms, r.s.RequestP99Ms, bpi, r.s.Invariants, r.file, r.file)
	}
	if len(others) > 0 {
		slices.Sort(others)
		b.WriteString("\n## Other measurements\n\nMicro-benchmarks, crash and recovery runs and peer comparisons, each with its machine, commit and command.\n\n")
		b.WriteString(strings.Join(others, "\n"))
		b.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}
