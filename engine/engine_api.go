package engine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The public methods of Engine. Every method is safe for concurrent use.
//
//	Open(opts Options, specs ...FunctionSpec) (*Engine, error)
//	  Opens (and recovers) the engine in opts.DataDir and starts its shards.
//
//	(*Engine).Send(ctx, to Address, msg Message) (id uint64, err error)
//	  Accepts one message; returns once the invocation that consumed it is
//	  durable (output commit), or with ErrOverloaded/ErrClosed/ErrFailed or
//	  a validation error (ErrUnknownType, ErrBadAddress, ErrTooLarge, ...).
//
//	(*Engine).SendBatch(ctx, msgs []Outgoing) error
//	  Accepts many messages; returns once all are durable. On error some
//	  may have been accepted (each at most once).
//
//	(*Engine).Request(ctx, to Address, msg Message) (Message, error)
//	  Sends msg and waits for the Reply of the chain it starts, up to ctx's
//	  deadline (ErrNoReply); the message is still processed exactly once.
//
//	(*Engine).ReadEgress(ctx, name string, from uint64, max int, wait time.Duration) ([]EgressRecord, error)
//	  Reads durable egress records from offset from; with wait > 0 it
//	  long-polls until at least one record exists or wait passes.
//
//	(*Engine).State(ctx, addr Address) ([]StateValue, error)
//	  Returns the instance's current state values (committed view).
//
//	(*Engine).Checkpoint() error
//	  Takes a checkpoint now.
//
//	(*Engine).Ready() bool ; (*Engine).Err() error
//	  Ready after recovery and before Close; Err is the failed-stop cause.
//
//	(*Engine).Collectors() []prometheus.Collector
//	  The engine's metrics, for registration by the server.
//
//	(*Engine).Options() Options
//	  The effective options.
//
//	(*Engine).Close() error
//	  Stops intake, drains in-flight work, checkpoints and closes.
var _ = []any{
	(*Engine).Send, (*Engine).SendBatch, (*Engine).Request, (*Engine).ReadEgress,
	(*Engine).State, (*Engine).Checkpoint, (*Engine).Ready, (*Engine).Err,
	(*Engine).Collectors, (*Engine).Options, (*Engine).Close, Open,
}

var (
	_ func(context.Context, Address, Message) (uint64, error)                           = (*Engine)(nil).Send
	_ func(context.Context, []Outgoing) error                                           = (*Engine)(nil).SendBatch
	_ func(context.Context, Address, Message) (Message, error)                          = (*Engine)(nil).Request
	_ func(context.Context, string, uint64, int, time.Duration) ([]EgressRecord, error) = (*Engine)(nil).ReadEgress
	_ func(context.Context, Address) ([]StateValue, error)                              = (*Engine)(nil).State
	_ func() []prometheus.Collector                                                     = (*Engine)(nil).Collectors
)
