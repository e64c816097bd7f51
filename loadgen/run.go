package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/rides"
)

// instanceIDs are the precomputed instance ids of a run.
type instanceIDs struct {
	drivers, passengers, cells []string
}

func makeIDs(c Config) instanceIDs {
	var ids instanceIDs
	ids.drivers = make([]string, c.Drivers)
	for i := range ids.drivers {
		ids.drivers[i] = "d-" + strconv.Itoa(i)
	}
	ids.passengers = make([]string, c.Passengers)
	for i := range ids.passengers {
		ids.passengers[i] = "p-" + strconv.Itoa(i)
	}
	ids.cells = make([]string, 0, c.Grid*c.Grid)
	for y := 0; y < c.Grid; y++ {
		for x := 0; x < c.Grid; x++ {
			ids.cells = append(ids.cells, rides.CellID(x, y))
		}
	}
	return ids
}

func (r *Result) logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Run drives one RS-1 run against t: seeding, warm-up, the measured
// window, draining, and the invariant checks.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	r, err := newRun(ctx, t, cfg)
	if err != nil {
		return nil, err
	}
	if err := r.seed(); err != nil {
		return nil, err
	}
	if err := r.measure(); err != nil {
		return nil, err
	}
	r.summarise()
	if !r.locOnly {
		if err := r.drainAndCheck(); err != nil {
			return nil, err
		}
	}
	r.res.InvariantsText = InvariantsSummary(r.res.Invariants)
	r.readRSS()
	return r.res, nil
}

// run is one Run in progress: what its steps share.
type run struct {
	ctx     context.Context
	t       Target
	cfg     Config
	res     *Result
	ids     instanceIDs
	locOnly bool // the target takes locations only: no requests, no checks

	drivers, passengers keyChooser

	// The load: begin starts the warm-up, measureFrom the window, until
	// ends it.
	begin, measureFrom, until time.Time
	rec                       *recorder
	ops                       atomic.Int64 // operations done, for the progress lines
	stopped                   atomic.Bool
	answers                   [][]Answer // per worker
	started, failed, refused  atomic.Int64

	// The window's bookkeeping, written by watchWindow before it returns.
	inv0, inv1 uint64
	cpu0, cpu1 time.Duration // this process's CPU time at both ends
	invErr     error
	prof       bytes.Buffer
	profiling  bool
}

func newRun(ctx context.Context, t Target, cfg Config) (*run, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{ctx: ctx, t: t}
	if lo, ok := t.(LocationOnly); ok && lo.LocationOnly() {
		r.locOnly = true
		cfg.RequestShare = 0
		cfg.NoCheck = true
	}
	r.cfg = cfg
	r.res = &Result{Target: t.Name(), Config: cfg, Start: time.Now()}
	r.ids = makeIDs(cfg)
	var err error
	if r.drivers, err = newKeyChooser(cfg.Drivers, cfg.Skew); err != nil {
		return nil, err
	}
	if r.passengers, err = newKeyChooser(cfg.Passengers, cfg.Skew); err != nil {
		return nil, err
	}
	return r, nil
}

// seed has every driver report once, so that cells have free drivers.
func (r *run) seed() error {
	t0 := time.Now()
	if err := seed(r.ctx, r.t, r.cfg, r.ids); err != nil {
		return err
	}
	r.res.SeedTime = time.Since(t0)
	r.res.logf(r.cfg.Progress, "seeded %d drivers in %v", r.cfg.Drivers, r.res.SeedTime.Round(time.Millisecond))
	return nil
}

// measure runs the load (the warm-up, then the measured window) with one
// goroutine per worker, beside the window's bookkeeping and the progress
// lines.
func (r *run) measure() error {
	r.rec = newRecorder()
	r.begin = time.Now()
	r.measureFrom = r.begin.Add(r.cfg.Warmup)
	r.until = r.measureFrom.Add(r.cfg.Duration)
	r.answers = make([][]Answer, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range r.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(w)
		}()
	}
	window := make(chan struct{})
	go func() {
		defer close(window)
		r.watchWindow()
	}()
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		r.progress(window)
	}()
	<-window
	r.stopped.Store(true)
	wg.Wait()
	<-progDone
	r.res.Window = r.until.Sub(r.measureFrom)
	r.res.CPUSeconds = (r.cpu1 - r.cpu0).Seconds()
	return r.ctx.Err()
}

// work is worker w: it sends locations and requests, open or closed loop,
// until the window ends, recording the latencies of the window.
func (r *run) work(w int) {
	cfg, ids := r.cfg, r.ids
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)+1))
	var kind int
	var opErr error
	op := func(time.Time) {
		octx, cancel := context.WithTimeout(r.ctx, cfg.RequestTimeout)
		defer cancel()
		cell := ids.cells[rng.IntN(len(ids.cells))]
		if cfg.RequestShare > 0 && rng.Float64() < cfg.RequestShare {
			kind = 1
			p := ids.passengers[r.passengers.next(rng)]
			o, err := r.t.Request(octx, p, cell)
			opErr = err
			if err == nil {
				r.answers[w] = append(r.answers[w], Answer{Passenger: p, Outcome: o})
				r.count(o)
			}
			return
		}
		kind = 0
		opErr = r.t.Location(octx, ids.drivers[r.drivers.next(rng)], cell)
	}
	done := func(from, end time.Time) {
		r.ops.Add(1)
		if opErr != nil {
			if !from.Before(r.measureFrom) {
				r.rec.fail(kind, opErr)
			}
			if errors.Is(opErr, context.Canceled) {
				return
			}
			time.Sleep(time.Millisecond) // do not spin on an overloaded target
			return
		}
		if !from.Before(r.measureFrom) {
			r.rec.record(w, kind, end.Sub(from))
		}
	}
	stop := func() bool { return r.stopped.Load() || r.ctx.Err() != nil }
	if cfg.Rate > 0 {
		s := newSchedule(r.begin, cfg.Rate/float64(cfg.Concurrency), !cfg.Uniform, rng)
		openLoop(realClock{}, s, r.until, stop, op, done)
	} else {
		closedLoop(realClock{}, r.until, stop, op, done)
	}
}

// count counts a request's outcome.
func (r *run) count(o Outcome) {
	switch {
	case o.Ride == "":
		r.refused.Add(1)
	case o.Failed:
		r.failed.Add(1)
	default:
		r.started.Add(1)
	}
}

// watchWindow sleeps until the window and through it, reading the
// engine's invocation count and this process's CPU time at both ends, and
// taking the CPU profile.
func (r *run) watchWindow() {
	ic, counts := r.t.(InvocationCounter)
	realClock{}.SleepUntil(r.measureFrom)
	if counts {
		r.inv0, r.invErr = ic.Invocations(r.ctx)
	}
	r.cpu0 = SelfCPU()
	if r.cfg.Profile {
		if err := pprof.StartCPUProfile(&r.prof); err == nil {
			r.profiling = true
		} else {
			r.res.Notes = append(r.res.Notes, "CPU profile not taken: "+err.Error())
		}
	}
	realClock{}.SleepUntil(r.until)
	r.cpu1 = SelfCPU()
	if r.profiling {
		pprof.StopCPUProfile()
	}
	if counts && r.invErr == nil {
		r.inv1, r.invErr = ic.Invocations(r.ctx)
	}
}

// progress writes a line a second until window is closed.
func (r *run) progress(window <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := int64(0)
	for {
		select {
		case <-window:
			return
		case now := <-tick.C:
			n := r.ops.Load()
			phase := "warmup"
			if !now.Before(r.measureFrom) {
				phase = "measure"
			}
			line := fmt.Sprintf("%6.1fs %-7s %8d ev/s", now.Sub(r.begin).Seconds(), phase, n-last)
			for k, name := range kinds {
				h := r.rec.merged(k)
				if h.TotalCount() > 0 {
					line += fmt.Sprintf("  %s p99 %.2fms", name, float64(h.ValueAtQuantile(99))/1000)
				}
			}
			line += fmt.Sprintf("  errors %d", r.rec.totalErrors())
			last = n
			r.res.logf(r.cfg.Progress, "%s", line)
		}
	}
}

// summarise puts the window's figures into the result.
func (r *run) summarise() {
	res := r.res
	res.Location = summarise(r.rec.merged(0), r.rec.errors[0].Load(), res.Window)
	res.Request = summarise(r.rec.merged(1), r.rec.errors[1].Load(), res.Window)
	res.EventsPerS = res.Location.PerS + res.Request.PerS
	res.Errors = r.rec.totalErrors()
	res.ErrorSamples = r.rec.samples
	res.Started, res.Failed, res.Refused = r.started.Load(), r.failed.Load(), r.refused.Load()
	if _, ok := r.t.(InvocationCounter); ok {
		if r.invErr != nil {
			res.Notes = append(res.Notes, "invocations unknown: "+r.invErr.Error())
		} else if r.inv1 >= r.inv0 {
			res.Invocations = r.inv1 - r.inv0
			res.InvocationsPerS = float64(res.Invocations) / res.Window.Seconds()
		}
	}
	if r.profiling {
		res.Profile = r.prof.Bytes()
	}
}

// drainAndCheck waits for the started rides to complete, then reads the
// state and checks the invariants (unless NoCheck).
func (r *run) drainAndCheck() error {
	var all []Answer
	for _, a := range r.answers {
		all = append(all, a...)
	}
	t1 := time.Now()
	events, drained, err := drain(r.ctx, r.t, r.cfg, all)
	r.res.DrainTime = time.Since(t1)
	r.res.Drained = drained
	if err != nil {
		return fmt.Errorf("loadgen: draining: %w", err)
	}
	r.res.logf(r.cfg.Progress, "drained in %v (%d ride events, complete: %v)", r.res.DrainTime.Round(time.Millisecond), len(events), drained)
	if r.cfg.NoCheck {
		return nil
	}
	if q, ok := r.t.(Quiescer); ok {
		// Messages still travelling between nodes would show as broken
		// invariants: wait until the target has none.
		if err := q.Quiesce(r.ctx); err != nil {
			return fmt.Errorf("loadgen: waiting for the target to settle: %w", err)
		}
		if events, err = r.t.Events(r.ctx); err != nil {
			return fmt.Errorf("loadgen: draining: %w", err)
		}
	}
	snap, err := gather(r.ctx, r.t, r.ids, all, events)
	if err != nil {
		return fmt.Errorf("loadgen: reading state for the checks: %w", err)
	}
	r.res.Invariants = Check(snap)
	r.res.Instances = countInstances(snap)
	return nil
}

// readRSS asks the target for its resident set, when it can tell.
func (r *run) readRSS() {
	mr, ok := r.t.(MemoryReporter)
	if !ok {
		return
	}
	rss, err := mr.RSS(r.ctx)
	if err != nil {
		r.res.Notes = append(r.res.Notes, "RSS unknown: "+err.Error())
		return
	}
	r.res.RSSBytes = rss
	if r.res.Instances > 0 {
		r.res.BytesPerInstance = float64(rss) / float64(r.res.Instances)
	}
}
