package engine

import "fmt"

// laneHeadroom: Overloaded reports a shard whose ingress lane has less
// than 1/laneHeadroom of its slots or bytes free, as well as one refused
// by pressure. A request of many messages (a batch of hundreds) would
// almost surely not fit such a lane, and the lane of an overloaded shard
// is refilled by single messages as fast as it drains: without the
// headroom, batches would be parsed whole only to be refused.
const laneHeadroom = 8

// Overloaded reports whether ingress is being refused now, or as good as
// refused, for some shard (an ErrOverloaded naming the reason) or nil:
// pressure (see pressure.go), or an ingress lane with less than an eighth
// of its room free. It reserves nothing and a nil answer promises nothing:
// Send and SendBatch still decide. A front end asks it before reading and
// parsing a request whose messages may go to any shard (an HTTP batch, a
// big body), so that under overload a refusal costs no parsing and does
// not take the CPU the shards need.
func (e *Engine) Overloaded() error {
	for _, s := range e.shards {
		if err := e.pressure(s); err != nil {
			return err
		}
		mb := s.Mailbox()
		slots, bytes := mb.SharedFree()
		if slots < mb.LaneCap()/laneHeadroom || (mb.SharedBound() > 0 && bytes < mb.SharedBound()/laneHeadroom) {
			e.metrics.refused("mailbox")
			return fmt.Errorf("%w: shard %d's ingress lane is nearly full (it holds at most %d messages and %d KiB)",
				ErrOverloaded, s.Index(), mb.LaneCap(), mb.SharedBound()>>10)
		}
	}
	return nil
}
