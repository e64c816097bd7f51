package soak

import (
	"fmt"
	"time"
)

// Config is one soak run. The zero value is usable: EnsureDefaults fills
// it in.
type Config struct {
	// Engine is the cmd/engine binary (make soak builds bin/engine).
	Engine string
	// DataDir is the engine's data directory; empty means a fresh
	// temporary one, removed afterwards.
	DataDir string
	// Duration is the length of the load. Default 3m.
	Duration time.Duration
	// Calibrate is the length of the closed-loop phase that measures the
	// sustainable rate. Default 10s.
	Calibrate time.Duration
	// WarmUp bounds the phase that fills the state cache before the
	// calibration (closed loop); it ends early once the cache holds
	// WarmUpFill of the memory budget. Default 75s; negative: none.
	WarmUp     time.Duration
	WarmUpFill float64 // default 0.8
	// Factor is the offered rate over the sustainable rate. Default 10.
	Factor float64

	// Engine flags.
	MemoryBudget    int64         // --memory-budget; default 32 MiB (small enough for the warm-up to fill)
	Shards          int           // --shards; default 2
	MaxConns        int           // --max-conns; default 1024
	MaxBody         int64         // --max-body; default 4 MiB
	MaxBodyInFlight int64         // --max-body-in-flight; 0: the engine's default (16 x MaxBody)
	MaxEgressBytes  int64         // --max-egress-bytes; default 4 MiB
	MaxQueuedBytes  int64         // --max-queued-bytes; default 512 KiB
	MailboxCapacity int           // --mailbox-capacity; default 256
	ShutdownTimeout time.Duration // --shutdown-timeout; default 30s

	// Load.
	Workers          int // connections of the location senders; default 512
	DriversPerWorker int // tracked drivers each sender owns; default 500
	BatchSize        int // location messages per /batch; default 100 (a batch must fit in the lanes)
	RequestConns     int // connections of the ride requests; default 64
	RequestRate      int // ride requests offered per second; default 200
	FillRate         int // rides/touch messages per second to fresh passengers; default 8000
	FanInDrivers     int // drivers joining one geocell; default 20000
	FanInRate        int // their location writes per second; default 2000
	BigBodyConns     int // concurrent near-MaxBody POSTs; default 24
	DeadLetters      int // big dead letters seeded; default 24
	EgressReaders    int // parallel dead-letter reads; default 16
	SlowConns        int // slowloris connections (half headers, half bodies); default 64
	HalfOpenConns    int // half-open connections; default 128
	FloodEvery       time.Duration
	FloodHold        time.Duration
	FloodFactor      float64 // connections of a flood over MaxConns; default 1.25
	BadInputRate     int     // malformed requests per second; default 20

	// Probe.
	ProbeInterval time.Duration // default 75ms
	ProbeTimeout  time.Duration // an answer later than this is a failure; default 10s
	ProbeP99Bound time.Duration // pass bound of the probe's p99; default 5s
	ProbeFailures int           // probe failures allowed; default 0

	// Skip names shapes not to run (to reproduce one finding without the
	// others): request, fill, fan_in, big_body, egress, slow, half_open,
	// flood, bad_input.
	Skip map[string]bool

	// Seed makes the random choices repeatable.
	Seed int64
}

// EnsureDefaults fills in zero fields.
func (c *Config) EnsureDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Engine == "" {
		c.Engine = "bin/engine"
	}
	defd(&c.Duration, 3*time.Minute)
	defd(&c.Calibrate, 10*time.Second)
	defd(&c.WarmUp, 75*time.Second)
	if c.WarmUpFill == 0 {
		c.WarmUpFill = 0.8
	}
	if c.Factor == 0 {
		c.Factor = 10
	}
	if c.MemoryBudget == 0 {
		c.MemoryBudget = 32 << 20
	}
	def(&c.Shards, 2)
	def(&c.MaxConns, 1024)
	if c.MaxBody == 0 {
		c.MaxBody = 4 << 20
	}
	if c.MaxBodyInFlight == 0 {
		c.MaxBodyInFlight = 16 * c.MaxBody
	}
	if c.MaxEgressBytes == 0 {
		c.MaxEgressBytes = 4 << 20
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = 512 << 10
	}
	def(&c.MailboxCapacity, 256)
	defd(&c.ShutdownTimeout, 30*time.Second)
	def(&c.Workers, 512)
	def(&c.DriversPerWorker, 500)
	def(&c.BatchSize, 100)
	def(&c.RequestConns, 64)
	def(&c.RequestRate, 200)
	def(&c.FillRate, 8000)
	def(&c.FanInDrivers, 20000)
	def(&c.FanInRate, 2000)
	def(&c.BigBodyConns, 24)
	def(&c.DeadLetters, 24)
	def(&c.EgressReaders, 16)
	def(&c.SlowConns, 64)
	def(&c.HalfOpenConns, 128)
	defd(&c.FloodEvery, 30*time.Second)
	defd(&c.FloodHold, 5*time.Second)
	if c.FloodFactor == 0 {
		c.FloodFactor = 1.25
	}
	def(&c.BadInputRate, 20)
	defd(&c.ProbeInterval, 75*time.Millisecond)
	defd(&c.ProbeTimeout, 10*time.Second)
	defd(&c.ProbeP99Bound, 5*time.Second)
	if c.Seed == 0 {
		c.Seed = 1
	}
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	switch {
	case c.Duration < 5*time.Second || c.Duration > 2*time.Hour:
		return fmt.Errorf("soak: duration %v out of range 5s..2h", c.Duration)
	case c.Calibrate < time.Second || c.Calibrate > 5*time.Minute:
		return fmt.Errorf("soak: calibration %v out of range 1s..5m", c.Calibrate)
	case c.WarmUp > 10*time.Minute || c.WarmUpFill <= 0 || c.WarmUpFill > 1.5:
		return fmt.Errorf("soak: warm-up %v (at most 10m) filling %.2f of the budget (0..1.5]", c.WarmUp, c.WarmUpFill)
	case c.Factor < 1:
		return fmt.Errorf("soak: factor %v must be at least 1", c.Factor)
	case c.MaxConns < 64:
		return fmt.Errorf("soak: max-conns %d below 64", c.MaxConns)
	case c.Workers < 4 || c.Workers > c.MaxConns/2:
		return fmt.Errorf("soak: workers %d out of range 4..max-conns/2 (%d)", c.Workers, c.MaxConns/2)
	case c.MaxBody < 1<<10 || c.MaxBodyInFlight < c.MaxBody:
		return fmt.Errorf("soak: max-body %d must be at least 1 KiB and at most max-body-in-flight %d", c.MaxBody, c.MaxBodyInFlight)
	case c.ProbeP99Bound <= 0 || c.ProbeP99Bound > c.ProbeTimeout:
		return fmt.Errorf("soak: probe p99 bound %v must be positive and at most the probe timeout %v", c.ProbeP99Bound, c.ProbeTimeout)
	case c.BatchSize < 1 || c.BatchSize > c.MailboxCapacity/2:
		return fmt.Errorf("soak: batch size %d out of range 1..mailbox-capacity/2 (%d): a batch must fit in the shards' lanes", c.BatchSize, c.MailboxCapacity/2)
	case c.ProbeFailures < 0:
		return fmt.Errorf("soak: probe failures allowed must not be negative")
	}
	return nil
}

// perClient is the engine's default limit per client address.
func (c *Config) perClient() int { return max(c.MaxConns/4, 1) }

// engineArgs are the engine's flags (the listen addresses are added by
// StartEngine).
func (c *Config) engineArgs(dataDir string) []string {
	return []string{
		"--data-dir", dataDir,
		"--shards", fmt.Sprint(c.Shards),
		"--memory-budget", fmt.Sprint(c.MemoryBudget),
		"--max-conns", fmt.Sprint(c.MaxConns),
		"--max-body", fmt.Sprint(c.MaxBody),
		"--max-body-in-flight", fmt.Sprint(c.MaxBodyInFlight),
		"--max-egress-bytes", fmt.Sprint(c.MaxEgressBytes),
		"--max-queued-bytes", fmt.Sprint(c.MaxQueuedBytes),
		"--mailbox-capacity", fmt.Sprint(c.MailboxCapacity),
		"--shutdown-timeout", c.ShutdownTimeout.String(),
	}
}
