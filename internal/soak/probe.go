package soak

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/shardfn/shardfn/rides"
)

// ProbeResult is one write of the probe client.
type ProbeResult struct {
	At      time.Duration // since the start of the load
	Latency time.Duration
	Status  int    // 0 without an answer
	Retry   bool   // the answer carried Retry-After
	Fail    string // failure kind without an answer
	Key     string
	Driver  string
	Cell    string
	ID      string // the message id of an acknowledged write
}

// Acked reports whether the write was acknowledged.
func (r ProbeResult) Acked() bool { return r.Status == 202 }

// probe is the well-behaved client: one keep-alive connection of its own
// (from its own address), a keyed location write every interval to a
// driver of its own, each answer timed.
type probe struct {
	cfg   *Config
	conn  *Conn
	tally *ShapeTally
	run   string // distinguishes the keys of runs on one data directory

	mu      sync.Mutex
	results []ProbeResult
}

func newProbe(cfg *Config, ingress string, tally *Tally, run string) *probe {
	return &probe{cfg: cfg, conn: NewConn(ingress, source(srcProbe)), tally: tally.Shape(ShapeProbe), run: run}
}

// write sends probe write n and returns its result.
func (p *probe) write(n int, start time.Time) ProbeResult {
	r := ProbeResult{Key: "soak-probe-" + p.run + "-" + strconv.Itoa(n), Driver: "probe-" + strconv.Itoa(n),
		Cell: strconv.Itoa(n%100) + "-" + strconv.Itoa(n/100%100)}
	body := rides.AppendCellBody(nil, r.Cell)
	head := Head(nil, "POST", "/rides/driver/"+r.Driver, ctypeLocation, len(body), "Idempotency-Key", r.Key)
	t0 := time.Now()
	r.At = t0.Sub(start)
	a, kind, err := p.conn.Do(head, body, t0.Add(p.cfg.ProbeTimeout), true)
	r.Latency = time.Since(t0)
	if err != nil {
		r.Fail = kind
		p.tally.Failure(kind)
		return r
	}
	p.tally.Answer(a)
	if a.Status/100 == 2 {
		p.tally.Acked(r.Latency)
	}
	r.Status, r.Retry = a.Status, a.RetryAfter
	if a.Status == 202 {
		var v struct{ ID string }
		if json.Unmarshal(a.Body, &v) == nil {
			r.ID = v.ID
		}
	}
	return r
}

// run writes every ProbeInterval until ctx ends (the connection is opened
// before the load starts, so that it holds a slot under --max-conns).
func (p *probe) runLoop(ctx context.Context, start time.Time) {
	t := time.NewTicker(p.cfg.ProbeInterval)
	defer t.Stop()
	for n := 0; ; n++ {
		r := p.write(n, start)
		p.mu.Lock()
		p.results = append(p.results, r)
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.conn.Close()
			return
		case <-t.C:
		}
	}
}

// Results returns the probe's results so far.
func (p *probe) Results() []ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProbeResult(nil), p.results...)
}

// ProbeStats summarises the probe's results.
type ProbeStats struct {
	Writes, Acked, Refused, Failed int
	Unexpected                     int // answers other than 202, 503 with Retry-After
	P50, P99, Max                  time.Duration
	LongestGap                     time.Duration // longest time without an acknowledged write
	FirstFailures                  []string
}

// Probe statistics: latency over every write that was answered or failed
// (a failure counts at its timeout or when it failed).
func probeStats(rs []ProbeResult, end time.Duration) ProbeStats {
	var s ProbeStats
	lat := make([]time.Duration, 0, len(rs))
	var lastAck time.Duration
	for _, r := range rs {
		s.Writes++
		lat = append(lat, r.Latency)
		switch {
		case r.Fail != "":
			s.Failed++
			if len(s.FirstFailures) < 5 {
				s.FirstFailures = append(s.FirstFailures, r.At.Truncate(time.Millisecond).String()+": "+r.Fail)
			}
		case r.Status == 202:
			s.Acked++
			if g := r.At + r.Latency - lastAck; g > s.LongestGap {
				s.LongestGap = g
			}
			lastAck = r.At + r.Latency
		case r.Status == 503 && r.Retry:
			s.Refused++
		default:
			s.Unexpected++
			if len(s.FirstFailures) < 5 {
				s.FirstFailures = append(s.FirstFailures, r.At.Truncate(time.Millisecond).String()+": HTTP "+strconv.Itoa(r.Status))
			}
		}
	}
	if g := end - lastAck; g > s.LongestGap && end > 0 {
		s.LongestGap = g
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		s.P50 = quantile(lat, 0.50)
		s.P99 = quantile(lat, 0.99)
		s.Max = lat[len(lat)-1]
	}
	return s
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
