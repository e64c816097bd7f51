package loadgen

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClock advances only when told: SleepUntil jumps forward, ops add
// their service time.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) SleepUntil(t time.Time) {
	if t.After(c.now) {
		c.now = t
	}
}

func TestUniformSchedule(t *testing.T) {
	start := time.Unix(100, 0)
	s := newSchedule(start, 1000, false, rand.New(rand.NewPCG(1, 1)))
	for i := 1; i <= 5; i++ {
		if got, want := s.Next(), start.Add(time.Duration(i)*time.Millisecond); !got.Equal(want) {
			t.Fatalf("event %d at %v, want %v", i, got.Sub(start), want.Sub(start))
		}
	}
}

func TestPoissonScheduleMeanRate(t *testing.T) {
	start := time.Unix(0, 0)
	s := newSchedule(start, 2000, true, rand.New(rand.NewPCG(3, 4)))
	const n = 20000
	var last time.Time
	var gaps []float64
	prev := start
	for i := 0; i < n; i++ {
		last = s.Next()
		gaps = append(gaps, float64(last.Sub(prev)))
		prev = last
	}
	mean := float64(last.Sub(start)) / n
	if want := float64(time.Second) / 2000; math.Abs(mean-want) > 0.03*want {
		t.Fatalf("mean gap %v, want %v", time.Duration(mean), time.Duration(want))
	}
	// Exponential gaps: the standard deviation equals the mean.
	var v float64
	for _, g := range gaps {
		v += (g - mean) * (g - mean)
	}
	if sd := math.Sqrt(v / n); math.Abs(sd-mean) > 0.05*mean {
		t.Fatalf("gap sd %v, mean %v: not exponential", time.Duration(sd), time.Duration(mean))
	}
}

// TestOpenLoopCorrectsCoordinatedOmission: one op stalls for 100 ms in a
// 1000/s uniform schedule; the 100 events that should have been sent during
// the stall are charged the time they waited, from 99 ms down to 0.
func TestOpenLoopCorrectsCoordinatedOmission(t *testing.T) {
	start := time.Unix(0, 0)
	clk := &fakeClock{now: start}
	s := newSchedule(start, 1000, false, nil)
	var lat []time.Duration
	i := 0
	openLoop(clk, s, start.Add(300*time.Millisecond), func() bool { return false },
		func(time.Time) {
			if i == 0 {
				clk.now = clk.now.Add(100 * time.Millisecond)
			}
			i++
		},
		func(intended, end time.Time) { lat = append(lat, end.Sub(intended)) })
	if len(lat) != 299 {
		t.Fatalf("%d events in 300 ms at 1000/s, want 299", len(lat))
	}
	if lat[0] != 100*time.Millisecond {
		t.Fatalf("stalled op latency %v", lat[0])
	}
	for k := 1; k < 100; k++ {
		if want := time.Duration(100-k) * time.Millisecond; lat[k] != want {
			t.Fatalf("event %d latency %v, want %v (coordinated omission not corrected)", k, lat[k], want)
		}
	}
	for k := 100; k < len(lat); k++ {
		if lat[k] != 0 {
			t.Fatalf("event %d after the stall has latency %v", k, lat[k])
		}
	}
	// The closed loop, by contrast, measures only the stalled op.
	clk = &fakeClock{now: start}
	lat, i = nil, 0
	closedLoop(clk, start.Add(3*time.Millisecond), func() bool { return false },
		func(time.Time) {
			d := time.Millisecond
			if i == 0 {
				d = 100 * time.Millisecond
			}
			clk.now = clk.now.Add(d)
			i++
		},
		func(st, end time.Time) { lat = append(lat, end.Sub(st)) })
	if len(lat) != 1 || lat[0] != 100*time.Millisecond {
		t.Fatalf("closed loop latencies %v", lat)
	}
}
