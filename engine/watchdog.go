package engine

import (
	"time"
)

// SlowInvocation is an invocation that has been running longer than
// Options.SlowInvocation: a function that loops or blocks holds its shard,
// and every address of that shard waits behind it.
type SlowInvocation struct {
	Shard   int
	Address Address
	Since   time.Time
}

// SlowInvocations returns the invocations running longer than
// Options.SlowInvocation now. Safe for concurrent use; cheap.
func (e *Engine) SlowInvocations() []SlowInvocation {
	var out []SlowInvocation
	now := e.now()
	for i, s := range e.shards {
		if a, start, ok := s.Running(); ok && now-start >= int64(e.opts.SlowInvocation) {
			out = append(out, SlowInvocation{Shard: i, Address: a, Since: time.Unix(0, start)})
		}
	}
	return out
}

// runWatchdog logs each slow invocation once, when it passes the limit,
// and keeps the gauge of slow invocations current.
func (e *Engine) runWatchdog() {
	t := time.NewTicker(watchdogInterval)
	defer t.Stop()
	reported := make([]int64, len(e.shards)) // start time reported per shard
	for {
		select {
		case <-e.closing:
			return
		case <-t.C:
		}
		slow := e.SlowInvocations()
		e.metrics.slowNow.Set(float64(len(slow)))
		for _, si := range slow {
			if reported[si.Shard] == si.Since.UnixNano() {
				continue
			}
			reported[si.Shard] = si.Since.UnixNano()
			e.metrics.slowTotal.Inc()
			e.logger.Warn("invocation running long: its shard runs nothing else meanwhile",
				"shard", si.Shard, "address", si.Address.String(), "running_for", time.Since(si.Since).Round(time.Millisecond).String())
		}
	}
}

// watchdogInterval is how often the watchdog looks.
const watchdogInterval = 500 * time.Millisecond
