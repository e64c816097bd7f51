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

// Config is one RS-1 run. The zero value is usable: EnsureDefaults fills it
// in with the workload's defaults.
type Config struct {
	// Duration is the measured window. Default 10s.
	Duration time.Duration
	// Warmup runs the same load, unrecorded, before the window. Default 2s;
	// negative means none.
	Warmup time.Duration
	// Rate, when > 0, makes the run open loop at Rate events per second,
	// spread over Concurrency workers; latencies are measured from the
	// intended send time. 0 means closed loop.
	Rate float64
	// Uniform makes open-loop gaps equal instead of exponential (Poisson).
	Uniform bool
	// Concurrency is the number of workers (closed loop: events in
	// flight). Default 64.
	Concurrency int
	// Drivers, Passengers and Grid size the workload. Defaults 10000,
	// 100000, 100.
	Drivers, Passengers, Grid int
	// Skew picks drivers and passengers by Zipf 0.99 instead of uniformly.
	Skew bool
	// RequestShare is the share of requests in the mix. Default 0.1;
	// negative means 0 (location events only).
	RequestShare float64
	// FinishDelay and FinishJitter must match the target's rides.Config;
	// they bound how long draining waits. Defaults 2s and 0.25.
	FinishDelay  time.Duration
	FinishJitter float64
	// RequestTimeout bounds one request (and one location). Default 5s.
	RequestTimeout time.Duration
	// DrainTimeout bounds the wait for started rides to complete after the
	// finish delay has passed. Default 30s.
	DrainTimeout time.Duration
	// Seed makes key and cell choices reproducible. Default 1.
	Seed uint64
	// Progress receives a line per second; nil means none.
	Progress io.Writer
	// Profile takes a CPU profile of this process over the measured window
	// (meaningful for in-process targets).
	Profile bool
	// NoCheck skips the invariant checks.
	NoCheck bool
}

// EnsureDefaults fills zero fields.
func (c *Config) EnsureDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	} else if c.Warmup < 0 {
		c.Warmup = 0
	}
	def(&c.Concurrency, 64)
	def(&c.Drivers, 10000)
	def(&c.Passengers, 100000)
	def(&c.Grid, 100)
	if c.RequestShare == 0 {
		c.RequestShare = 0.1
	} else if c.RequestShare < 0 {
		c.RequestShare = 0
	}
	if c.FinishDelay == 0 {
		c.FinishDelay = 2 * time.Second
	}
	if c.FinishJitter == 0 {
		c.FinishJitter = 0.25
	} else if c.FinishJitter < 0 {
		c.FinishJitter = 0
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
}

// Validate reports a configuration that cannot run.
func (c Config) Validate() error {
	switch {
	case c.Duration <= 0:
		return fmt.Errorf("loadgen: duration %v must be positive", c.Duration)
	case c.Rate < 0:
		return fmt.Errorf("loadgen: rate %v must not be negative", c.Rate)
	case c.Concurrency < 1 || c.Concurrency > 100000:
		return fmt.Errorf("loadgen: concurrency %d out of range [1, 100000]", c.Concurrency)
	case c.Drivers < 1 || c.Passengers < 1:
		return fmt.Errorf("loadgen: need at least one driver and one passenger (have %d, %d)", c.Drivers, c.Passengers)
	case c.Grid < 1 || c.Grid > 100000:
		return fmt.Errorf("loadgen: grid %d out of range [1, 100000]", c.Grid)
	case c.RequestShare > 1:
		return fmt.Errorf("loadgen: request share %v above 1", c.RequestShare)
	case c.FinishJitter > 0.95:
		return fmt.Errorf("loadgen: finish jitter %v above 0.95", c.FinishJitter)
	}
	return nil
}

// Result is what a run measured.
type Result struct {
	Target string    `json:"target"`
	Shards int       `json:"shards"`
	Start  time.Time `json:"start"`
	Config Config    `json:"-"`
	// Window is the measured window's actual length.
	Window   time.Duration `json:"-"`
	Location Latency       `json:"location"`
	Request  Latency       `json:"request"`
	// EventsPerS counts completed location and request events of the
	// window per second (errors excluded).
	EventsPerS float64 `json:"events_per_s"`
	// InvocationsPerS is the engine's function invocations per second over
	// the window; Invocations is their number (0 when unknown).
	InvocationsPerS float64  `json:"invocations_per_s"`
	Invocations     uint64   `json:"invocations"`
	Errors          int64    `json:"errors"`
	ErrorSamples    []string `json:"error_samples,omitempty"`
	// Outcomes of every answered request (warm-up included).
	Started int64 `json:"rides_started"`
	Failed  int64 `json:"rides_failed"`
	Refused int64 `json:"requests_refused"`
	// RSSBytes is the engine's resident set after the run (inproc: this
	// process); Instances the instances holding state as seen by the
	// checker; BytesPerInstance their ratio.
	RSSBytes         int64             `json:"rss_bytes"`
	Instances        int64             `json:"instances"`
	BytesPerInstance float64           `json:"bytes_per_instance"`
	Invariants       []InvariantResult `json:"invariant_results,omitempty"`
	InvariantsText   string            `json:"invariants"`
	Drained          bool              `json:"drained"`
	SeedTime         time.Duration     `json:"-"`
	DrainTime        time.Duration     `json:"-"`
	// CPUSeconds is the CPU time (user and system) this process used over
	// the measured window: the engine and the load generator for an
	// in-process target.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// Profile is a CPU profile (pprof protobuf) of the window, if asked.
	Profile []byte   `json:"-"`
	Notes   []string `json:"notes,omitempty"`
}

// ids are the precomputed instance ids of a run.
type ids struct {
	drivers, passengers, cells []string
}

func makeIDs(c Config) ids {
	var x ids
	x.drivers = make([]string, c.Drivers)
	for i := range x.drivers {
		x.drivers[i] = "d-" + strconv.Itoa(i)
	}
	x.passengers = make([]string, c.Passengers)
	for i := range x.passengers {
		x.passengers[i] = "p-" + strconv.Itoa(i)
	}
	x.cells = make([]string, 0, c.Grid*c.Grid)
	for y := 0; y < c.Grid; y++ {
		for xx := 0; xx < c.Grid; xx++ {
			x.cells = append(x.cells, rides.CellID(xx, y))
		}
	}
	return x
}

func (r *Result) logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Run drives one RS-1 run against t: seeding, warm-up, the measured
// window, draining, and the invariant checks.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	locOnly := false
	if lo, ok := t.(LocationOnly); ok && lo.LocationOnly() {
		locOnly = true
		cfg.RequestShare = 0
		cfg.NoCheck = true
	}
	res := &Result{Target: t.Name(), Config: cfg, Start: time.Now()}
	x := makeIDs(cfg)
	drivers, err := newKeyChooser(cfg.Drivers, cfg.Skew)
	if err != nil {
		return nil, err
	}
	passengers, err := newKeyChooser(cfg.Passengers, cfg.Skew)
	if err != nil {
		return nil, err
	}

	// Seeding: every driver reports once, so cells have free drivers.
	t0 := time.Now()
	if err := seed(ctx, t, cfg, x); err != nil {
		return nil, err
	}
	res.SeedTime = time.Since(t0)
	res.logf(cfg.Progress, "seeded %d drivers in %v", cfg.Drivers, res.SeedTime.Round(time.Millisecond))

	rec := newRecorder()
	var ops atomic.Int64
	var stopped atomic.Bool
	stop := func() bool { return stopped.Load() || ctx.Err() != nil }

	begin := time.Now()
	measureFrom := begin.Add(cfg.Warmup)
	until := measureFrom.Add(cfg.Duration)

	answers := make([][]Answer, cfg.Concurrency)
	var started, failed, refused atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(w)+1))
			var kind int
			var opErr error
			op := func(time.Time) {
				octx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
				defer cancel()
				cell := x.cells[r.IntN(len(x.cells))]
				if cfg.RequestShare > 0 && r.Float64() < cfg.RequestShare {
					kind = 1
					p := x.passengers[passengers.next(r)]
					o, err := t.Request(octx, p, cell)
					opErr = err
					if err == nil {
						answers[w] = append(answers[w], Answer{Passenger: p, Outcome: o})
						switch {
						case o.Ride == "":
							refused.Add(1)
						case o.Failed:
							failed.Add(1)
						default:
							started.Add(1)
						}
					}
					return
				}
				kind = 0
				opErr = t.Location(octx, x.drivers[drivers.next(r)], cell)
			}
			done := func(from, end time.Time) {
				ops.Add(1)
				if opErr != nil {
					if !from.Before(measureFrom) {
						rec.fail(kind, opErr)
					}
					if errors.Is(opErr, context.Canceled) {
						return
					}
					time.Sleep(time.Millisecond) // do not spin on an overloaded target
					return
				}
				if !from.Before(measureFrom) {
					rec.record(w, kind, end.Sub(from))
				}
			}
			if cfg.Rate > 0 {
				s := newSchedule(begin, cfg.Rate/float64(cfg.Concurrency), !cfg.Uniform, r)
				openLoop(realClock{}, s, until, stop, op, done)
			} else {
				closedLoop(realClock{}, until, stop, op, done)
			}
		}(w)
	}

	// Window bookkeeping: invocations and the CPU profile.
	var inv0, inv1 uint64
	var cpu0, cpu1 time.Duration
	var invErr error
	var prof bytes.Buffer
	profiling := false
	window := make(chan struct{})
	go func() {
		defer close(window)
		realClock{}.SleepUntil(measureFrom)
		if ic, ok := t.(InvocationCounter); ok {
			inv0, invErr = ic.Invocations(ctx)
		}
		cpu0 = SelfCPU()
		if cfg.Profile {
			if err := pprof.StartCPUProfile(&prof); err == nil {
				profiling = true
			} else {
				res.Notes = append(res.Notes, "CPU profile not taken: "+err.Error())
			}
		}
		realClock{}.SleepUntil(until)
		cpu1 = SelfCPU()
		if profiling {
			pprof.StopCPUProfile()
		}
		if ic, ok := t.(InvocationCounter); ok && invErr == nil {
			inv1, invErr = ic.Invocations(ctx)
		}
	}()

	// Progress, once a second.
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := int64(0)
		for {
			select {
			case <-window:
				return
			case now := <-tick.C:
				n := ops.Load()
				phase := "warmup"
				if !now.Before(measureFrom) {
					phase = "measure"
				}
				line := fmt.Sprintf("%6.1fs %-7s %8d ev/s", now.Sub(begin).Seconds(), phase, n-last)
				for k, name := range kinds {
					h := rec.merged(k)
					if h.TotalCount() > 0 {
						line += fmt.Sprintf("  %s p99 %.2fms", name, float64(h.ValueAtQuantile(99))/1000)
					}
				}
				line += fmt.Sprintf("  errors %d", rec.totalErrors())
				last = n
				res.logf(cfg.Progress, "%s", line)
			}
		}
	}()

	<-window
	stopped.Store(true)
	wg.Wait()
	<-progDone
	res.Window = until.Sub(measureFrom)
	res.CPUSeconds = (cpu1 - cpu0).Seconds()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	locH, reqH := rec.merged(0), rec.merged(1)
	res.Location = summarise(locH, rec.errors[0].Load(), res.Window)
	res.Request = summarise(reqH, rec.errors[1].Load(), res.Window)
	res.EventsPerS = res.Location.PerS + res.Request.PerS
	res.Errors = rec.totalErrors()
	res.ErrorSamples = rec.samples
	res.Started, res.Failed, res.Refused = started.Load(), failed.Load(), refused.Load()
	if _, ok := t.(InvocationCounter); ok {
		if invErr != nil {
			res.Notes = append(res.Notes, "invocations unknown: "+invErr.Error())
		} else if inv1 >= inv0 {
			res.Invocations = inv1 - inv0
			res.InvocationsPerS = float64(res.Invocations) / res.Window.Seconds()
		}
	}
	if profiling {
		res.Profile = prof.Bytes()
	}

	var all []Answer
	for _, a := range answers {
		all = append(all, a...)
	}
	if !locOnly {
		t1 := time.Now()
		events, drained, err := drain(ctx, t, cfg, all)
		res.DrainTime = time.Since(t1)
		res.Drained = drained
		if err != nil {
			return nil, fmt.Errorf("loadgen: draining: %w", err)
		}
		res.logf(cfg.Progress, "drained in %v (%d ride events, complete: %v)", res.DrainTime.Round(time.Millisecond), len(events), drained)
		if !cfg.NoCheck {
			snap, err := gather(ctx, t, cfg, x, all, events)
			if err != nil {
				return nil, fmt.Errorf("loadgen: reading state for the checks: %w", err)
			}
			res.Invariants = Check(snap)
			res.Instances = countInstances(snap)
		}
	}
	res.InvariantsText = InvariantsSummary(res.Invariants)
	if mr, ok := t.(MemoryReporter); ok {
		if rss, err := mr.RSS(ctx); err == nil {
			res.RSSBytes = rss
			if res.Instances > 0 {
				res.BytesPerInstance = float64(rss) / float64(res.Instances)
			}
		} else {
			res.Notes = append(res.Notes, "RSS unknown: "+err.Error())
		}
	}
	return res, nil
}

func seed(ctx context.Context, t Target, cfg Config, x ids) error {
	r := rand.New(rand.NewPCG(cfg.Seed, 0))
	cells := make([]string, len(x.drivers))
	for i := range cells {
		cells[i] = x.cells[r.IntN(len(x.cells))]
	}
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < min(cfg.Concurrency, 256); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(x.drivers) || ctx.Err() != nil {
					return
				}
				var err error
				for try := 0; try < 20; try++ {
					octx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
					err = t.Location(octx, x.drivers[i], cells[i])
					cancel()
					if err == nil {
						break
					}
					time.Sleep(time.Duration(try+1) * 5 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("loadgen: seeding driver %s: %w", x.drivers[i], err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// drain waits for the finish delay to pass and then until every started
// ride (by answer or by record) has its ride-completed record, at most
// DrainTimeout; it returns the final ride-events.
func drain(ctx context.Context, t Target, cfg Config, answers []Answer) ([]RideEvent, bool, error) {
	maxDelay := time.Duration(float64(cfg.FinishDelay) * (1 + cfg.FinishJitter))
	select {
	case <-time.After(maxDelay + 200*time.Millisecond):
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	deadline := time.Now().Add(cfg.DrainTimeout)
	for {
		events, err := t.Events(ctx)
		if err != nil {
			return nil, false, err
		}
		want := map[string]bool{}
		for _, a := range answers {
			if a.Outcome.Ride != "" && !a.Outcome.Failed {
				want[a.Outcome.Ride] = true
			}
		}
		for _, e := range events {
			if e.Kind == "ride-started" {
				want[e.Ride] = true
			}
		}
		for _, e := range events {
			if e.Kind == "ride-completed" {
				delete(want, e.Ride)
			}
		}
		if len(want) == 0 {
			return events, true, nil
		}
		if time.Now().After(deadline) {
			return events, false, nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// gather reads the state the checker needs, with parallel reads.
func gather(ctx context.Context, t Target, cfg Config, x ids, answers []Answer, events []RideEvent) (Snapshot, error) {
	s := Snapshot{Answers: answers, Events: events,
		Drivers: map[string]DriverState{}, Passengers: map[string]PassengerState{},
		Rides: map[string]RideState{}, Cells: map[string]CellState{}}
	var mu sync.Mutex
	par := func(list []string, read func(id string) error) error {
		var next atomic.Int64
		var firstErr error
		var wg sync.WaitGroup
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(list) {
						return
					}
					if err := read(list[i]); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		return firstErr
	}
	if err := par(x.drivers, func(id string) error {
		d, err := t.Driver(ctx, id)
		if err != nil {
			return fmt.Errorf("driver %s: %w", id, err)
		}
		mu.Lock()
		if d != (DriverState{}) {
			s.Drivers[id] = d
		}
		mu.Unlock()
		return nil
	}); err != nil {
		return s, err
	}
	if err := par(x.cells, func(id string) error {
		c, err := t.Cell(ctx, id)
		if err != nil {
			return fmt.Errorf("cell %s: %w", id, err)
		}
		if len(c.Free) > 0 {
			mu.Lock()
			s.Cells[id] = c
			mu.Unlock()
		}
		return nil
	}); err != nil {
		return s, err
	}
	rideSet := map[string]bool{}
	passSet := map[string]bool{}
	for _, a := range answers {
		if a.Outcome.Ride != "" {
			rideSet[a.Outcome.Ride] = true
		}
		passSet[a.Passenger] = true
	}
	for _, e := range events {
		rideSet[e.Ride] = true
		passSet[e.Passenger] = true
	}
	for _, d := range s.Drivers {
		if d.Ride != "" {
			rideSet[d.Ride] = true
		}
	}
	if err := par(sortedKeys(rideSet), func(id string) error {
		r, err := t.Ride(ctx, id)
		if err != nil {
			return fmt.Errorf("ride %s: %w", id, err)
		}
		mu.Lock()
		s.Rides[id] = r
		if r.Passenger != "" {
			passSet[r.Passenger] = true
		}
		mu.Unlock()
		return nil
	}); err != nil {
		return s, err
	}
	if err := par(sortedKeys(passSet), func(id string) error {
		p, err := t.Passenger(ctx, id)
		if err != nil {
			return fmt.Errorf("passenger %s: %w", id, err)
		}
		mu.Lock()
		s.Passengers[id] = p
		mu.Unlock()
		return nil
	}); err != nil {
		return s, err
	}
	return s, nil
}

func countInstances(s Snapshot) int64 {
	n := len(s.Drivers) + len(s.Cells) + len(s.Rides)
	for _, p := range s.Passengers {
		if p != (PassengerState{}) {
			n++
		}
	}
	return int64(n)
}
