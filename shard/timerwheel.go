package shard

import (
	"fmt"
	"math/bits"
	"slices"
	"time"
)

// wheelSlots is the number of tick-wide slots of a TimerWheel. Timers due
// within wheelSlots ticks of the wheel's position sit in slots; later ones
// wait in an overflow heap and move into the slots as the wheel advances.
const wheelSlots = 4096

// TimerHandle identifies one timer added to a TimerWheel. It stays unique
// for the wheel's life: a handle of a timer that fired or was cancelled
// never matches a later timer, even one that reuses the same entry (the
// handle carries the entry's generation). The zero TimerHandle is never
// returned by Add.
type TimerHandle uint64

// TimerWheel is a hashed timing wheel with an overflow heap, holding values
// of type T due at given instants (unix nanoseconds). It never reads the
// clock: callers pass `now` to NewTimerWheel and Advance, so its behaviour
// is a pure function of its inputs.
//
// Layout: wheelSlots slots, each one tick wide, hold the timers whose tick
// (at / tick) lies in [cur, cur+wheelSlots), where cur is the tick of the
// last Advance; each slot is a doubly-linked list threaded through a slice
// of entries, and a bitmap marks the non-empty slots. Timers further away
// sit in a binary min-heap ordered by (at, insertion) and move into their
// slot once the wheel comes within wheelSlots ticks of them. Entries are
// recycled through a free list, so Add, Cancel and Advance do not allocate
// once the entry slice has grown to the peak number of pending timers.
//
// Firing is exact, not tick-rounded: Advance(now) fires precisely the
// timers with at <= now, ordered by at and then by insertion. Next is exact
// too. The tick only sets the width of a slot (the granularity of the
// bucketing), not when timers fire.
//
// A TimerWheel is owned by one goroutine (the shard loop); it is not safe
// for concurrent use.
type TimerWheel[T any] struct {
	tick    int64
	now     int64 // largest now seen
	cur     int64 // tick of now: slots hold ticks [cur, cur+wheelSlots)
	slots   [wheelSlots]int32
	bitmap  [wheelSlots / 64]uint64
	heap    []heapItem // overflow: min-heap by (at, seq)
	stale   int        // heap items of cancelled timers, not yet removed
	entries []timerEntry[T]
	free    int32 // head of the free list, -1 if empty
	seq     uint64
	n       int

	due    []int32 // scratch of Advance: entries to fire
	firing bool

	nextAt    int64 // cached result of Next when nextValid
	nextValid bool
}

// heapItem is an overflow timer. It carries its ordering key so that heap
// operations touch only the contiguous heap slice, and the entry's
// generation so that a cancelled timer's item (left in place: lazy
// deletion) is recognised as stale.
type heapItem struct {
	at  int64
	seq uint64
	idx int32
	gen uint32
}

type timerState uint8

const (
	timerFree timerState = iota
	timerWheel
	timerHeap
	timerDue       // taken out by Advance, about to fire
	timerCancelled // cancelled while due; freed by Advance
)

type timerEntry[T any] struct {
	at    int64
	seq   uint64
	v     T
	gen   uint32
	state timerState
	// next and prev link the entry in its slot list (or next links the
	// free list).
	next, prev int32
	slot       int32 // slot of a wheel entry
}

// NewTimerWheel returns an empty wheel whose slots are tick wide, positioned
// at now (unix nanoseconds). It panics if tick <= 0 (a programming error).
func NewTimerWheel[T any](tick time.Duration, now int64) *TimerWheel[T] {
	if tick <= 0 {
		panic(fmt.Sprintf("shard: NewTimerWheel: tick %v must be positive", tick))
	}
	w := &TimerWheel[T]{tick: int64(tick), now: now, free: -1}
	w.cur = w.tickOf(now)
	for i := range w.slots {
		w.slots[i] = -1
	}
	return w
}

func (w *TimerWheel[T]) tickOf(at int64) int64 {
	t := at / w.tick
	if at < 0 && t*w.tick != at {
		t-- // floor division for instants before 1970
	}
	return t
}

// Len returns the number of pending timers.
func (w *TimerWheel[T]) Len() int { return w.n }

// Now returns the largest now passed to NewTimerWheel or Advance.
func (w *TimerWheel[T]) Now() int64 { return w.now }

// Add schedules v at instant at (unix nanoseconds) and returns its handle.
// A timer with at <= the wheel's current time fires at the next Advance.
// Add may be called from inside Advance's fire callback; such a timer fires
// at a later Advance, never in the one that is running.
func (w *TimerWheel[T]) Add(at int64, v T) TimerHandle {
	i := w.alloc()
	e := &w.entries[i]
	e.at = at
	e.seq = w.seq
	w.seq++
	e.v = v
	w.place(i)
	w.n++
	if w.nextValid && at < w.nextAt {
		w.nextAt = at
	}
	return TimerHandle(uint64(e.gen)<<32 | uint64(i+1))
}

// Cancel removes the pending timer h and returns its value and true. For a
// handle that already fired, was cancelled, or never came from this wheel it
// returns the zero T and false. Cancel may be called from inside Advance's
// fire callback; cancelling a timer of the same batch that has not fired
// yet prevents it from firing.
func (w *TimerWheel[T]) Cancel(h TimerHandle) (T, bool) {
	var zero T
	idx := int64(uint32(h)) - 1
	if idx < 0 || idx >= int64(len(w.entries)) {
		return zero, false
	}
	i := int32(idx)
	e := &w.entries[i]
	if e.gen != uint32(h>>32) {
		return zero, false
	}
	v := e.v
	switch e.state {
	case timerWheel:
		w.unlink(i)
	case timerHeap:
		// Lazy deletion: the heap item goes stale with the generation bump
		// in release; rebuild once stale items are the majority.
		w.stale++
	case timerDue:
		// Advance holds i in its batch; it frees the entry when it gets there.
		e.state = timerCancelled
		e.gen++
		e.v = zero
		w.n--
		return v, true
	default:
		return zero, false
	}
	if w.nextValid && e.at == w.nextAt {
		w.nextValid = false
	}
	w.release(i)
	w.n--
	if w.stale > 64 && 2*w.stale > len(w.heap) {
		w.heapCompact()
	}
	return v, true
}

// Next returns the earliest pending deadline, exactly (not rounded to the
// tick), and false if no timer is pending. Timers due before the wheel's
// current time report their own (past) instant. Called from inside a fire
// callback, it does not see the not yet fired rest of the running batch.
func (w *TimerWheel[T]) Next() (at int64, ok bool) {
	if w.n == 0 {
		return 0, false
	}
	if w.nextValid {
		return w.nextAt, true
	}
	best, found := int64(0), false
	// The first non-empty slot from cur holds the earliest wheel timers:
	// every entry of a later slot has a later tick.
	if s, ok := w.firstSlot(); ok {
		for i := w.slots[s]; i >= 0; i = w.entries[i].next {
			if at := w.entries[i].at; !found || at < best {
				best, found = at, true
			}
		}
	}
	// Heap timers are all beyond the wheel's slots, but check anyway: it is
	// cheap and keeps Next right should placement ever change.
	w.heapDropStale()
	if len(w.heap) > 0 {
		if at := w.heap[0].at; !found || at < best {
			best, found = at, true
		}
	}
	if !found {
		// Only inside a fire callback: the rest of the running batch is
		// pending but already out of the slots.
		return 0, false
	}
	w.nextAt, w.nextValid = best, true
	return best, true
}

// Advance moves the wheel to now and calls fire for every pending timer
// with at <= now, in order of at and then of insertion. A now earlier than
// a previous one is treated as the previous one (time does not go back).
// fire may call Add and Cancel but not Advance (which panics).
func (w *TimerWheel[T]) Advance(now int64, fire func(at int64, v T)) {
	if w.firing {
		panic("shard: TimerWheel.Advance called from its own fire callback")
	}
	if now < w.now {
		now = w.now
	}
	w.now = now
	target := w.tickOf(now)
	due := w.due[:0]

	// Slots of ticks before target are due as a whole; the slot of target
	// holds the timers of this tick, due when at <= now.
	for {
		s, ok := w.firstSlot()
		if !ok {
			break
		}
		t := w.slotTick(s)
		if t > target {
			break
		}
		for i := w.slots[s]; i >= 0; {
			e := &w.entries[i]
			next := e.next
			if t < target || e.at <= now {
				w.unlink(i)
				e.state = timerDue
				due = append(due, i)
			}
			i = next
		}
		if t == target {
			break
		}
		w.cur = t + 1 // slot s is empty now; move on
	}
	if target > w.cur {
		w.cur = target
	}
	// Overflow timers that the wheel now reaches move into their slots (or
	// fire, if already due).
	for w.heapDropStale(); len(w.heap) > 0; w.heapDropStale() {
		it := w.heap[0]
		if w.tickOf(it.at) >= w.cur+wheelSlots {
			break
		}
		w.heapPop()
		i := it.idx
		e := &w.entries[i]
		if e.at <= now {
			e.state = timerDue
			due = append(due, i)
		} else {
			w.place(i)
		}
	}
	w.nextValid = false
	if len(due) == 0 {
		w.due = due
		return
	}
	slices.SortFunc(due, w.cmpEntries)
	w.firing = true
	defer func() { w.firing = false }()
	for k := 0; k < len(due); k++ {
		i := due[k]
		e := &w.entries[i]
		if e.state == timerCancelled {
			w.release(i)
			continue
		}
		at, v := e.at, e.v
		w.release(i) // before fire: a Cancel of this handle now fails
		w.n--
		fire(at, v)
	}
	clear(due)
	w.due = due[:0]
}

func (w *TimerWheel[T]) cmpEntries(a, b int32) int {
	ea, eb := &w.entries[a], &w.entries[b]
	switch {
	case ea.at < eb.at:
		return -1
	case ea.at > eb.at:
		return 1
	case ea.seq < eb.seq:
		return -1
	case ea.seq > eb.seq:
		return 1
	}
	return 0
}

// alloc takes an entry from the free list or grows the entry slice.
func (w *TimerWheel[T]) alloc() int32 {
	if w.free >= 0 {
		i := w.free
		w.free = w.entries[i].next
		return i
	}
	if len(w.entries) >= 1<<31-1 {
		panic("shard: TimerWheel: too many pending timers")
	}
	w.entries = append(w.entries, timerEntry[T]{})
	return int32(len(w.entries) - 1)
}

// release bumps the entry's generation (so old handles go stale) and puts
// it on the free list.
func (w *TimerWheel[T]) release(i int32) {
	e := &w.entries[i]
	var zero T
	e.v = zero
	e.gen++
	e.state = timerFree
	e.next = w.free
	e.prev = -1
	w.free = i
}

// place puts entry i into its slot, or the overflow heap if its tick is
// wheelSlots or more ahead. Past timers go into the current slot.
func (w *TimerWheel[T]) place(i int32) {
	e := &w.entries[i]
	t := w.tickOf(e.at)
	if t < w.cur {
		t = w.cur
	}
	if t-w.cur >= wheelSlots {
		e.state = timerHeap
		w.heapPush(i)
		return
	}
	s := int32(t & (wheelSlots - 1))
	e.state = timerWheel
	e.slot = s
	e.prev = -1
	e.next = w.slots[s]
	if e.next >= 0 {
		w.entries[e.next].prev = i
	}
	w.slots[s] = i
	w.bitmap[s>>6] |= 1 << (s & 63)
}

func (w *TimerWheel[T]) unlink(i int32) {
	e := &w.entries[i]
	if e.prev >= 0 {
		w.entries[e.prev].next = e.next
	} else {
		s := e.slot
		w.slots[s] = e.next
		if e.next < 0 {
			w.bitmap[s>>6] &^= 1 << (s & 63)
		}
	}
	if e.next >= 0 {
		w.entries[e.next].prev = e.prev
	}
}

// firstSlot returns the first non-empty slot at or after cur's slot, in
// wheel order.
func (w *TimerWheel[T]) firstSlot() (int32, bool) {
	start := int(w.cur & (wheelSlots - 1))
	word := start >> 6
	// Bits of the start word at or after start.
	if m := w.bitmap[word] &^ (1<<(start&63) - 1); m != 0 {
		return int32(word<<6 + bits.TrailingZeros64(m)), true
	}
	for k := 1; k <= len(w.bitmap); k++ {
		wi := (word + k) % len(w.bitmap)
		m := w.bitmap[wi]
		if wi == word {
			m &= 1<<(start&63) - 1 // wrapped: only bits before start
		}
		if m != 0 {
			return int32(wi<<6 + bits.TrailingZeros64(m)), true
		}
	}
	return 0, false
}

// slotTick returns the tick that slot s stands for, given cur.
func (w *TimerWheel[T]) slotTick(s int32) int64 {
	base := w.cur &^ (wheelSlots - 1)
	t := base + int64(s)
	if t < w.cur {
		t += wheelSlots
	}
	return t
}

func (w *TimerWheel[T]) heapLess(a, b int) bool {
	x, y := &w.heap[a], &w.heap[b]
	return x.at < y.at || (x.at == y.at && x.seq < y.seq)
}

func (w *TimerWheel[T]) heapPush(i int32) {
	e := &w.entries[i]
	w.heap = append(w.heap, heapItem{at: e.at, seq: e.seq, idx: i, gen: e.gen})
	w.heapUp(len(w.heap) - 1)
}

func (w *TimerWheel[T]) heapPop() {
	last := len(w.heap) - 1
	w.heap[0] = w.heap[last]
	w.heap = w.heap[:last]
	w.heapDown(0)
}

func (w *TimerWheel[T]) isStale(it *heapItem) bool {
	e := &w.entries[it.idx]
	return e.gen != it.gen || e.state != timerHeap
}

// heapDropStale pops cancelled timers off the top of the heap.
func (w *TimerWheel[T]) heapDropStale() {
	for len(w.heap) > 0 && w.isStale(&w.heap[0]) {
		w.heapPop()
		w.stale--
	}
}

// heapCompact removes every stale item and re-heapifies, in place.
func (w *TimerWheel[T]) heapCompact() {
	live := w.heap[:0]
	for k := range w.heap {
		if !w.isStale(&w.heap[k]) {
			live = append(live, w.heap[k])
		}
	}
	clear(w.heap[len(live):])
	w.heap = live
	w.stale = 0
	for k := len(w.heap)/2 - 1; k >= 0; k-- {
		w.heapDown(k)
	}
}

func (w *TimerWheel[T]) heapUp(k int) {
	for k > 0 {
		p := (k - 1) / 2
		if !w.heapLess(k, p) {
			break
		}
		w.heap[k], w.heap[p] = w.heap[p], w.heap[k]
		k = p
	}
}

func (w *TimerWheel[T]) heapDown(k int) {
	n := len(w.heap)
	for {
		l := 2*k + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && w.heapLess(r, l) {
			c = r
		}
		if !w.heapLess(c, k) {
			return
		}
		w.heap[k], w.heap[c] = w.heap[c], w.heap[k]
		k = c
	}
}
