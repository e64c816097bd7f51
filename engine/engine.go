package engine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Engine runs function instances on shards. It is safe for concurrent use.
// Open makes one; Close ends it.
type Engine struct {
	opts Options
}

// Open opens the engine. (Implementation in progress.)
func Open(opts Options, specs ...FunctionSpec) (*Engine, error) { return nil, ErrClosed }

func (e *Engine) Send(ctx context.Context, to Address, msg Message) (uint64, error) {
	return 0, ErrClosed
}
func (e *Engine) SendBatch(ctx context.Context, msgs []Outgoing) error { return ErrClosed }
func (e *Engine) Request(ctx context.Context, to Address, msg Message) (Message, error) {
	return Message{}, ErrClosed
}
func (e *Engine) ReadEgress(ctx context.Context, name string, from uint64, max int, wait time.Duration) ([]EgressRecord, error) {
	return nil, ErrClosed
}
func (e *Engine) State(ctx context.Context, addr Address) ([]StateValue, error) {
	return nil, ErrClosed
}
func (e *Engine) Checkpoint() error                  { return ErrClosed }
func (e *Engine) Ready() bool                        { return false }
func (e *Engine) Err() error                         { return nil }
func (e *Engine) Collectors() []prometheus.Collector { return nil }
func (e *Engine) Options() Options                   { return e.opts }
func (e *Engine) Close() error                       { return nil }
