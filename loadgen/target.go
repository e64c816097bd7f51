package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Target is a system under test that runs the RS-1 functions. Implementations
// must be safe for concurrent use by many goroutines.
type Target interface {
	// Name identifies the target in reports, e.g. "inproc" or
	// "http://127.0.0.1:8080".
	Name() string
	// Location sends a rides/location event to driver with cell; it returns
	// once the event is durably accepted.
	Location(ctx context.Context, driver, cell string) error
	// Request sends a rides/request to passenger with pickup cell and waits
	// for the ride's outcome.
	Request(ctx context.Context, passenger, cell string) (Outcome, error)
	// Events returns every ride-events record, in order.
	Events(ctx context.Context) ([]RideEvent, error)
	// Driver, Passenger, Ride and Cell read one instance's state.
	Driver(ctx context.Context, id string) (DriverState, error)
	Passenger(ctx context.Context, id string) (PassengerState, error)
	Ride(ctx context.Context, id string) (RideState, error)
	Cell(ctx context.Context, id string) (CellState, error)
	// Close releases the target.
	Close() error
}

// Quiescer is implemented by targets whose messages travel between
// processes (a cluster): Quiesce returns once no message is in flight, so
// that the state read for the checks is settled. drain, which waits for
// the started rides, is not enough there: other messages (a late offer's
// answer, a driver's leave) may still be on their way.
type Quiescer interface {
	Quiesce(ctx context.Context) error
}

// Outcome is the answer to a request: the ride and its driver, or Failed.
// A refused request (the passenger already had an active ride) has an empty
// Ride and Failed set.
type Outcome struct {
	Ride   string `json:"ride"`
	Driver string `json:"driver,omitempty"`
	Failed bool   `json:"failed,omitempty"`
}

// RideEvent is one record of the ride-events egress.
type RideEvent struct {
	Kind      string `json:"kind"`
	Ride      string `json:"ride"`
	Driver    string `json:"driver"`
	Passenger string `json:"passenger"`
}

// DriverState is a driver's state; empty strings mean unset. The JSON
// names are those of the Restate peer's views.
type DriverState struct {
	Cell   string `json:"cell"`
	Joined string `json:"joined"`
	Status string `json:"status"`
	Ride   string `json:"ride"`
}

// PassengerState is a passenger's state.
type PassengerState struct {
	Ride  string `json:"ride"`
	Rides int64  `json:"rides"`
}

// RideState is a ride's state.
type RideState struct {
	Passenger string `json:"passenger"`
	Driver    string `json:"driver"`
	Cell      string `json:"cell"`
	Status    string `json:"status"`
}

// CellState is a geocell's state: the ids in its free set, in set order.
type CellState struct {
	Free []string `json:"free"`
}

// InvocationCounter is implemented by targets that can tell how many
// function invocations the engine has run so far.
type InvocationCounter interface {
	Invocations(ctx context.Context) (uint64, error)
}

// MemoryReporter is implemented by targets that can tell the engine's
// resident set size in bytes.
type MemoryReporter interface {
	RSS(ctx context.Context) (int64, error)
}

// LocationOnly is implemented by targets that serve location events only
// (the HTTP baseline): the run sends no requests and checks no invariants.
type LocationOnly interface {
	LocationOnly() bool
}

// ErrUnsupported is returned by targets for operations they do not serve.
var ErrUnsupported = errors.New("loadgen: operation not supported by this target")

// TargetFactory makes a target from the text after "name:" in a --target
// value (may be empty).
type TargetFactory func(url string) (Target, error)

var registry struct {
	sync.Mutex
	m map[string]TargetFactory
}

// RegisterTarget makes --target name[:url] construct a target with f. It
// is meant to be called from init functions of target implementations
// (e.g. the Restate peer). Registering a name twice panics.
func RegisterTarget(name string, f TargetFactory) {
	registry.Lock()
	defer registry.Unlock()
	if registry.m == nil {
		registry.m = map[string]TargetFactory{}
	}
	if _, dup := registry.m[name]; dup {
		panic("loadgen: target " + name + " registered twice")
	}
	registry.m[name] = f
}

// RegisteredTargets lists the registered target names.
func RegisteredTargets() []string {
	registry.Lock()
	defer registry.Unlock()
	var out []string
	for k := range registry.m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TargetOptions configure the built-in targets.
type TargetOptions struct {
	// Inproc holds the in-process engine's settings.
	Inproc InprocOptions
	// Admin is the admin address of an http target (state, metrics), e.g.
	// "http://127.0.0.1:8081"; empty means the ingress address.
	Admin string
	// Conns is the maximum number of HTTP connections. Default 1024.
	Conns int
}

// NewTarget makes the target named by spec: "inproc", "baseline",
// "http://host:port" (a running cmd/engine), or "name[:url]" of a target
// added with RegisterTarget (e.g. "restate:http://127.0.0.1:8080").
func NewTarget(spec string, o TargetOptions) (Target, error) {
	switch {
	case spec == "" || spec == "inproc":
		return NewInproc(o.Inproc)
	case spec == "baseline":
		return NewBaseline(o.Conns)
	case strings.HasPrefix(spec, "http://") || strings.HasPrefix(spec, "https://"):
		return NewHTTP(spec, o.Admin, o.Conns)
	}
	name, url, _ := strings.Cut(spec, ":")
	registry.Lock()
	f := registry.m[name]
	registry.Unlock()
	if f == nil {
		return nil, fmt.Errorf("loadgen: unknown target %q (built in: inproc, baseline, http://host:port; registered: %v)", spec, RegisteredTargets())
	}
	return f(url)
}
