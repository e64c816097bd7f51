package shard

import (
	"sync"
	"sync/atomic"

	"github.com/shardfn/shardfn/internal/format"
)

// The running invocation, for the engine's watchdog: a function that loops
// or blocks holds its shard, and the engine must be able to say which
// address does, and since when, while it still does.
//
// The shard publishes the start time in an atomic and the address under a
// mutex only the watchdog ever contends for (it looks twice a second), so
// the cost on the invocation path is one uncontended lock.
type watch struct {
	mu    sync.Mutex
	addr  format.Address
	start atomic.Int64 // unix ns the running invocation started; 0 when none
}

// watchStart marks the start of an invocation of a at now.
func (s *Shard) watchStart(a format.Address, now int64) {
	s.watch.mu.Lock()
	s.watch.addr = a
	s.watch.mu.Unlock()
	s.watch.start.Store(now)
}

// watchEnd marks its end.
func (s *Shard) watchEnd() { s.watch.start.Store(0) }

// Running returns the address whose invocation is running on the shard and
// when it started (unix ns), if one is. Any goroutine.
func (s *Shard) Running() (format.Address, int64, bool) {
	start := s.watch.start.Load()
	if start == 0 {
		return format.Address{}, 0, false
	}
	s.watch.mu.Lock()
	a := s.watch.addr
	s.watch.mu.Unlock()
	if s.watch.start.Load() != start {
		return format.Address{}, 0, false // it ended meanwhile
	}
	return a, start, true
}
