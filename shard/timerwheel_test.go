package shard

import (
	"fmt"
	"github.com/shardfn/shardfn/internal/format"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// t0 is an arbitrary, realistic start instant (2024-01-01T00:00:00Z).
const t0 = int64(1704067200) * int64(time.Second)

type fired struct {
	at int64
	v  int
}

func collect(w *TimerWheel[int], now int64) []fired {
	var out []fired
	w.Advance(now, func(at int64, v int) { out = append(out, fired{at, v}) })
	return out
}

func TestTimerWheelOrderAndExactness(t *testing.T) {
	w := NewTimerWheel[int](10*time.Millisecond, t0)
	w.Add(t0+25*ms, 1)
	w.Add(t0+5*ms, 2)
	w.Add(t0+25*ms, 3) // same instant as 1: after it (insertion order)
	w.Add(t0+21*ms, 4) // same tick as 1 and 3, earlier instant
	w.Add(t0+25*ms+1, 5)
	if at, ok := w.Next(); !ok || at != t0+5*ms {
		t.Fatalf("Next = %d, %v; want t0+5ms exactly", at-t0, ok)
	}
	if got := collect(w, t0+4*ms); len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	if got := collect(w, t0+5*ms); fmt.Sprint(got) != fmt.Sprint([]fired{{t0 + 5*ms, 2}}) {
		t.Fatalf("at exactly the deadline: fired %v", got)
	}
	if at, _ := w.Next(); at != t0+21*ms {
		t.Fatalf("Next = t0+%d, want t0+21ms", at-t0)
	}
	// Within one tick, firing is by instant, not by tick.
	if got := collect(w, t0+25*ms); len(got) != 3 || got[0].v != 4 || got[1].v != 1 || got[2].v != 3 {
		t.Fatalf("fired %v, want values 4, 1, 3", got)
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1", w.Len())
	}
	if got := collect(w, t0+25*ms+1); len(got) != 1 || got[0].v != 5 {
		t.Fatalf("fired %v, want 5", got)
	}
	if _, ok := w.Next(); ok || w.Len() != 0 {
		t.Fatal("wheel not empty")
	}
}

func TestTimerWheelPastTimersFireAtNextAdvance(t *testing.T) {
	w := NewTimerWheel[int](time.Millisecond, t0)
	collect(w, t0+100*ms)
	w.Add(t0, 1)        // long past
	w.Add(t0+100*ms, 2) // exactly now
	w.Add(t0-time.Hour.Nanoseconds(), 3)
	if at, _ := w.Next(); at != t0-time.Hour.Nanoseconds() {
		t.Fatalf("Next = %d, want the past instant itself", at)
	}
	// Advance with the same now (and with an earlier one) fires them.
	got := collect(w, t0+50*ms)
	if len(got) != 3 || got[0].v != 3 || got[1].v != 1 || got[2].v != 2 {
		t.Fatalf("fired %v, want 3, 1, 2", got)
	}
	if w.Now() != t0+100*ms {
		t.Fatalf("Now went back to %d", w.Now()-t0)
	}
}

func TestTimerWheelCancel(t *testing.T) {
	w := NewTimerWheel[int](time.Millisecond, t0)
	h1 := w.Add(t0+10*ms, 1)
	h2 := w.Add(t0+time.Hour.Nanoseconds(), 2) // overflow heap
	h3 := w.Add(t0+20*ms, 3)
	if v, ok := w.Cancel(h1); !ok || v != 1 {
		t.Fatalf("Cancel pending wheel timer = %d, %v", v, ok)
	}
	if _, ok := w.Cancel(h1); ok {
		t.Fatal("double cancel succeeded")
	}
	if v, ok := w.Cancel(h2); !ok || v != 2 {
		t.Fatalf("Cancel pending heap timer = %d, %v", v, ok)
	}
	// Handle reuse: the next Add takes a freed entry; the old handles stay dead.
	h4 := w.Add(t0+30*ms, 4)
	if h4 == h1 || h4 == h2 {
		t.Fatal("new timer got a cancelled timer's handle")
	}
	if _, ok := w.Cancel(h1); ok {
		t.Fatal("stale handle cancelled a reused entry")
	}
	if _, ok := w.Cancel(h2); ok {
		t.Fatal("stale handle cancelled a reused entry")
	}
	if got := collect(w, t0+20*ms); len(got) != 1 || got[0].v != 3 {
		t.Fatalf("fired %v, want only 3", got)
	}
	if _, ok := w.Cancel(h3); ok {
		t.Fatal("cancel after fire succeeded")
	}
	if _, ok := w.Cancel(0); ok {
		t.Fatal("zero handle cancelled something")
	}
	if _, ok := w.Cancel(TimerHandle(1<<40 | 12345)); ok {
		t.Fatal("foreign handle cancelled something")
	}
	if v, ok := w.Cancel(h4); !ok || v != 4 || w.Len() != 0 {
		t.Fatalf("Cancel(h4) = %d, %v, Len %d", v, ok, w.Len())
	}
	if _, ok := w.Next(); ok {
		t.Fatal("Next reports a timer on an empty wheel")
	}
}

func TestTimerWheelCallbackAddsAndCancels(t *testing.T) {
	w := NewTimerWheel[int](time.Millisecond, t0)
	var hs []TimerHandle
	for i := 0; i < 4; i++ {
		hs = append(hs, w.Add(t0+int64(i)*ms, i))
	}
	var got []int
	w.Advance(t0+10*ms, func(at int64, v int) {
		got = append(got, v)
		switch v {
		case 0:
			if _, ok := w.Cancel(hs[0]); ok {
				t.Error("a firing timer could be cancelled from its own callback")
			}
			if _, ok := w.Cancel(hs[2]); !ok {
				t.Error("cancelling a later timer of the running batch failed")
			}
			w.Add(t0, 100) // due, but fires at the next Advance
		}
	})
	if fmt.Sprint(got) != "[0 1 3]" {
		t.Fatalf("fired %v, want [0 1 3]", got)
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1", w.Len())
	}
	if g := collect(w, t0+10*ms); len(g) != 1 || g[0].v != 100 {
		t.Fatalf("next Advance fired %v, want 100", g)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("nested Advance did not panic")
			}
		}()
		w.Add(t0, 1)
		w.Advance(t0+10*ms, func(int64, int) { w.Advance(t0+10*ms, nil) })
	}()
}

func TestTimerWheelFarFuture(t *testing.T) {
	w := NewTimerWheel[int](time.Millisecond, t0)
	day := int64(24 * time.Hour)
	ats := []int64{t0 + 3*day, t0 + day, t0 + 2*ms, t0 + 7*day + 1, t0 + 5*time.Hour.Nanoseconds()}
	for i, at := range ats {
		w.Add(at, i)
	}
	want := slices.Clone(ats)
	slices.Sort(want)
	var got []int64
	now := t0
	// Small steps for a while, then huge jumps: both paths.
	for i := 0; i < 100; i++ {
		now += ms
		for _, f := range collect(w, now) {
			got = append(got, f.at)
		}
	}
	for w.Len() > 0 {
		at, ok := w.Next()
		if !ok || at != want[len(got)] {
			t.Fatalf("Next = %d, %v; want %d", at-t0, ok, want[len(got)]-t0)
		}
		if f := collect(w, at-1); len(f) != 0 {
			t.Fatalf("fired %v one ns before the deadline", f)
		}
		for _, f := range collect(w, at) {
			got = append(got, f.at)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
}

// TestTimerWheelCancelManyFarTimers cancels most overflow timers, which
// compacts the overflow heap, and checks the rest still fire in order.
func TestTimerWheelCancelManyFarTimers(t *testing.T) {
	w := NewTimerWheel[int](time.Millisecond, t0)
	rng := rand.New(rand.NewPCG(3, 4))
	hs := make([]TimerHandle, 1000)
	ats := make([]int64, 1000)
	for i := range hs {
		ats[i] = t0 + int64(time.Hour) + rng.Int64N(int64(time.Hour))
		hs[i] = w.Add(ats[i], i)
	}
	var want []int64
	for i := range hs {
		if i%10 == 0 {
			want = append(want, ats[i])
			continue
		}
		if _, ok := w.Cancel(hs[i]); !ok {
			t.Fatalf("cancel %d failed", i)
		}
	}
	if len(w.heap) >= 1000 {
		t.Fatalf("overflow heap still holds %d items after 900 cancels", len(w.heap))
	}
	slices.Sort(want)
	if at, ok := w.Next(); !ok || at != want[0] {
		t.Fatalf("Next = %d, %v; want %d", at, ok, want[0])
	}
	var got []int64
	for _, f := range collect(w, t0+3*int64(time.Hour)) {
		got = append(got, f.at)
	}
	if !slices.Equal(got, want) || w.Len() != 0 {
		t.Fatalf("fired %d timers (Len %d), want %d in order", len(got), w.Len(), len(want))
	}
}

// TestTimerWheelRandomVsModel runs random Add/Cancel/Advance/Next against a
// sorted-slice reference model.
func TestTimerWheelRandomVsModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for round := 0; round < 20; round++ {
		s := seed + uint64(round)
		if !runTimerModel(t, s, 3000) {
			t.Fatalf("failed with seed %d", s)
		}
	}
}

type modelTimer struct {
	at  int64
	seq int
	v   int
	h   TimerHandle
}

func runTimerModel(t *testing.T, seed uint64, steps int) bool {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	tick := time.Duration(1 + rng.IntN(5)*int(time.Millisecond))
	now := t0 + rng.Int64N(int64(time.Second))
	w := NewTimerWheel[int](tick, now)
	var model []modelTimer // pending, any order
	var dead []TimerHandle // fired or cancelled
	seq := 0
	spans := []int64{int64(tick), 100 * int64(tick), 5000 * int64(tick), int64(72 * time.Hour)}
	for step := 0; step < steps; step++ {
		switch op := rng.IntN(10); {
		case op < 5: // Add
			at := now - int64(tick) + rng.Int64N(spans[rng.IntN(len(spans))])
			if rng.IntN(4) == 0 && len(model) > 0 {
				at = model[rng.IntN(len(model))].at // same instant as another
			}
			h := w.Add(at, seq)
			model = append(model, modelTimer{at, seq, seq, h})
			seq++
		case op < 7: // Cancel, sometimes a stale handle
			if rng.IntN(3) == 0 && len(dead) > 0 {
				if _, ok := w.Cancel(dead[rng.IntN(len(dead))]); ok {
					t.Errorf("seed %d step %d: stale handle cancelled", seed, step)
					return false
				}
				continue
			}
			if len(model) == 0 {
				continue
			}
			k := rng.IntN(len(model))
			m := model[k]
			v, ok := w.Cancel(m.h)
			if !ok || v != m.v {
				t.Errorf("seed %d step %d: Cancel = %d, %v; want %d, true", seed, step, v, ok, m.v)
				return false
			}
			model = slices.Delete(model, k, k+1)
			dead = append(dead, m.h)
		default: // Advance by a random step, sometimes huge, sometimes backwards
			switch rng.IntN(10) {
			case 0:
				now += rng.Int64N(int64(96 * time.Hour))
			case 1:
				now -= rng.Int64N(int64(tick) * 3) // Advance must clamp
			default:
				now += rng.Int64N(int64(tick) * 300)
			}
			eff := max(now, w.Now())
			var got []modelTimer
			w.Advance(now, func(at int64, v int) { got = append(got, modelTimer{at: at, v: v}) })
			now = eff
			slices.SortFunc(model, func(a, b modelTimer) int {
				if a.at != b.at {
					return int(min(max(a.at-b.at, -1), 1))
				}
				return a.seq - b.seq
			})
			n := 0
			for n < len(model) && model[n].at <= now {
				n++
			}
			if len(got) != n {
				t.Errorf("seed %d step %d: Advance fired %d timers, want %d", seed, step, len(got), n)
				return false
			}
			for i := 0; i < n; i++ {
				if got[i].at != model[i].at || got[i].v != model[i].v {
					t.Errorf("seed %d step %d: fire %d = (%d, %d), want (%d, %d)", seed, step, i, got[i].at, got[i].v, model[i].at, model[i].v)
					return false
				}
				dead = append(dead, model[i].h)
			}
			model = slices.Delete(model, 0, n)
		}
		if w.Len() != len(model) {
			t.Errorf("seed %d step %d: Len = %d, want %d", seed, step, w.Len(), len(model))
			return false
		}
		at, ok := w.Next()
		if ok != (len(model) > 0) {
			t.Errorf("seed %d step %d: Next ok = %v with %d pending", seed, step, ok, len(model))
			return false
		}
		if ok {
			best := model[0].at
			for _, m := range model {
				best = min(best, m.at)
			}
			if at != best {
				t.Errorf("seed %d step %d: Next = %d, want %d", seed, step, at, best)
				return false
			}
		}
	}
	return true
}

func TestTimerWheelZeroAllocsSteadyState(t *testing.T) {
	w := NewTimerWheel[format.Envelope](time.Millisecond, t0)
	now := t0
	e := format.Envelope{ID: 1, Payload: benchPayload}
	fire := func(int64, format.Envelope) {}
	var hs [64]TimerHandle
	round := func() {
		for i := range hs {
			span := int64(i%8+1) * 3 * ms
			if i%16 == 0 {
				span = int64(time.Hour) // overflow heap
			}
			hs[i] = w.Add(now+span, e)
		}
		for i := 0; i < len(hs); i += 3 {
			w.Cancel(hs[i])
		}
		now += 10 * ms
		w.Advance(now, fire)
		w.Next()
	}
	for i := 0; i < 50; i++ { // grow entries, heap and scratch to their peak
		round()
	}
	if a := testing.AllocsPerRun(200, round); a != 0 {
		t.Fatalf("Add/Cancel/Advance/Next: %v allocs per round, want 0", a)
	}
}

func BenchmarkTimerWheel(b *testing.B) {
	for _, pending := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("op=add+advance/pending=%d", pending), func(b *testing.B) {
			w := NewTimerWheel[format.Envelope](time.Millisecond, t0)
			e := format.Envelope{ID: 1, Payload: benchPayload}
			rng := rand.New(rand.NewPCG(1, 2))
			now := t0
			fire := func(int64, format.Envelope) {}
			// Timers 0-2 s ahead, one Advance of 1 ms per 10 adds: steady
			// state about `pending` timers once warmed up.
			horizon := int64(pending/10) * 2 * ms
			for i := 0; i < pending; i++ {
				w.Add(now+rng.Int64N(horizon), e)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w.Add(now+rng.Int64N(horizon), e)
				if i%10 == 9 {
					now += ms
					w.Advance(now, fire)
				}
			}
		})
	}
	b.Run("op=add+cancel", func(b *testing.B) {
		w := NewTimerWheel[format.Envelope](time.Millisecond, t0)
		e := format.Envelope{ID: 1}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			h := w.Add(t0+int64(i%5000)*ms, e)
			w.Cancel(h)
		}
	})
}
