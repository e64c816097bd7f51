// Package soak is the soak test of the shardfn server (make soak, cmd/soak):
// it runs a real cmd/engine child process on loopback, measures the
// sustainable rate of RS-1 location writes, then offers ten times that for
// minutes while mixing every hostile request shape of issue 10 (connection
// floods past --max-conns, slow and half-open connections, big bodies, big
// egress reads, fan-in into one geocell, request-reply), samples the
// child's RSS every second and times a well-behaved probe client. Then it
// stops the engine with SIGTERM, starts it again on the same data
// directory and checks that every acknowledged write is there. Verdict
// checks the pass criteria; WriteReport writes the Markdown report.
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shardfn/shardfn/internal/memmodel"
	"github.com/shardfn/shardfn/loadgen"
)

// Params returns the memory model's parameters for the engine flags of c.
func (c *Config) Params() memmodel.Params {
	p := memmodel.Params{
		MemoryBudget:    c.MemoryBudget,
		MaxQueuedBytes:  c.MaxQueuedBytes,
		MaxBodyInFlight: c.MaxBodyInFlight,
		MaxEgressBytes:  c.MaxEgressBytes,
		MaxConns:        c.MaxConns,
		MaxRecordBytes:  max(32<<20, 2*c.MaxBody),
	}
	p.Defaults()
	return p
}

// verify reads every tracked driver and every acknowledged probe write
// from the restarted engine, and sends each probe key again.
func verify(ctx context.Context, s *Summary, l *load, probes []ProbeResult, eng *Engine) error {
	h, err := loadgen.NewHTTP("http://"+eng.Ingress, "http://"+eng.Admin, 32)
	if err != nil {
		return err
	}
	defer h.Close()
	type job struct{ w, j int }
	jobs := make(chan job)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for jb := range jobs {
				d := &l.drivers[jb.w][jb.j]
				st, err := h.Driver(ctx, driverID(jb.w, jb.j))
				mu.Lock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = fmt.Errorf("soak: reading %s: %w", driverID(jb.w, jb.j), err)
					}
				case !d.allowed(st.Cell):
					s.Lost = append(s.Lost, fmt.Sprintf("%s is at %q, acknowledged %q (in doubt %q)", driverID(jb.w, jb.j), st.Cell, d.acked, d.doubt))
				}
				mu.Unlock()
			}
		}()
	}
	for w := range l.drivers {
		for j := range l.drivers[w] {
			d := &l.drivers[w][j]
			if d.seq == 0 {
				continue
			}
			s.TrackedDrivers++
			if d.acked != "" {
				s.TrackedAcked++
			}
			if len(d.doubt) > 0 {
				s.TrackedDoubt++
			}
			jobs <- job{w, j}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	// Probe writes: the state, and the key sent again is answered with the
	// first answer's id.
	c := NewConn(eng.Ingress, source(srcProbe))
	defer c.Close()
	for _, r := range probes {
		if !r.Acked() {
			continue
		}
		s.ProbeChecked++
		st, err := h.Driver(ctx, r.Driver)
		if err != nil {
			return fmt.Errorf("soak: reading %s: %w", r.Driver, err)
		}
		if st.Cell != r.Cell {
			s.ProbeLost = append(s.ProbeLost, fmt.Sprintf("%s is at %q, acknowledged %q", r.Driver, st.Cell, r.Cell))
		}
		body := []byte(`{"cell":"` + r.Cell + `"}`)
		head := Head(nil, "POST", "/rides/driver/"+r.Driver, ctypeLocation, len(body), "Idempotency-Key", r.Key)
		a, kind, err := c.Do(head, body, time.Now().Add(30*time.Second), true)
		if err != nil {
			return fmt.Errorf("soak: sending probe key %s again: %s: %w", r.Key, kind, err)
		}
		var v struct{ ID string }
		if a.Status != 202 || json.Unmarshal(a.Body, &v) != nil || v.ID != r.ID {
			s.ProbeKeyMismatch = append(s.ProbeKeyMismatch, fmt.Sprintf("key %s: first answer id %s, now HTTP %d %.100s", r.Key, r.ID, a.Status, a.Body))
		}
	}
	return nil
}

// cacheBytes reads the state cache's bytes and capacity from
// /admin/status (0, 0 if it cannot).
func cacheBytes(admin string) (bytes, capacity int64) {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get("http://" + admin + "/admin/status")
	if err != nil {
		return 0, 0
	}
	defer r.Body.Close()
	var st struct {
		PerShard []struct {
			CacheBytes    int64 `json:"cache_bytes"`
			CacheCapacity int64 `json:"cache_capacity_bytes"`
		} `json:"per_shard"`
	}
	if json.NewDecoder(r.Body).Decode(&st) != nil {
		return 0, 0
	}
	for _, p := range st.PerShard {
		bytes += p.CacheBytes
		capacity += p.CacheCapacity
	}
	return bytes, capacity
}

// engineMetrics reads a few figures of the engine's /metrics: refusals by
// reason, the log's sync latency, egress reads refused, connections
// refused, Go's memory limit and GC count.
func engineMetrics(admin string) [][2]string {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil
	}
	var out [][2]string
	var syncSum, syncCount float64
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(name, "shardfn_ingress_refused_total"),
			strings.HasPrefix(name, "shardfn_ingress_connections_refused_total"),
			strings.HasPrefix(name, "shardfn_ingress_accept_errors_total"),
			name == "shardfn_ingress_egress_busy_total",
			name == "shardfn_dead_letters_total",
			name == "go_gc_gomemlimit_bytes",
			name == "go_gc_duration_seconds_count":
			out = append(out, [2]string{name, val})
		case name == "shardfn_wal_sync_duration_seconds_sum":
			syncSum, _ = strconv.ParseFloat(val, 64)
		case name == "shardfn_wal_sync_duration_seconds_count":
			syncCount, _ = strconv.ParseFloat(val, 64)
		}
	}
	if syncCount > 0 {
		out = append(out, [2]string{"log syncs (mean duration)", fmt.Sprintf("%.0f (%.1f ms)", syncCount, 1000*syncSum/syncCount)})
	}
	return out
}
