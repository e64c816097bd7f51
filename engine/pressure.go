package engine

import (
	"fmt"

	"github.com/shardfn/shardfn/shard"
)

// Admission under pressure. Memory stays within its bounds because ingress,
// the source of all work, is refused (ErrOverloaded: HTTP 503 with
// Retry-After, Kafka ingress pauses) before any of them is passed:
//
//   - a shard's ingress lane holds at most MailboxCapacity messages and its
//     share of MaxQueuedBytes;
//   - a shard holds (queued at instances, in remote calls, waiting for a
//     peer's lane, delayed) at most its share of MaxQueuedBytes: messages
//     functions send are never refused, so the bound is kept by refusing
//     new ingress while it is passed;
//   - the state cache may grow past its budget only while the store has not
//     applied the log (dirty state cannot be evicted): past 1.5 times the
//     budget, ingress for that shard is refused;
//   - the applier may lag the durable log by at most MaxApplierLag bytes,
//     which also bounds the log kept past the last checkpoint.
//
// Each check is a few atomic loads on the ingress path.

// pressure says why ingress for shard s must wait, or nil.
func (e *Engine) pressure(s *shard.Shard) error {
	if lag := e.wal.Durable() - e.ap.applied.Load(); lag > uint64(e.opts.MaxApplierLag) && e.wal.Durable() > e.ap.applied.Load() {
		e.metrics.refused("applier_lag")
		return fmt.Errorf("%w: the store is %d MiB behind the log (limit %d MiB)", ErrOverloaded, lag>>20, e.opts.MaxApplierLag>>20)
	}
	if q := s.QueuedBytes(); q > e.opts.MaxQueuedBytes/int64(len(e.shards)) {
		e.metrics.refused("queued_bytes")
		return fmt.Errorf("%w: shard %d holds %d KiB of messages (limit %d KiB)", ErrOverloaded, s.Index(), q>>10, e.opts.MaxQueuedBytes/int64(len(e.shards))>>10)
	}
	if s.ArenaOverBudget() {
		e.metrics.refused("state_cache")
		return fmt.Errorf("%w: shard %d's state cache is past its budget with state the store has not applied yet", ErrOverloaded, s.Index())
	}
	return nil
}
