package soak

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Summary is what a run measured: the input of the verdict and the report.
type Summary struct {
	Config Config

	// Memory.
	Budget     int64 // --memory-budget
	Bound      int64 // memmodel.Bound: the RSS the run must stay under
	PeakRSS    int64 // the largest 1 s sample
	PeakAt     time.Duration
	HWM        int64 // VmHWM at the end of the load (the kernel's peak)
	RSSSamples []RSSSample
	RSSErrors  int

	// Load.
	Sustainable   float64 // acknowledged location messages/s, closed loop
	Offered       float64 // location messages/s sent in the open loop
	Target        float64 // Factor x Sustainable
	Shed          int64   // open-loop sends dropped: every sender busy
	LoadSeconds   float64
	Counts        []Counts
	Floods        int64
	FloodConns    int64
	FloodRefused  int64
	DeadLetters   int
	EngineExited  string  // non-empty: the engine exited during the load (its error)
	WarmCache     int64   // state cache bytes after the warm-up
	WarmSeconds   float64 // how long the warm-up took
	CacheBytes    int64   // state cache bytes at the end of the load (admin status)
	CacheCapacity int64
	// EngineMetrics are figures of the engine's /metrics at the end of the
	// load (name, value).
	EngineMetrics [][2]string

	// Probe.
	Probe ProbeStats

	// Restart.
	StopSeconds      float64
	StopErr          string
	RestartErr       string
	TrackedDrivers   int
	TrackedAcked     int // drivers with an acknowledged write
	TrackedDoubt     int // drivers with writes in doubt
	Lost             []string
	ProbeChecked     int
	ProbeLost        []string
	ProbeKeyMismatch []string
	SecondStopErr    string
}

// Criterion is one pass criterion with its verdict.
type Criterion struct {
	Name   string
	Pass   bool
	Detail string
}

// allowedCode reports whether an answer is allowed for a shape: 2xx; 1xx
// (100 Continue is read as an answer by the shapes that send
// Expect: 100-continue); a 4xx for the shapes that send bad or unfinished
// requests only (a well-formed request never gets one); 503 with
// Retry-After; 505 for HTTP/9.9 only; 504 (no reply within ?wait=) for
// request-reply only.
func allowedCode(shape string, code int, retry bool) bool {
	switch {
	case code/100 == 2, code/100 == 1:
		return true
	case code/100 == 4:
		switch shape {
		case ShapeBadInput, ShapeHTTP99, ShapeSlowHeader, ShapeSlowBody, ShapeHalfOpen:
			return true
		}
		return false
	case code == 503:
		return retry
	case code == 505:
		return shape == ShapeHTTP99
	case code == 504:
		return shape == ShapeRequest
	}
	return false
}

// allowedFailure reports whether a request without an answer is allowed
// for a shape. A connection closed at accept is the documented refusal at
// --max-conns (the 503 may be lost when the client writes first). Slow,
// half-open and big-body connections may be closed by the server (read
// timeout; 413 or 503 before the body is read). Timeouts are never
// allowed: every request must be answered or closed.
func allowedFailure(shape, kind string) bool {
	switch kind {
	case FailRefusedAtConnect:
		return true
	case FailClosed:
		switch shape {
		case ShapeSlowHeader, ShapeSlowBody, ShapeHalfOpen, ShapeBigBody, ShapeBadInput, ShapeHTTP99:
			return true
		}
	}
	return false
}

// Verdict checks the pass criteria of a run.
func Verdict(s *Summary) []Criterion {
	var out []Criterion
	c := &s.Config

	// 1. Memory.
	peak := max(s.PeakRSS, s.HWM)
	out = append(out, Criterion{Name: "1. peak RSS within the memory budget plus the documented overhead",
		Pass: peak > 0 && peak <= s.Bound && s.RSSErrors == 0,
		Detail: fmt.Sprintf("peak %s (1 s samples %s, VmHWM %s) against %s (budget %s + overhead %s); %d failed samples; state cache %s after the warm-up, %s at the end",
			MiB(peak), MiB(s.PeakRSS), MiB(s.HWM), MiB(s.Bound), MiB(s.Budget), MiB(s.Bound-s.Budget), s.RSSErrors, MiB(s.WarmCache), MiB(s.CacheBytes))})

	// 2. Refusals.
	var bad []string
	var answers, refused int64
	for _, k := range s.Counts {
		if k.Shape == ShapeProbe {
			continue // criterion 3
		}
		for code, n := range k.Codes {
			answers += n
			if code == 503 {
				refused += n
			}
			if code == 503 {
				if k.NoRetry503 > 0 {
					bad = append(bad, fmt.Sprintf("%s: %d x 503 without Retry-After", k.Shape, k.NoRetry503))
				}
				continue
			}
			if !allowedCode(k.Shape, code, false) {
				bad = append(bad, fmt.Sprintf("%s: %d x HTTP %d", k.Shape, n, code))
			}
		}
		if k.Shape == ShapeHTTP99 && k.Codes[505] == 0 && k.Answers() > 0 {
			bad = append(bad, "http_9_9: never answered 505")
		}
		for kind, n := range k.Failures {
			if !allowedFailure(k.Shape, kind) {
				bad = append(bad, fmt.Sprintf("%s: %d x %s", k.Shape, n, kind))
			}
		}
	}
	sort.Strings(bad)
	d := fmt.Sprintf("%d answers, %d x 503 (%.1f %%)", answers, refused, pct(refused, answers))
	if len(bad) > 0 {
		d += "; not allowed: " + strings.Join(bad, "; ")
	}
	out = append(out, Criterion{Name: "2. every refusal is 503 with Retry-After (or a 4xx for bad input; 505 for HTTP/9.9 only); no other 5xx, no 4xx to a well-formed request; every request answered",
		Pass: len(bad) == 0 && answers > 0, Detail: d})

	// 3. Probe.
	p := s.Probe
	pass := p.Writes > 0 && p.Failed+p.Unexpected <= c.ProbeFailures && p.P99 <= c.ProbeP99Bound
	d = fmt.Sprintf("%d writes: %d acknowledged, %d refused (503 + Retry-After), %d failed, %d unexpected answers (allowed: %d); p50 %s, p99 %s (bound %s), max %s; longest time without an acknowledgement %s (reported, not a criterion: the engine has no fairness between clients)",
		p.Writes, p.Acked, p.Refused, p.Failed, p.Unexpected, c.ProbeFailures, ms(p.P50), ms(p.P99), ms(c.ProbeP99Bound), ms(p.Max), ms(p.LongestGap))
	if len(p.FirstFailures) > 0 {
		d += "; first failures: " + strings.Join(p.FirstFailures, ", ")
	}
	out = append(out, Criterion{Name: "3. the probe client is answered throughout with a bounded p99", Pass: pass, Detail: d})

	// 4. Restart.
	pass = s.StopErr == "" && s.RestartErr == "" && len(s.Lost) == 0 && len(s.ProbeLost) == 0 &&
		len(s.ProbeKeyMismatch) == 0 && s.TrackedAcked > 0 && s.ProbeChecked > 0
	d = fmt.Sprintf("SIGTERM: exited in %.1f s (limit %s)", s.StopSeconds, c.ShutdownTimeout)
	if s.StopErr != "" {
		d += " FAILED: " + s.StopErr
	}
	if s.RestartErr != "" {
		d += "; restart FAILED: " + s.RestartErr
	}
	d += fmt.Sprintf("; %d tracked drivers (%d with an acknowledged write, %d with writes in doubt): %d not as acknowledged",
		s.TrackedDrivers, s.TrackedAcked, s.TrackedDoubt, len(s.Lost))
	if len(s.Lost) > 0 {
		d += " (" + strings.Join(first(s.Lost, 5), "; ") + ")"
	}
	d += fmt.Sprintf("; %d acknowledged probe writes: %d missing, %d keys answered with another id", s.ProbeChecked, len(s.ProbeLost), len(s.ProbeKeyMismatch))
	if len(s.ProbeLost)+len(s.ProbeKeyMismatch) > 0 {
		d += " (" + strings.Join(first(append(append([]string(nil), s.ProbeLost...), s.ProbeKeyMismatch...), 5), "; ") + ")"
	}
	out = append(out, Criterion{Name: "4. SIGTERM within --shutdown-timeout, and the restart finds every acknowledged write", Pass: pass, Detail: d})

	// 5. The engine stays up.
	d = "the engine ran through the load"
	if s.EngineExited != "" {
		d = "the engine exited during the load: " + s.EngineExited
	}
	out = append(out, Criterion{Name: "5. the engine never exits during the load", Pass: s.EngineExited == "", Detail: d})

	// 6. The load was what it claims.
	out = append(out, Criterion{Name: fmt.Sprintf("6. offered location load at least %.0f x the sustainable rate", c.Factor),
		Pass:   s.Sustainable > 0 && s.Offered >= s.Target,
		Detail: fmt.Sprintf("offered %.0f messages/s against a sustainable %.0f messages/s (%.1f x; target %.0f); %d open-loop sends shed by the client", s.Offered, s.Sustainable, s.Offered/max(s.Sustainable, 1), s.Target, s.Shed)})
	return out
}

// Passed reports whether every criterion passed.
func Passed(cs []Criterion) bool {
	for _, c := range cs {
		if !c.Pass {
			return false
		}
	}
	return len(cs) > 0
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func pct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// MiB formats bytes as MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
