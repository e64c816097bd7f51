package loadgen

import (
	"math/rand/v2"
	"time"
)

// schedule yields the intended send times of one open-loop worker: events
// at rate per second from start, with exponential gaps (a Poisson process)
// or equal gaps. The latency of an event is measured from its intended time,
// not from when it was actually sent, so a stalled target is charged for
// every event it delayed (coordinated omission corrected).
type schedule struct {
	next    time.Time
	gap     float64 // mean gap in ns
	poisson bool
	r       *rand.Rand
}

func newSchedule(start time.Time, rate float64, poisson bool, r *rand.Rand) *schedule {
	s := &schedule{next: start, gap: float64(time.Second) / rate, poisson: poisson, r: r}
	s.next = s.next.Add(s.step())
	return s
}

func (s *schedule) step() time.Duration {
	if s.poisson {
		return time.Duration(s.r.ExpFloat64() * s.gap)
	}
	return time.Duration(s.gap)
}

// Next returns the next intended time and advances.
func (s *schedule) Next() time.Time {
	t := s.next
	s.next = t.Add(s.step())
	return t
}

// clock is the time source of a worker loop (a fake in tests).
type clock interface {
	Now() time.Time
	SleepUntil(t time.Time)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) SleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

// openLoop runs one open-loop worker until the next intended time reaches
// until or stop returns true: it waits for each intended time (not at all
// when behind), runs op, and passes intended and completion time to done.
func openLoop(clk clock, s *schedule, until time.Time, stop func() bool, op func(intended time.Time), done func(intended, end time.Time)) {
	for !stop() {
		t := s.Next()
		if !t.Before(until) {
			return
		}
		clk.SleepUntil(t)
		op(t)
		done(t, clk.Now())
	}
}

// closedLoop runs one closed-loop worker: each op starts when the previous
// one ends; its latency is measured from its actual start.
func closedLoop(clk clock, until time.Time, stop func() bool, op func(start time.Time), done func(start, end time.Time)) {
	for !stop() {
		t := clk.Now()
		if !t.Before(until) {
			return
		}
		op(t)
		done(t, clk.Now())
	}
}
