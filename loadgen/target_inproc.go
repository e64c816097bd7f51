package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
)

// InprocOptions configure the in-process engine target.
type InprocOptions struct {
	// Engine are the engine options. An empty DataDir gets a fresh
	// temporary directory (durable, real WAL) that Close removes; set
	// Memory to run without a data directory.
	Engine engine.Options
	// Memory runs the engine with no data directory (nothing durable).
	Memory bool
	// Rides configures the RS-1 functions.
	Rides rides.Config
}

// Inproc is the in-process target: a shardfn engine opened inside the load
// generator with rides.Specs. Safe for concurrent use.
type Inproc struct {
	e       *engine.Engine
	tmpDir  string
	reg     *prometheus.Registry
	dataDir string
}

var (
	_ Target            = (*Inproc)(nil)
	_ InvocationCounter = (*Inproc)(nil)
	_ MemoryReporter    = (*Inproc)(nil)
)

// NewInproc opens an engine with the RS-1 functions.
func NewInproc(o InprocOptions) (*Inproc, error) {
	specs, err := rides.NewSpecs(o.Rides)
	if err != nil {
		return nil, err
	}
	return openInproc(o, specs)
}

func (t *Inproc) removeTmp() {
	if t.tmpDir != "" {
		os.RemoveAll(t.tmpDir)
	}
}

// Engine returns the engine (for scenarios that drive it directly).
func (t *Inproc) Engine() *engine.Engine { return t.e }

// DataDir returns the engine's data directory ("" in memory).
func (t *Inproc) DataDir() string { return t.dataDir }

// Name implements Target.
func (t *Inproc) Name() string { return "inproc" }

// Location implements Target.
func (t *Inproc) Location(ctx context.Context, driver, cell string) error {
	_, err := t.e.Send(ctx, rides.DriverAddr(driver), rides.LocationMessage(cell))
	return err
}

// Request implements Target.
func (t *Inproc) Request(ctx context.Context, passenger, cell string) (Outcome, error) {
	m, err := t.e.Request(ctx, rides.PassengerAddr(passenger), rides.RequestMessage(cell))
	if err != nil {
		return Outcome{}, err
	}
	if m.Type != rides.MsgOutcome {
		return Outcome{}, fmt.Errorf("loadgen: reply of type %q, want %s", m.Type, rides.MsgOutcome)
	}
	o, err := rides.DecodeOutcome(m.Value)
	return Outcome{Ride: o.Ride, Driver: o.Driver, Failed: o.Failed}, err
}

// Events implements Target.
func (t *Inproc) Events(ctx context.Context) ([]RideEvent, error) {
	return ReadEvents(func(from uint64) ([]engine.EgressRecord, error) {
		return t.e.ReadEgress(ctx, rides.EgressName, from, 10000, 0, 0)
	})
}

// ReadEvents reads every ride-events record through read (one page of
// records from an offset; an empty page ends), in order.
func ReadEvents(read func(from uint64) ([]engine.EgressRecord, error)) ([]RideEvent, error) {
	var out []RideEvent
	from := uint64(0)
	for {
		recs, err := read(from)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return out, nil
		}
		for _, r := range recs {
			e, err := rides.DecodeEvent(r.Message.Value)
			if err != nil {
				return nil, fmt.Errorf("loadgen: egress record %d: %w", r.Offset, err)
			}
			out = append(out, RideEvent(e))
			from = r.Offset + 1
		}
	}
}

// Driver implements Target.
func (t *Inproc) Driver(ctx context.Context, id string) (DriverState, error) {
	s, err := readState(ctx, t.e, rides.DriverAddr(id), rides.DecodeDriver)
	return DriverState(s), err
}

// Passenger implements Target.
func (t *Inproc) Passenger(ctx context.Context, id string) (PassengerState, error) {
	s, err := readState(ctx, t.e, rides.PassengerAddr(id), rides.DecodePassenger)
	return PassengerState{Ride: s.Ride, Rides: s.Rides}, err
}

// Ride implements Target.
func (t *Inproc) Ride(ctx context.Context, id string) (RideState, error) {
	s, err := readState(ctx, t.e, rides.RideAddr(id), rides.DecodeRide)
	return RideState{Passenger: s.Passenger, Driver: s.Driver, Cell: s.Cell, Status: s.Status}, err
}

// Cell implements Target.
func (t *Inproc) Cell(ctx context.Context, id string) (CellState, error) {
	s, err := readState(ctx, t.e, rides.CellAddr(id), rides.DecodeCell)
	return CellState(s), err
}

// readState reads addr's state from e and decodes it.
func readState[S any](ctx context.Context, e *engine.Engine, addr engine.Address, decode func([]engine.StateValue) (S, error)) (S, error) {
	vs, err := e.State(ctx, addr)
	if err != nil {
		var zero S
		return zero, err
	}
	return decode(vs)
}

// Invocations implements InvocationCounter: the sum of the engine's
// shardfn_invocations_total counter.
func (t *Inproc) Invocations(ctx context.Context) (uint64, error) {
	mfs, err := t.reg.Gather()
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "shardfn_invocations_total" {
			continue
		}
		found = true
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			} else if u := m.GetUntyped(); u != nil {
				sum += u.GetValue()
			}
		}
	}
	if !found {
		return 0, errors.New("loadgen: engine exposes no shardfn_invocations_total")
	}
	return uint64(sum), nil
}

// RSS implements MemoryReporter: this process's VmRSS (engine and load
// generator together).
func (t *Inproc) RSS(ctx context.Context) (int64, error) { return SelfRSS() }

// Close implements Target: closes the engine and removes a temporary data
// directory.
func (t *Inproc) Close() error {
	done := make(chan error, 1)
	go func() { done <- t.e.Close() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		err = errors.New("loadgen: engine Close did not return within a minute")
	}
	t.removeTmp()
	return err
}
