package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/shard"
	"github.com/shardfn/shardfn/store"
)

// Engine runs function instances on shards. It is safe for concurrent use.
// Open makes one; Close ends it.
//
// The files of this package follow its jobs: open.go (opening and
// recovery), ingress.go (Send, SendBatch, Request), reads.go (egress and
// state reads), requests.go (the request table), applier.go (the log into
// the store, checkpoints), ids.go (message ids), handler.go (the shards'
// view of the engine: invocations and remote calls), registry.go (function
// types), options.go.
type Engine struct {
	opts    Options
	logger  *slog.Logger
	reg     *registry
	shards  []*shard.Shard
	wal     logDevice
	st      store.Store
	ap      *applier
	ids     *idAllocator
	metrics *metrics
	watch   *storageWatch
	tr      *tracing      // nil: tracing off (tracing.go)
	cl      *clusterState // nil: single node (cluster.go)

	requests requestTable
	keys     keyTable

	closed    atomic.Bool
	closing   chan struct{} // closed by Close: remote calls stop retrying (RemoteBatch.Closing)
	ready     atomic.Bool
	failErr   atomic.Pointer[error]
	inflight  sync.WaitGroup // ingress calls admitted and still pushing
	closeOnce sync.Once
	closeErr  error

	// applier signalling (applier.go)
	apWake   chan struct{}
	apStop   chan struct{}
	replayed bool // recovery replayed log records: the applier checkpoints first
	apDone   chan struct{}
	ckptReq  chan chan error
	egressMu sync.Mutex
	egressCh chan struct{} // closed and replaced when egress records are applied

	// beforeCheckpoint, set by the simulator (manual mode), runs between the
	// applier's catch-up and its checkpoint: what the log's flusher, which
	// runs concurrently in a real engine, may do in that window.
	beforeCheckpoint func()

	// overloadErr holds one preallocated error per shard, so that refusing
	// a message under overload allocates nothing.
	overloadErr []error

	recovery RecoveryStats
}

// RecoveryStats describe the last Open.
type RecoveryStats struct {
	// Records and Bytes replayed from the log after the checkpoint.
	Records uint64
	Bytes   uint64
	// Pending and Timers restored.
	Pending, Timers int
	// Duration of the whole Open.
	Duration time.Duration
}

// Recovery returns the figures of the recovery done by Open.
func (e *Engine) Recovery() RecoveryStats { return e.recovery }

// now is the engine's clock in unix nanoseconds.
func (e *Engine) now() int64 { return e.opts.Clock().UnixNano() }

func (e *Engine) shardFor(a Address) *shard.Shard {
	return e.shards[format.ShardOf(format.KeyGroup(a.Hash()), len(e.shards))]
}

// onDurable is called by the log after each sync.
func (e *Engine) onDurable() {
	select {
	case e.apWake <- struct{}{}:
	default:
	}
	for _, s := range e.shards {
		s.NotifyDurable()
	}
}

func (e *Engine) failStop(err error) {
	if e.failErr.CompareAndSwap(nil, &err) {
		if errors.Is(err, ErrAborted) { // cluster mode: the node opens a new engine
			e.logger.Info("engine discarded after its cluster transaction ended without a commit", "err", err)
			return
		}
		e.logger.Error("engine failed-stop: acknowledging nothing more; restart to recover", "err", err)
	}
}

// Err is the failed-stop cause, if the engine stopped accepting writes.
func (e *Engine) Err() error {
	if p := e.failErr.Load(); p != nil {
		return fmt.Errorf("%w: %v", ErrFailed, *p)
	}
	if err := e.wal.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	for _, s := range e.shards {
		if err := s.Err(); err != nil {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
	}
	return nil
}

// Ready reports whether the engine has recovered and accepts messages.
func (e *Engine) Ready() bool { return e.ready.Load() && !e.closed.Load() && e.Err() == nil }

// Options returns the effective options.
func (e *Engine) Options() Options { return e.opts }

// quiescent reports whether no message is queued, in flight between
// shards or waiting for durability anywhere, and every record appended is
// durable.
func (e *Engine) quiescent() bool {
	var consumed, produced uint64
	for _, s := range e.shards {
		consumed += s.ConsumedCount()
	}
	for _, s := range e.shards {
		produced += s.ProducedCount()
	}
	if consumed != produced {
		return false
	}
	durable := e.wal.Durable()
	for _, s := range e.shards {
		if s.Unreleased() > 0 || s.Mailbox().Len() > 0 {
			return false
		}
		// What processed messages wrote is durable too, even where no
		// acknowledgement waits for it (SendAsync, restored messages).
		if s.LastAppended() > durable {
			return false
		}
	}
	return true
}

// Drain waits until the engine is quiescent: every accepted message and
// every message sent by functions processed (delayed messages still
// pending are not waited for). For tests and benchmarks.
func (e *Engine) Drain(ctx context.Context) error {
	stable := 0
	for stable < 3 {
		if e.quiescent() {
			stable++
		} else {
			stable = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if err := e.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Close stops intake, drains in-flight work, checkpoints and closes. Delayed
// messages that are not yet due stay durable and fire after the next Open.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		e.inflight.Wait()
		close(e.closing)    // remote calls that are failing give up their batches (ErrAbandoned)
		if !e.opts.manual { // the simulator drains and stops by itself
			ctx, cancel := context.WithTimeout(context.Background(), e.opts.DrainTimeout)
			if err := e.Drain(ctx); err != nil && e.Err() == nil {
				e.logger.Warn("close: drain did not finish", "err", err)
			}
			cancel()
			for i, s := range e.shards {
				if !s.Stop(min(shardStopTimeout, e.opts.DrainTimeout)) {
					a, start, _ := s.Running()
					e.logger.Error("close: a shard did not stop: an invocation holds it", "shard", i,
						"address", a.String(), "running_for", time.Since(time.Unix(0, start)).Round(time.Millisecond).String())
				}
			}
			close(e.apStop)
			<-e.apDone
		}
		var errs []error
		if e.Err() == nil && e.opts.DataDir != "" {
			if _, err := e.ap.catchUp(); err != nil {
				errs = append(errs, err)
			} else if err := e.ap.checkpoint(); err != nil {
				errs = append(errs, err)
			}
		}
		e.requests.closeAll()
		if err := e.wal.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := e.st.Close(); err != nil {
			errs = append(errs, err)
		}
		e.closeErr = errors.Join(errs...)
		e.logger.Info("engine closed", "err", e.closeErr)
	})
	return e.closeErr
}

// shardStopTimeout bounds how long Close waits for each shard to stop.
const shardStopTimeout = 5 * time.Second

// Collectors returns the engine's Prometheus collectors.
func (e *Engine) Collectors() []prometheus.Collector { return e.metrics.collectors() }
