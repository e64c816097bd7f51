package soak

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/internal/memmodel"
)

// runner is one run: what Run's steps share.
type runner struct {
	cfg       Config
	s         *Summary
	progress  io.Writer
	engineLog io.Writer
	dir       string

	eng      *Engine
	tally    *Tally
	l        *load
	sampler  Sampler
	runStart time.Time
	probe    *probe
}

func (r *runner) say(format string, args ...any) {
	fmt.Fprintf(r.progress, "soak: "+format+"\n", args...)
}

// Run runs the soak. Progress goes to progress, the engine's log to
// engineLog (either may be io.Discard). An error means the run could not
// be carried out; a failed criterion is in the summary.
func Run(ctx context.Context, cfg Config, progress, engineLog io.Writer) (*Summary, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, progress: progress, engineLog: engineLog, dir: cfg.DataDir}
	if r.dir == "" {
		d, err := os.MkdirTemp("", "shardfn-soak-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		r.dir = d
	}
	r.s = &Summary{Config: cfg, Budget: cfg.MemoryBudget, Bound: memmodel.Bound(cfg.Params())}
	eng, err := StartEngine(ctx, cfg.Engine, cfg.engineArgs(r.dir), engineLog)
	if err != nil {
		return nil, err
	}
	defer killIfRunning(eng)
	r.eng = eng
	r.say("engine pid %d: ingress %s, admin %s, data %s; RSS bound %s", eng.Pid(), eng.Ingress, eng.Admin, r.dir, MiB(r.s.Bound))
	r.loadPhase(ctx)
	if r.s.EngineExited != "" {
		r.s.StopErr = "the engine had exited"
		return r.s, nil
	}
	r.restart(ctx)
	return r.s, nil
}

func killIfRunning(e *Engine) {
	select {
	case <-e.Exited():
	default:
		e.Kill()
	}
}

// loadPhase samples the engine's RSS and runs the probe from the start,
// seeds the dead letters, calibrates, runs the load for the configured
// duration and gathers what it measured into the summary.
func (r *runner) loadPhase(ctx context.Context) {
	cfg, s := &r.cfg, r.s
	r.tally = NewTally()
	r.l = newLoad(cfg, r.eng.Ingress, r.tally)
	r.runStart = time.Now()
	sampCtx, stopSampler := context.WithCancel(ctx)
	var sampWG sync.WaitGroup
	sampWG.Add(1)
	go func() { defer sampWG.Done(); r.sampler.Run(sampCtx, r.eng.Pid(), r.runStart, time.Second) }()
	defer func() { stopSampler(); sampWG.Wait() }()

	// The probe runs from before the calibration to the end of the load.
	r.probe = newProbe(cfg, r.eng.Ingress, r.tally, strconv.FormatInt(r.runStart.UnixNano(), 36))
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var probeWG sync.WaitGroup
	probeWG.Add(1)
	go func() { defer probeWG.Done(); r.probe.runLoop(loadCtx, r.runStart) }()

	// An exit of the engine during the load ends the load.
	exitedEarly := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		select {
		case <-r.eng.Exited():
			close(exitedEarly)
			stopLoad()
		case <-loadDone:
		}
	}()

	s.DeadLetters = r.l.seedDeadLetters(loadCtx, cfg.DeadLetters)
	r.say("seeded %d dead letters of %s", s.DeadLetters, MiB(cfg.MaxBody-512))
	if cfg.WarmUp > 0 {
		var took time.Duration
		s.WarmCache, took = r.l.warmUp(loadCtx, r.eng.Admin)
		s.WarmSeconds = took.Seconds()
		r.say("warm-up: state cache %s of a %s budget after %.0f s", MiB(s.WarmCache), MiB(cfg.MemoryBudget), s.WarmSeconds)
	}
	r.runLoad(loadCtx)
	stopLoad()
	probeWG.Wait()
	close(loadDone)
	select {
	case <-exitedEarly:
		s.EngineExited = fmt.Sprint(r.eng.ExitErr()) + "\n" + r.eng.Tail(20)
	default:
	}
	stopSampler()
	sampWG.Wait()
	r.gather()
}

// runLoad calibrates the sustainable rate, then runs every shape for the
// configured duration and waits for their requests in flight.
func (r *runner) runLoad(ctx context.Context) {
	cfg, s, l := &r.cfg, r.s, r.l
	senders := make([]*locationSender, cfg.Workers)
	for w := range senders {
		senders[w] = l.newSender(w)
	}
	calN := min(64, len(senders))
	s.Sustainable = l.calibrate(ctx, senders[:calN], cfg.Calibrate)
	s.Target = cfg.Factor * s.Sustainable
	r.say("sustainable rate: %.0f location messages/s (closed loop, %d connections, %s); offering %.0f/s for %s",
		s.Sustainable, calN, cfg.Calibrate, s.Target, cfg.Duration)

	ctxD, cancelD := context.WithTimeout(ctx, cfg.Duration)
	defer cancelD()
	loadStart := time.Now()
	var offered atomic.Int64
	var wg sync.WaitGroup
	spawn := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctxD) }()
	}
	spawn(func(ctx context.Context) {
		openLoop(ctx, aimOver*s.Target/l.messagesPerOp(), len(senders), &l.shed, func(w int) {
			n, _ := senders[w].op()
			offered.Add(int64(n))
		})
	})
	for _, sh := range r.shapes() {
		if !cfg.Skip[sh.name] {
			spawn(sh.run)
		}
	}
	spawn(func(ctx context.Context) { r.reportProgress(ctx, loadStart, &offered) })
	<-ctxD.Done()
	s.LoadSeconds = time.Since(loadStart).Seconds()
	s.Offered = float64(offered.Load()) / s.LoadSeconds
	r.say("load over; waiting for the requests in flight")
	wg.Wait()
}

// aimOver: the open loop aims this much above the target rate, to make up
// for the sends it sheds while every sender is busy (an accepted single
// write holds its sender until it is durable); the criterion is checked
// against what was sent.
const aimOver = 1.15

// shape is one request shape of the load beside the location writes.
type shape struct {
	name string
	run  func(context.Context)
}

// Shapes names the shapes Config.Skip may name.
var Shapes = []string{"request", "fill", "fan_in", "big_body", "egress", "slow", "half_open", "flood", "bad_input"}

func (r *runner) shapes() []shape {
	l := r.l
	return []shape{
		{"request", l.requests}, {"fill", l.fill}, {"fan_in", l.fanIn}, {"big_body", l.bigBodies},
		{"egress", func(ctx context.Context) { l.egressReaders(ctx, r.s.DeadLetters) }},
		{"slow", l.slow}, {"half_open", l.halfOpen}, {"flood", l.flood}, {"bad_input", l.badInput},
	}
}

// reportProgress says the RSS and the offered rate every 15 s.
func (r *runner) reportProgress(ctx context.Context, loadStart time.Time, offered *atomic.Int64) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ss, _, _ := r.sampler.Samples()
		var rss int64
		if len(ss) > 0 {
			rss = ss[len(ss)-1].RSS
		}
		r.say("%3.0f s: RSS %s, %d location messages offered (%.0f/s)", time.Since(loadStart).Seconds(), MiB(rss),
			offered.Load(), float64(offered.Load())/time.Since(loadStart).Seconds())
	}
}

// gather puts the load's figures into the summary.
func (r *runner) gather() {
	s, l := r.s, r.l
	s.Shed = l.shed.Load()
	s.Floods, s.FloodConns, s.FloodRefused = l.floods.Load(), l.floodConn.Load(), l.floodRef.Load()
	if s.EngineExited == "" {
		if st, err := ReadProcStatus(r.eng.Pid()); err == nil {
			s.HWM = st.HWM
		}
		s.CacheBytes, s.CacheCapacity = cacheBytes(r.eng.Admin)
		s.EngineMetrics = engineMetrics(r.eng.Admin)
	}
	s.RSSSamples, _, s.RSSErrors = r.sampler.Samples()
	if s.EngineExited != "" {
		s.RSSErrors = 0 // the samples after the exit fail; the exit is criterion 5
	}
	s.PeakRSS, s.PeakAt = PeakRSS(s.RSSSamples)
	s.Counts = r.tally.Snapshot()
	s.Probe = probeStats(r.probe.Results(), time.Since(r.runStart))
	r.say("peak RSS %s (VmHWM %s); probe p99 %s", MiB(s.PeakRSS), MiB(s.HWM), ms(s.Probe.P99))
}

// restart stops the engine with SIGTERM, starts it again on the same data
// directory and checks every acknowledged write.
func (r *runner) restart(ctx context.Context) {
	cfg, s := &r.cfg, r.s
	// The engine waits up to --shutdown-timeout for the requests in flight,
	// then up to as long again for its close (cmd/engine/README.md).
	limit := 2*cfg.ShutdownTimeout + 5*time.Second
	took, err := r.eng.Stop(2 * limit)
	s.StopSeconds = took.Seconds()
	switch {
	case err != nil:
		s.StopErr = err.Error() + "\n" + r.eng.Tail(10)
	case took > limit:
		s.StopErr = fmt.Sprintf("exit took %.1f s, over %s", took.Seconds(), limit)
	}
	r.say("SIGTERM: exited in %.1f s (%v)", took.Seconds(), err)
	eng2, err := StartEngine(ctx, cfg.Engine, cfg.engineArgs(r.dir), r.engineLog)
	if err != nil {
		s.RestartErr = err.Error()
		return
	}
	defer killIfRunning(eng2)
	results := r.probe.Results()
	r.say("restarted (pid %d); checking %d tracked drivers and %d probe writes", eng2.Pid(), cfg.Workers*cfg.DriversPerWorker, len(results))
	if err := verify(ctx, s, r.l, results, eng2); err != nil {
		s.RestartErr = err.Error()
	}
	if _, err := eng2.Stop(2 * limit); err != nil {
		s.SecondStopErr = err.Error()
	}
}
