package soak

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// ProcStatus is what the soak reads of /proc/<pid>/status.
type ProcStatus struct {
	RSS     int64 // VmRSS, bytes
	HWM     int64 // VmHWM (peak RSS), bytes
	Threads int
}

// ParseProcStatus reads VmRSS, VmHWM and Threads from the text of
// /proc/<pid>/status (sizes are in kB there). VmRSS must be present.
func ParseProcStatus(b []byte) (ProcStatus, error) {
	var p ProcStatus
	seen := false
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		switch string(k) {
		case "VmRSS", "VmHWM":
			if len(f) != 2 || string(f[1]) != "kB" {
				return p, fmt.Errorf("soak: %s: want \"<n> kB\", got %q", k, bytes.TrimSpace(v))
			}
			n, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil || n < 0 {
				return p, fmt.Errorf("soak: %s: bad size %q", k, f[0])
			}
			if string(k) == "VmRSS" {
				p.RSS, seen = n<<10, true
			} else {
				p.HWM = n << 10
			}
		case "Threads":
			if len(f) == 1 {
				p.Threads, _ = strconv.Atoi(string(f[0]))
			}
		}
	}
	if !seen {
		return p, fmt.Errorf("soak: no VmRSS line (is this /proc/<pid>/status of a live process?)")
	}
	return p, nil
}

// ReadProcStatus reads /proc/<pid>/status.
func ReadProcStatus(pid int) (ProcStatus, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ProcStatus{}, err
	}
	return ParseProcStatus(b)
}

// RSSSample is one sample of the engine's memory.
type RSSSample struct {
	At  time.Duration // since the start of the load
	RSS int64
}

// Sampler reads the RSS of a process every interval.
type Sampler struct {
	mu      sync.Mutex
	samples []RSSSample
	last    ProcStatus
	errs    int
}

// Run samples pid every interval until ctx ends; start is the time origin.
func (s *Sampler) Run(ctx context.Context, pid int, start time.Time, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.sample(pid, start)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sampler) sample(pid int, start time.Time) {
	p, err := ReadProcStatus(pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs++
		return
	}
	s.last = p
	s.samples = append(s.samples, RSSSample{At: time.Since(start), RSS: p.RSS})
}

// Samples returns the samples so far, the last status read and the count
// of failed reads.
func (s *Sampler) Samples() ([]RSSSample, ProcStatus, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RSSSample(nil), s.samples...), s.last, s.errs
}

// PeakRSS is the largest sample.
func PeakRSS(ss []RSSSample) (peak int64, at time.Duration) {
	for _, s := range ss {
		if s.RSS > peak {
			peak, at = s.RSS, s.At
		}
	}
	return peak, at
}
