package report

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shardfn/shardfn/loadgen"
)

// ScalingReport is the shard-scaling sweep (loadgen.RunScaling) with what
// reproduces it.
type ScalingReport struct {
	Time    time.Time
	Command string
	Machine MachineInfo
	Config  loadgen.ScalingConfig
	Points  []loadgen.ScalingPoint
	// Load is the machine's load average before and after the sweep
	// (/proc/loadavg's first three fields), so a reader sees whether other
	// work shared the cores.
	LoadBefore, LoadAfter string
	// Profile is the CPU profile summary of the whole sweep (--profile).
	Profile *ProfileSummary
}

// LoadAverage returns the first three fields of /proc/loadavg ("" when
// unreadable).
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	fs := strings.Fields(string(b))
	if len(fs) < 3 {
		return ""
	}
	return strings.Join(fs[:3], " ")
}

// WriteScaling writes the sweep's Markdown report and its plot into dir and
// returns the report's path.
func WriteScaling(dir string, r ScalingReport) (string, error) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	base := r.Time.UTC().Format("2006-01-02-150405") + "-scaling"
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "# Durable throughput against shards (batched RS-1 location events)\n\n")
	fmt.Fprintf(&b, "Measured %s by `cmd/loadgen --scaling` (with --profile: the CPU profile covers the whole sweep, warm-ups included). For each shard count, a fresh durable engine (real WAL with fsync, Pebble) in a temporary directory; %d producer goroutines each send batches of %d RS-1 location events to uniformly chosen drivers of %d (%dx%d cells) with `SendBatch` and wait for them; warm-up %v, window %v. An event counts when its acknowledgement arrives, that is when its invocation ran and its effects are durable in the log. Invocations include the geocell joins and leaves that a driver's move causes. CPU is the whole process (engine and producers).\n\n",
		r.Time.UTC().Format("2006-01-02 15:04:05 UTC"), c.Producers, c.Batch, c.Drivers, c.Grid, c.Grid, c.Warmup, c.Duration)
	fmt.Fprintf(&b, "## Machine\n\n| | |\n|---|---|\n| CPU | %s |\n| cores | %d |\n| memory | %s |\n| disk (data dir) | %s |\n| kernel | %s |\n| Go | %s |\n| commit | %s |\n| load average before / after | %s / %s |\n\n",
		r.Machine.CPU, r.Machine.Cores, Bytes(r.Machine.MemBytes), r.Machine.Disk, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.Commit, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(&b, "A load average above the core count means other work shared the machine during the sweep; its figures are then lower than on a quiet machine.\n\n")
	fmt.Fprintf(&b, "## Command\n\n```\n%s\n```\n\n", r.Command)
	fmt.Fprintf(&b, "## Result\n\n| shards | events/s | speed-up | efficiency | invocations/s | CPU µs per event | refused batches |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	var pts [][2]float64
	for _, p := range r.Points {
		su := 0.0
		if len(r.Points) > 0 && r.Points[0].EventsPerS > 0 {
			su = p.EventsPerS / r.Points[0].EventsPerS * float64(r.Points[0].Shards)
		}
		fmt.Fprintf(&b, "| %d | %.0f | %.2f | %.2f | %.0f | %.1f | %d |\n",
			p.Shards, p.EventsPerS, su, su/float64(p.Shards), p.InvocationsPerS, p.CPUPerEventUs, p.Errors)
		pts = append(pts, [2]float64{float64(p.Shards), p.EventsPerS})
	}
	f := base + ".svg"
	if err := os.WriteFile(filepath.Join(dir, f), []byte(ScalingSVG("durable batched RS-1 events/s against shards", pts)), 0o644); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	fmt.Fprintf(&b, "\n![scaling](%s)\n\n", f)
	if r.Profile != nil {
		writeProfile(&b, r.Profile)
	}
	return writeMarkdown(dir, base, &b)
}
