package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
)

// ScalingConfig configures the shard-scaling sweep: durable RS-1 location
// events sent in batches (engine.SendBatch) by a few producer goroutines,
// so that the load generator costs little beside the engine and the
// figure is the engine's durable throughput at each shard count.
type ScalingConfig struct {
	Shards    []int         // shard counts to run, in order
	Producers int           // goroutines sending batches (default 4)
	Batch     int           // events per SendBatch (default 256)
	Duration  time.Duration // measured window per shard count (default 10s)
	Warmup    time.Duration // unrecorded time before the window (default 2s)
	Drivers   int           // drivers the events go to (default 10,000)
	Grid      int           // grid side (default 100)
	Seed      uint64
	Progress  io.Writer // progress lines (nil: none)
}

// ScalingPoint is one shard count's result.
type ScalingPoint struct {
	Shards int `json:"shards"`
	// EventsPerS are location events acknowledged per second in the window:
	// each acknowledgement means the event's invocation ran and its effects
	// are durable in the log.
	EventsPerS float64 `json:"events_per_s"`
	// InvocationsPerS count every invocation in the window, the geocell
	// joins and leaves that a driver's move causes among them.
	InvocationsPerS float64 `json:"invocations_per_s"`
	// CPUPerEvent is the process's CPU time (engine and producers) per
	// acknowledged event in the window, in microseconds.
	CPUPerEventUs float64 `json:"cpu_per_event_us"`
	Errors        uint64  `json:"errors"`
}

func (c *ScalingConfig) defaults() error {
	if len(c.Shards) == 0 {
		return errors.New("loadgen: scaling sweep with no shard counts")
	}
	if c.Producers == 0 {
		c.Producers = 4
	}
	if c.Batch == 0 {
		c.Batch = 256
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Drivers == 0 {
		c.Drivers = 10000
	}
	if c.Grid == 0 {
		c.Grid = 100
	}
	if c.Producers < 0 || c.Batch < 0 || c.Drivers < 0 || c.Grid < 0 || c.Warmup < 0 || c.Duration < 0 {
		return fmt.Errorf("loadgen: scaling: negative setting in %+v", *c)
	}
	return nil
}

// RunScaling runs the sweep: for each shard count a fresh durable engine
// in a temporary directory, the warm-up, then the measured window.
func RunScaling(ctx context.Context, c ScalingConfig) ([]ScalingPoint, error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	var points []ScalingPoint
	for _, n := range c.Shards {
		p, err := scalingPoint(ctx, c, n)
		if err != nil {
			return points, fmt.Errorf("loadgen: scaling, %d shards: %w", n, err)
		}
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "%d shards: %.0f events/s, %.0f invocations/s, %.1f µs CPU per event, %d errors\n",
				p.Shards, p.EventsPerS, p.InvocationsPerS, p.CPUPerEventUs, p.Errors)
		}
		points = append(points, p)
	}
	return points, nil
}

// scalingProducers is the state the producers share with the sweep.
type scalingProducers struct {
	e      *engine.Engine
	c      ScalingConfig
	acked  atomic.Uint64
	errs   atomic.Uint64
	lastMu sync.Mutex
	last   error
}

func (s *scalingProducers) produce(ctx context.Context, w int, drivers, cells []string) {
	rng := rand.New(rand.NewPCG(s.c.Seed, uint64(w)))
	batch := make([]engine.Outgoing, s.c.Batch)
	msgs := make([]engine.Message, len(cells))
	for i, cell := range cells {
		msgs[i] = rides.LocationMessage(cell)
	}
	for ctx.Err() == nil {
		for i := range batch {
			batch[i] = engine.Outgoing{To: rides.DriverAddr(drivers[rng.IntN(len(drivers))]), Message: msgs[rng.IntN(len(msgs))]}
		}
		if err := s.e.SendBatch(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.errs.Add(1)
			s.lastMu.Lock()
			s.last = err
			s.lastMu.Unlock()
			time.Sleep(10 * time.Millisecond) // refused (overload): back off, as a client would
			continue
		}
		s.acked.Add(uint64(len(batch)))
	}
}

func scalingPoint(ctx context.Context, c ScalingConfig, n int) (ScalingPoint, error) {
	t, err := NewInproc(InprocOptions{Engine: engine.Options{Shards: n}, Rides: rides.Config{Grid: c.Grid}})
	if err != nil {
		return ScalingPoint{}, err
	}
	defer t.Close()
	ids := makeIDs(Config{Drivers: c.Drivers, Grid: c.Grid})
	s := &scalingProducers{e: t.Engine(), c: c}
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range c.Producers {
		wg.Go(func() { s.produce(pctx, w, ids.drivers, ids.cells) })
	}
	defer func() { stop(); wg.Wait() }()
	select {
	case <-time.After(c.Warmup):
	case <-ctx.Done():
		return ScalingPoint{}, ctx.Err()
	}
	inv0, err := t.Invocations(ctx)
	if err != nil {
		return ScalingPoint{}, err
	}
	acked0, errs0, cpu0, t0 := s.acked.Load(), s.errs.Load(), processCPU(), time.Now()
	select {
	case <-time.After(c.Duration):
	case <-ctx.Done():
		return ScalingPoint{}, ctx.Err()
	}
	acked1, errs1, cpu1, secs := s.acked.Load(), s.errs.Load(), processCPU(), time.Since(t0).Seconds()
	inv1, err := t.Invocations(ctx)
	if err != nil {
		return ScalingPoint{}, err
	}
	p := ScalingPoint{Shards: len(t.Engine().Status().Shards), Errors: errs1 - errs0,
		EventsPerS: float64(acked1-acked0) / secs, InvocationsPerS: float64(inv1-inv0) / secs}
	if acked1 > acked0 {
		p.CPUPerEventUs = (cpu1 - cpu0).Seconds() * 1e6 / float64(acked1-acked0)
	}
	if p.Errors > 0 && c.Progress != nil {
		s.lastMu.Lock()
		fmt.Fprintf(c.Progress, "%d shards: %d batches refused, the last with: %v\n", n, p.Errors, s.last)
		s.lastMu.Unlock()
	}
	return p, nil
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
