package soak

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/shardfn/shardfn/internal/memmodel"
)

// Meta describes where and how a run was made.
type Meta struct {
	When    time.Time
	Command string
	Commit  string
	CPU     string
	Cores   int
	Memory  int64
	Kernel  string
	Go      string
	Note    string // e.g. "shared, noisy 2-core machine"
}

// ReadMeta gathers the machine's facts, the Go version and the commit.
func ReadMeta(command string) Meta {
	m := Meta{When: time.Now().UTC(), Command: command, Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(b))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if i := bytes.Index(b, []byte("MemTotal:")); i >= 0 {
			fmt.Sscanf(string(b[i+len("MemTotal:"):]), "%d", &kb)
		}
		m.Memory = kb << 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// WriteReport writes the Markdown report of a run.
func WriteReport(w io.Writer, m Meta, s *Summary, cs []Criterion) error {
	b := &strings.Builder{}
	c := &s.Config
	verdict := "PASS"
	if !Passed(cs) {
		verdict = "FAIL"
	}
	fmt.Fprintf(b, "# Soak: %s\n\n", verdict)
	fmt.Fprintf(b, "`make soak` (cmd/soak, internal/soak): a real `cmd/engine` child process on loopback under at least %.0f times its sustainable rate for %s, mixing every hostile request shape of issue 10, then SIGTERM, a restart on the same data directory and a check of every acknowledged write. Measured %s.\n\n",
		c.Factor, c.Duration, m.When.Format("2006-01-02 15:04:05 UTC"))
	b.WriteString("## Verdict\n\n| criterion | result | detail |\n|---|---|---|\n")
	for _, k := range cs {
		r := "PASS"
		if !k.Pass {
			r = "**FAIL**"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", k.Name, r, mdCell(k.Detail))
	}
	fmt.Fprintf(b, "\n## Machine\n\n| | |\n|---|---|\n| CPU | %s |\n| cores | %d |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n| commit | %s |\n",
		m.CPU, m.Cores, GiB(m.Memory), m.Kernel, m.Go, m.Commit)
	if m.Note != "" {
		fmt.Fprintf(b, "\n%s\n", m.Note)
	}
	fmt.Fprintf(b, "\n## Command\n\n```\n%s\n```\n\nEngine flags: `%s` (listen addresses: free loopback ports).\n",
		m.Command, strings.Join(c.engineArgs("<temp dir>"), " "))

	writeMemory(b, s)
	writeLoad(b, s)
	writeProbeAndRestart(b, s)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeMemory writes the memory section: the bound, its terms and RSS over
// time.
func writeMemory(b *strings.Builder, s *Summary) {
	c := &s.Config
	p := c.Params()
	fmt.Fprintf(b, "\n## Memory\n\nBound: RSS <= memory budget + overhead = %s + %s = **%s**. Peak: **%s** (largest 1 s sample %s at %s into the run; VmHWM %s). State cache (live bytes): %s after the warm-up (%.0f s of closed-loop rides/touch to fresh passengers, up to %.0f %% of the budget or %s), %s at the end of the load (%s allocated).\n\n",
		MiB(s.Budget), MiB(s.Bound-s.Budget), MiB(s.Bound), MiB(max(s.PeakRSS, s.HWM)), MiB(s.PeakRSS),
		s.PeakAt.Truncate(time.Second), MiB(s.HWM), MiB(s.WarmCache), s.WarmSeconds, 100*c.WarmUpFill, c.WarmUp, MiB(s.CacheBytes), MiB(s.CacheCapacity))
	b.WriteString("The overhead is the memory model of `internal/memmodel` (cmd/engine/README.md, \"Memory\"): each term is a bound the code enforces, for this run's flags:\n\n| term | formula | bytes | where |\n|---|---|---:|---|\n")
	var heap int64
	for _, t := range memmodel.Terms(p) {
		where := "Go heap"
		if !t.GoHeap {
			where = "outside the Go heap"
		} else {
			heap += t.Bytes
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s (%s) |\n", t.Name, t.Formula, MiB(t.Bytes), where, mdCell(t.Where))
	}
	fmt.Fprintf(b, "| Go memory limit | heap terms (%s) x %.3f | %s | `--memory-limit auto` sets it with debug.SetMemoryLimit |\n",
		MiB(heap), 1+memmodel.GCHeadroom, MiB(memmodel.GoLimit(p)))
	fmt.Fprintf(b, "| binary | %s | %s | text, data, C runtime |\n", MiB(memmodel.BinaryBytes), MiB(memmodel.BinaryBytes))
	fmt.Fprintf(b, "| **bound** | Go limit + outside the heap + binary | **%s** | |\n", MiB(s.Bound))
	b.WriteString("\nRSS over time (one sample a second; the table shows one in ten and the peak):\n\n")
	b.WriteString(rssTable(s.RSSSamples, s.Bound))
}

// writeLoad writes the load section: the rates, the shapes and the
// answers of each.
func writeLoad(b *strings.Builder, s *Summary) {
	c := &s.Config
	fmt.Fprintf(b, "\n## Load\n\nSustainable rate: **%.0f** location messages/s acknowledged, closed loop on %d connections for %s (%.0f %% single writes, the rest batches of %d). Offered: **%.0f** messages/s (%.1f x) open loop on %d connections for %.0f s; %d sends shed because every sender was busy.\n\n",
		s.Sustainable, min(64, c.Workers), c.Calibrate, 100*singleShare, c.BatchSize, s.Offered, s.Offered/max(s.Sustainable, 1), c.Workers, s.LoadSeconds, s.Shed)
	fmt.Fprintf(b, "Beside it: ride requests with `?wait=5s` (%d/s offered on %d connections, a quarter in the fan-in cell), rides/touch to fresh passengers (%d messages/s, to fill the state cache), %d drivers all reporting cell %s (%d messages/s), %d connections posting %s bodies (a quarter with `Expect: 100-continue`), %d dead letters of %s read by %d parallel `GET /egress/dead-letters?from=N&max=10000`, %d slowloris connections (half trickling headers, half a body, a byte per 500 ms), %d half-open connections, a flood of %d connections from 8 addresses (%.2f x --max-conns) and one of %d from one address every %s (%d floods, %d connections, %d refused at accept), and %d malformed requests/s (HTTP/9.9 among them).\n\n",
		c.RequestRate, c.RequestConns, c.FillRate, c.FanInDrivers, fanInCell, c.FanInRate, c.BigBodyConns, MiB(c.MaxBody-512),
		s.DeadLetters, MiB(c.MaxBody-512), c.EgressReaders, c.SlowConns, c.HalfOpenConns,
		int(float64(c.MaxConns)*c.FloodFactor), c.FloodFactor, c.perClient()+64, c.FloodEvery, s.Floods, s.FloodConns, s.FloodRefused, c.BadInputRate)

	writeAnswers(b, s)
	if len(s.EngineMetrics) > 0 {
		b.WriteString("\n### The engine's view at the end of the load\n\n| metric | value |\n|---|---:|\n")
		for _, m := range s.EngineMetrics {
			fmt.Fprintf(b, "| `%s` | %s |\n", m[0], m[1])
		}
	}
	b.WriteString("\n\"no answer\": `closed_at_connect` is a fresh connection closed or reset before an answer (the refusal at --max-conns when the client wrote first), `closed` a connection the server closed (read timeout of slow clients; after a 413 or 503 decided before the body), `timeout` no answer in 30 s (never allowed).\n")
}

// writeAnswers writes the table of answers by shape.
func writeAnswers(b *strings.Builder, s *Summary) {
	b.WriteString("### Answers by shape\n\n| shape | answers | 2xx | 2xx p50 / p99 | 503 (Retry-After) | 503 rate | other codes | no answer |\n|---|---:|---:|---:|---:|---:|---|---|\n")
	var all, all503 int64
	for _, k := range s.Counts {
		n := k.Answers()
		var ok int64
		var other []string
		codes := make([]int, 0, len(k.Codes))
		for code := range k.Codes {
			codes = append(codes, code)
		}
		sort.Ints(codes)
		for _, code := range codes {
			v := k.Codes[code]
			switch {
			case code/100 == 2:
				ok += v
			case code == 503:
			default:
				other = append(other, fmt.Sprintf("%d: %d", code, v))
			}
		}
		r503 := k.Codes[503]
		if k.Shape != ShapeProbe {
			all += n
			all503 += r503
		}
		var fails []string
		for kind, v := range k.Failures {
			fails = append(fails, fmt.Sprintf("%s: %d", kind, v))
		}
		sort.Strings(fails)
		ra := fmt.Sprintf("%d", r503)
		if k.NoRetry503 > 0 {
			ra += fmt.Sprintf(" (**%d without**)", k.NoRetry503)
		}
		lat := ""
		if p := k.AckP99(); p > 0 {
			lat = "< " + ms(k.AckP50()) + " / < " + ms(p)
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %.1f %% | %s | %s |\n", k.Shape, n, ok, lat, ra, pct(r503, n), strings.Join(other, ", "), strings.Join(fails, ", "))
	}
	fmt.Fprintf(b, "| **all but the probe** | %d | | | %d | **%.1f %%** | | |\n", all, all503, pct(all503, all))
	b.WriteString("\nLatency of acknowledged answers is timed by the client for the location writes and the probe (power-of-two buckets: the upper bound is shown).\n")
}

// writeProbeAndRestart writes the probe and restart sections.
func writeProbeAndRestart(b *strings.Builder, s *Summary) {
	c := &s.Config
	// Probe.
	pr := s.Probe
	fmt.Fprintf(b, "\n## Probe\n\nOne keep-alive connection from its own address, a keyed location write (`Idempotency-Key`) every %s, timeout %s: %d writes, %d acknowledged, %d refused with 503 + Retry-After, %d failed, %d unexpected answers. Latency p50 **%s**, p99 **%s** (bound %s), max %s; longest time without an acknowledgement %s. A refusal is an answer: the engine has no fairness between clients, so under overload the probe's writes are refused like everyone's.\n",
		c.ProbeInterval, c.ProbeTimeout, pr.Writes, pr.Acked, pr.Refused, pr.Failed, pr.Unexpected, ms(pr.P50), ms(pr.P99), ms(c.ProbeP99Bound), ms(pr.Max), ms(pr.LongestGap))

	// Restart.
	fmt.Fprintf(b, "\n## Restart\n\nSIGTERM after the load: exited in %.1f s. Started again on the same data directory: %d tracked drivers read back (%d with an acknowledged write, %d with writes in doubt), %d not as acknowledged; %d acknowledged probe writes read back, %d missing; each probe key sent again, %d answered with another id.\n",
		s.StopSeconds, s.TrackedDrivers, s.TrackedAcked, s.TrackedDoubt, len(s.Lost), s.ProbeChecked, len(s.ProbeLost), len(s.ProbeKeyMismatch))
}

// rssTable is a compact table of RSS over time: every tenth sample, the
// peak, and a bar against the bound.
func rssTable(ss []RSSSample, bound int64) string {
	if len(ss) == 0 {
		return "(no samples)\n"
	}
	peak, _ := PeakRSS(ss)
	var b strings.Builder
	b.WriteString("| time | RSS | of the bound |\n|---:|---:|---|\n")
	for i, s := range ss {
		if i%10 != 0 && s.RSS != peak && i != len(ss)-1 {
			continue
		}
		bar := int(40 * float64(s.RSS) / float64(max(bound, 1)))
		mark := ""
		if s.RSS == peak {
			mark = " (peak)"
		}
		fmt.Fprintf(&b, "| %s | %s%s | `%s` |\n", s.At.Truncate(time.Second), MiB(s.RSS), mark, strings.Repeat("#", min(bar, 60)))
	}
	return b.String()
}

func mdCell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ")
}

// GiB formats bytes as GiB.
func GiB(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
