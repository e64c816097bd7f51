package kafka

import (
	"context"
	"log/slog"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// Options tune the Kafka runner. The zero value is usable.
type Options struct {
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, receives the metrics (register its Collectors);
	// otherwise they are kept unregistered.
	Metrics *Metrics
	// CommitInterval is how often an ingress records its partitions'
	// positions in the engine and commits them to its group, and how often
	// at-least-once and none egresses commit their shipped position.
	// Default 1s.
	CommitInterval time.Duration
	// BatchRecords is the most records of one partition handed to the
	// engine in one SendBatch. Default 1000.
	BatchRecords int
	// MaxPendingRecords and MaxPendingBytes bound the records an ingress
	// has fetched that are not yet durable in the engine (all its
	// partitions): at the bound it stops polling, so the client stops
	// fetching, until the engine takes records. Defaults 16 *
	// BatchRecords and 64 MiB.
	MaxPendingRecords int
	MaxPendingBytes   int64
	// EgressBatch is the most egress records shipped in one transaction
	// (or produce batch). Default 1000.
	EgressBatch int
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.CommitInterval <= 0 {
		o.CommitInterval = time.Second
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = 1000
	}
	if o.MaxPendingRecords <= 0 {
		o.MaxPendingRecords = 16 * o.BatchRecords
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 64 << 20
	}
	if o.EgressBatch <= 0 {
		o.EgressBatch = 1000
	}
}

// Runner runs the Kafka ingresses and egresses of a module against an
// open engine (which must have the Specs registered).
type Runner struct {
	Ingresses []*Ingress
	Egresses  []*Egress
}

// Start starts every ingress and egress of cfg. It does not wait for Kafka:
// clients connect in the background and retry.
func Start(eng *engine.Engine, cfg *Config, opts Options) (*Runner, error) {
	opts.defaults()
	known := knownTypes(eng)
	r := &Runner{}
	for _, spec := range cfg.Ingresses {
		in, err := newIngress(spec, eng, opts, opts.Metrics, known)
		if err != nil {
			r.Close(context.Background())
			return nil, err
		}
		r.Ingresses = append(r.Ingresses, in)
	}
	for _, spec := range cfg.Egresses {
		r.Egresses = append(r.Egresses, newEgress(spec, eng, opts, opts.Metrics))
	}
	return r, nil
}

// Close stops the ingresses (waiting up to ctx for batches the engine
// accepted, then recording and committing their positions), then the
// egresses. Call it before closing the engine.
func (r *Runner) Close(ctx context.Context) {
	for _, in := range r.Ingresses {
		in.Close(ctx)
	}
	for _, e := range r.Egresses {
		e.Close()
	}
}

// knownTypes answers whether a function type is registered (exactly, or by
// a remote namespace pattern).
func knownTypes(eng *engine.Engine) func(FunctionType) bool {
	exact := map[FunctionType]bool{}
	wild := map[string]bool{}
	for _, f := range eng.Functions() {
		if f.Type == "*" {
			wild[f.Namespace] = true
		} else {
			exact[FunctionType{f.Namespace, f.Type}] = true
		}
	}
	return func(t FunctionType) bool { return exact[t] || wild[t.Namespace] }
}
