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
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// Run runs the soak. Progress goes to progress, the engine's log to
// engineLog (either may be io.Discard). An error means the run could not
// be carried out; a failed criterion is in the summary.
func Run(ctx context.Context, cfg Config, progress, engineLog io.Writer) (*Summary, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "soak: "+format+"\n", args...) }
	dir := cfg.DataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "shardfn-soak-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	s := &Summary{Config: cfg, Budget: cfg.MemoryBudget, Bound: memmodel.Bound(cfg.Params())}
	eng, err := StartEngine(ctx, cfg.Engine, cfg.engineArgs(dir), engineLog)
	if err != nil {
		return nil, err
	}
	defer func() {
		select {
		case <-eng.Exited():
		default:
			eng.Kill()
		}
	}()
	say("engine pid %d: ingress %s, admin %s, data %s; RSS bound %s", eng.Pid(), eng.Ingress, eng.Admin, dir, MiB(s.Bound))

	tally := NewTally()
	l := newLoad(&cfg, eng.Ingress, tally)
	runStart := time.Now()
	var sampler Sampler
	sampCtx, stopSampler := context.WithCancel(ctx)
	var sampWG sync.WaitGroup
	sampWG.Add(1)
	go func() { defer sampWG.Done(); sampler.Run(sampCtx, eng.Pid(), runStart, time.Second) }()
	defer func() { stopSampler(); sampWG.Wait() }()

	// The probe runs from before the calibration to the end of the load.
	pr := newProbe(&cfg, eng.Ingress, tally, strconv.FormatInt(runStart.UnixNano(), 36))
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var probeWG sync.WaitGroup
	probeWG.Add(1)
	go func() { defer probeWG.Done(); pr.runLoop(loadCtx, runStart) }()

	// An exit of the engine during the load ends the load.
	exitedEarly := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		select {
		case <-eng.Exited():
			close(exitedEarly)
			stopLoad()
		case <-loadDone:
		}
	}()

	s.DeadLetters = l.seedDeadLetters(loadCtx, cfg.DeadLetters)
	say("seeded %d dead letters of %s", s.DeadLetters, MiB(cfg.MaxBody-512))

	senders := make([]*locationSender, cfg.Workers)
	for w := range senders {
		senders[w] = l.newSender(w)
	}
	calN := min(64, len(senders))
	s.Sustainable = l.calibrate(loadCtx, senders[:calN], cfg.Calibrate)
	s.Target = cfg.Factor * s.Sustainable
	say("sustainable rate: %.0f location messages/s (closed loop, %d connections, %s); offering %.0f/s for %s",
		s.Sustainable, calN, cfg.Calibrate, s.Target, cfg.Duration)

	// The load.
	ctxD, cancelD := context.WithTimeout(loadCtx, cfg.Duration)
	defer cancelD()
	loadStart := time.Now()
	var offered atomic.Int64
	var wg sync.WaitGroup
	spawn := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctxD) }()
	}
	spawn(func(ctx context.Context) {
		openLoop(ctx, s.Target/l.messagesPerOp(), len(senders), &l.shed, func(w int) {
			n, _ := senders[w].op()
			offered.Add(int64(n))
		})
	})
	for _, sh := range []struct {
		name string
		f    func(context.Context)
	}{
		{"request", l.requests}, {"fill", l.fill}, {"fan_in", l.fanIn}, {"big_body", l.bigBodies},
		{"egress", func(ctx context.Context) { l.egressReaders(ctx, s.DeadLetters) }},
		{"slow", l.slow}, {"half_open", l.halfOpen}, {"flood", l.flood}, {"bad_input", l.badInput},
	} {
		if !cfg.Skip[sh.name] {
			spawn(sh.f)
		}
	}
	spawn(func(ctx context.Context) {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ss, _, _ := sampler.Samples()
			var rss int64
			if len(ss) > 0 {
				rss = ss[len(ss)-1].RSS
			}
			say("%3.0f s: RSS %s, %d location messages offered (%.0f/s)", time.Since(loadStart).Seconds(), MiB(rss),
				offered.Load(), float64(offered.Load())/time.Since(loadStart).Seconds())
		}
	})
	<-ctxD.Done()
	loadSecs := time.Since(loadStart).Seconds()
	s.LoadSeconds = loadSecs
	s.Offered = float64(offered.Load()) / loadSecs
	say("load over; waiting for the requests in flight")
	wg.Wait()
	stopLoad()
	probeWG.Wait()
	close(loadDone)
	select {
	case <-exitedEarly:
		s.EngineExited = fmt.Sprint(eng.ExitErr()) + "\n" + eng.Tail(20)
	default:
	}
	s.Shed = l.shed.Load()
	s.Floods, s.FloodConns, s.FloodRefused = l.floods.Load(), l.floodConn.Load(), l.floodRef.Load()
	if s.EngineExited == "" {
		if st, err := ReadProcStatus(eng.Pid()); err == nil {
			s.HWM = st.HWM
		}
		s.CacheBytes, s.CacheCapacity = cacheBytes(eng.Admin)
		s.EngineMetrics = engineMetrics(eng.Admin)
	}
	stopSampler()
	sampWG.Wait()
	s.RSSSamples, _, s.RSSErrors = sampler.Samples()
	if s.EngineExited != "" {
		s.RSSErrors = 0 // the samples after the exit fail; the exit is criterion 5
	}
	s.PeakRSS, s.PeakAt = PeakRSS(s.RSSSamples)
	s.Counts = tally.Snapshot()
	results := pr.Results()
	s.Probe = probeStats(results, time.Since(runStart))
	say("peak RSS %s (VmHWM %s); probe p99 %s", MiB(s.PeakRSS), MiB(s.HWM), ms(s.Probe.P99))

	// Stop, restart, verify.
	if s.EngineExited != "" {
		s.StopErr = "the engine had exited"
		return s, nil
	}
	// The engine waits up to --shutdown-timeout for the requests in flight,
	// then up to as long again for its close (cmd/engine/README.md).
	limit := 2*cfg.ShutdownTimeout + 5*time.Second
	took, err := eng.Stop(2 * limit)
	s.StopSeconds = took.Seconds()
	switch {
	case err != nil:
		s.StopErr = err.Error() + "\n" + eng.Tail(10)
	case took > limit:
		s.StopErr = fmt.Sprintf("exit took %.1f s, over %s", took.Seconds(), limit)
	}
	say("SIGTERM: exited in %.1f s (%v)", took.Seconds(), err)
	eng2, err := StartEngine(ctx, cfg.Engine, cfg.engineArgs(dir), engineLog)
	if err != nil {
		s.RestartErr = err.Error()
		return s, nil
	}
	defer func() {
		select {
		case <-eng2.Exited():
		default:
			eng2.Kill()
		}
	}()
	say("restarted (pid %d); checking %d tracked drivers and %d probe writes", eng2.Pid(), cfg.Workers*cfg.DriversPerWorker, len(results))
	if err := verify(ctx, s, l, results, eng2); err != nil {
		s.RestartErr = err.Error()
	}
	if _, err := eng2.Stop(2 * limit); err != nil {
		s.SecondStopErr = err.Error()
	}
	return s, nil
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
