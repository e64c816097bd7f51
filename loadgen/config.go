package loadgen

import (
	"cmp"
	"fmt"
	"io"
	"time"
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
	setDefault(&c.Duration, 10*time.Second)
	setDefaultOrNone(&c.Warmup, 2*time.Second)
	setDefault(&c.Concurrency, 64)
	setDefault(&c.Drivers, 10000)
	setDefault(&c.Passengers, 100000)
	setDefault(&c.Grid, 100)
	setDefaultOrNone(&c.RequestShare, 0.1)
	setDefault(&c.FinishDelay, 2*time.Second)
	setDefaultOrNone(&c.FinishJitter, 0.25)
	setDefault(&c.RequestTimeout, 5*time.Second)
	setDefault(&c.DrainTimeout, 30*time.Second)
	setDefault(&c.Seed, 1)
}

// setDefault sets *p to def when it is zero.
func setDefault[T cmp.Ordered](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// setDefaultOrNone sets *p to def when it is zero and to zero when it is
// negative (a negative value asks for none).
func setDefaultOrNone[T int | float64 | time.Duration](p *T, def T) {
	switch {
	case *p == 0:
		*p = def
	case *p < 0:
		*p = 0
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
	// Profile is a CPU profile (pprof protobuf) of the window, if asked.
	Profile []byte   `json:"-"`
	Notes   []string `json:"notes,omitempty"`
}
