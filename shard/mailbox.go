package shard

import (
	"github.com/shardfn/shardfn/internal/format"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// cacheLine is the padding unit that keeps indexes written by different
// goroutines on different cache lines (64 bytes on amd64 and arm64; 128
// covers the adjacent-line prefetcher of recent Intel parts).
const cacheLine = 128

type pad [cacheLine]byte

// Mailbox is the inbox of one shard: a lock-free multi-producer,
// single-consumer queue drained in batches.
//
// It is made of lanes. Each Producer (see NewProducer) owns one
// single-producer single-consumer ring, so producers that own a lane never
// contend with each other: a push is one slot copy and one atomic store.
// Goroutines that have no lane of their own (ingress handlers, timers of
// other components) use Mailbox.Push, which goes through one shared bounded
// multi-producer lane. The consumer drains all lanes round-robin.
//
// Ownership and concurrency: the Mailbox is owned by its consumer (the shard
// goroutine). Drain and Wait may only be called by that one goroutine, one
// call at a time. NewProducer, Push (on the Mailbox), Wake and Len are safe
// from any goroutine. A Producer may be used by one goroutine at a time.
//
// Envelopes are copied by value into ring slots; the consumer clears every
// slot it takes, so a drained payload is not kept alive by the ring.
type Mailbox struct {
	laneCap int

	// lanes is the copy-on-write list of producer lanes; replaced under
	// lanesMu by NewProducer, loaded by Drain and Len.
	lanes   atomic.Pointer[[]*spscRing]
	lanesMu sync.Mutex

	shared mpscRing
	// used counts the shared lane's slots (low 24 bits) and bytes (the
	// rest) taken or reserved (Reserve); a push into a reserved slot cannot
	// fail. One word, so one compare-and-swap claims both.
	used      atomic.Uint64
	laneBytes int64 // bound on the shared lane's bytes; 0: none

	// Consumer-only fields.
	_     pad
	rr    int         // lane index the next Drain starts at
	timer *time.Timer // reused by Wait; created on first timed wait

	// sleeping is 1 while the consumer is (about to be) blocked in Wait.
	// Producers read it after publishing; see Wait for the protocol.
	_        pad
	sleeping atomic.Int32
	wake     chan struct{}
	_        pad
}

// NewMailbox returns an empty mailbox whose lanes (the shared lane and each
// Producer's lane) hold laneCap envelopes each. laneCap is rounded up to a
// power of two; values below 2 become 2; at most 1<<23.
func NewMailbox(laneCap int) *Mailbox {
	c := 2
	for c < laneCap && c < 1<<23 {
		c <<= 1
	}
	m := &Mailbox{laneCap: c, wake: make(chan struct{}, 1)}
	m.shared.init(c)
	empty := []*spscRing{}
	m.lanes.Store(&empty)
	return m
}

// SetSharedBytes bounds the bytes (EnvelopeBytes) waiting in the shared
// lane; 0 means no bound. Call before use. A message larger than the bound
// is still taken when the lane is empty.
func (m *Mailbox) SetSharedBytes(n int64) { m.laneBytes = n }

// EnvelopeBytes is what an envelope is counted for in byte bounds: its
// payload, type and id strings, and the fixed size of the struct.
func EnvelopeBytes(e *format.Envelope) int64 {
	return int64(len(e.Payload)+len(e.Type)+len(e.Target.ID)+len(e.Key)) + envelopeOverhead
}

// envelopeOverhead is the size of a format.Envelope value (amd64).
const envelopeOverhead = 200

const (
	usedSlotBits = 24
	usedSlotMask = 1<<usedSlotBits - 1
)

// LaneCap returns the capacity of each lane (laneCap rounded up to a power
// of two).
func (m *Mailbox) LaneCap() int { return m.laneCap }

// Producer is one single-producer lane of a Mailbox. It is owned by one
// goroutine at a time (typically a shard keeps one Producer per destination
// mailbox); it lives as long as its Mailbox.
type Producer struct {
	m *Mailbox
	r *spscRing
}

// NewProducer adds a lane to m and returns its Producer. It may be called at
// any time from any goroutine, also while the consumer drains.
func (m *Mailbox) NewProducer() *Producer {
	r := newSPSCRing(m.laneCap)
	m.lanesMu.Lock()
	old := *m.lanes.Load()
	lanes := make([]*spscRing, len(old)+1)
	copy(lanes, old)
	lanes[len(old)] = r
	m.lanes.Store(&lanes)
	m.lanesMu.Unlock()
	return &Producer{m: m, r: r}
}

// Push copies *e into the producer's lane. It returns false, without
// blocking and without copying, if the lane is full.
func (p *Producer) Push(e *format.Envelope) bool {
	if !p.r.push(e) {
		return false
	}
	p.m.signal()
	return true
}

// Free returns the number of free slots in the producer's lane. It is exact
// for the producer up to concurrent drains, which can only make it larger.
func (p *Producer) Free() int {
	r := p.r
	return len(r.buf) - int(r.tailLocal-r.head.Load())
}

// Push copies *e into the shared lane of m. It is safe from any goroutine;
// it returns false, without blocking, if the shared lane is full.
func (m *Mailbox) Push(e *format.Envelope) bool {
	if !m.Reserve(1, EnvelopeBytes(e)) {
		return false
	}
	m.PushReserved(e)
	return true
}

// Reserve claims n slots and bytes bytes (the EnvelopeBytes of the n
// envelopes) of the shared lane for PushReserved, or returns false,
// claiming nothing, if they do not fit. Any goroutine. It lets a producer
// admit a batch whole or not at all.
func (m *Mailbox) Reserve(n int, bytes int64) bool {
	add := uint64(n) | uint64(bytes)<<usedSlotBits
	for {
		u := m.used.Load()
		slots, used := int(u&usedSlotMask), int64(u>>usedSlotBits)
		if slots+n > m.laneCap {
			return false
		}
		if m.laneBytes > 0 && used > 0 && used+bytes > m.laneBytes {
			return false
		}
		if m.used.CompareAndSwap(u, u+add) {
			return true
		}
	}
}

// Unreserve gives back n reserved slots and bytes that will not be pushed.
func (m *Mailbox) Unreserve(n int, bytes int64) {
	m.used.Add(-(uint64(n) | uint64(bytes)<<usedSlotBits))
}

// SharedBytes is the bytes taken or reserved in the shared lane.
func (m *Mailbox) SharedBytes() int64 { return int64(m.used.Load() >> usedSlotBits) }

// SharedFree is the room left in the shared lane now: free slots and free
// bytes (math.MaxInt64 without a byte bound). Any goroutine; it reserves
// nothing, so it is only a hint (Reserve decides).
func (m *Mailbox) SharedFree() (slots int, bytes int64) {
	u := m.used.Load()
	slots = m.laneCap - int(u&usedSlotMask)
	if m.laneBytes <= 0 {
		return slots, math.MaxInt64
	}
	return slots, m.laneBytes - int64(u>>usedSlotBits)
}

// SharedBound is the shared lane's byte bound (SetSharedBytes; 0: none).
func (m *Mailbox) SharedBound() int64 { return m.laneBytes }

// PushReserved copies *e into a slot claimed by Reserve; it cannot fail
// (the lane has a free slot for every reservation: slots are freed before
// the consumer gives their reservation back).
func (m *Mailbox) PushReserved(e *format.Envelope) {
	if !m.shared.push(e) {
		panic("shard: mailbox push into a reserved slot failed")
	}
	m.signal()
}

// Drain appends up to max envelopes to dst and returns the extended slice.
// Consumer only. Envelopes of one lane come out in push order; lanes are
// served fairly: each pass gives every non-empty lane an equal share of what
// is left of max, and the lane served first rotates from call to call.
// Drained slots are cleared.
func (m *Mailbox) Drain(dst []format.Envelope, max int) []format.Envelope {
	lanes := *m.lanes.Load()
	n := len(lanes) + 1 // the shared lane is lane index len(lanes)
	if max <= 0 {
		return dst
	}
	start := m.rr
	if start >= n {
		start = 0
	}
	m.rr = start + 1
	for max > 0 {
		share := (max + n - 1) / n
		got := 0
		for i := 0; i < n && max > 0; i++ {
			j := start + i
			if j >= n {
				j -= n
			}
			want := share
			if want > max {
				want = max
			}
			var k int
			if j == len(lanes) {
				before := len(dst)
				dst, k = m.shared.drain(dst, want)
				var bytes int64
				for i := before; i < len(dst); i++ {
					bytes += EnvelopeBytes(&dst[i])
				}
				m.Unreserve(k, bytes)
			} else {
				dst, k = lanes[j].drain(dst, want)
			}
			got += k
			max -= k
		}
		if got == 0 {
			break
		}
	}
	return dst
}

// Len returns the approximate number of envelopes waiting in m. Safe from
// any goroutine; meant for metrics and backpressure decisions.
func (m *Mailbox) Len() int {
	n := m.shared.len()
	for _, r := range *m.lanes.Load() {
		n += r.len()
	}
	return n
}

// empty reports whether every lane looks empty. Consumer only.
func (m *Mailbox) empty() bool {
	if !m.shared.emptyForConsumer() {
		return false
	}
	for _, r := range *m.lanes.Load() {
		if r.tail.Load() != r.headLocal {
			return false
		}
	}
	return true
}

// Wait blocks the consumer until something may be available in m, Wake is
// called, or timeout passes (timeout < 0: no timeout; 0: do not block).
// Consumer only. A return does not promise that Drain finds anything.
//
// No wakeup is lost: the consumer first sets sleeping, then re-checks every
// lane, and only then blocks on the one-slot wake channel. A producer first
// publishes its envelope (atomic store of the tail or slot sequence), then
// loads sleeping and, when it is set, clears it and sends a token. Go
// atomics are sequentially consistent, so either the consumer's re-check
// sees the envelope or the producer sees the flag. A token left over from an
// earlier race only causes one spurious return.
func (m *Mailbox) Wait(timeout time.Duration) {
	if timeout == 0 {
		return
	}
	m.sleeping.Store(1)
	if !m.empty() {
		m.sleeping.Store(0)
		return
	}
	if timeout < 0 {
		<-m.wake
		m.sleeping.Store(0)
		return
	}
	if m.timer == nil {
		m.timer = time.NewTimer(timeout)
	} else {
		m.timer.Reset(timeout)
	}
	select {
	case <-m.wake:
		m.timer.Stop()
	case <-m.timer.C:
	}
	m.sleeping.Store(0)
}

// Wake wakes the consumer if it is blocked in Wait, or makes its next Wait
// return at once. Safe from any goroutine.
func (m *Mailbox) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// signal wakes a sleeping consumer after a successful push. The common case,
// a consumer that is not sleeping, costs one atomic load.
func (m *Mailbox) signal() {
	if m.sleeping.Load() != 0 && m.sleeping.CompareAndSwap(1, 0) {
		m.Wake()
	}
}

// spscRing is a bounded single-producer single-consumer ring. The producer
// owns tailLocal and cachedHead and publishes tail; the consumer owns
// headLocal and cachedTail and publishes head once per drained batch. Each
// side re-reads the other's index only when its cached copy says the ring
// is full (producer) or empty (consumer).
type spscRing struct {
	_          pad
	tail       atomic.Uint64 // next slot to write; written by the producer
	tailLocal  uint64        // producer's copy of tail
	cachedHead uint64        // producer's last view of head
	_          pad
	head       atomic.Uint64 // next slot to read; written by the consumer
	headLocal  uint64        // consumer's copy of head
	cachedTail uint64        // consumer's last view of tail
	_          pad
	mask       uint64
	buf        []format.Envelope
}

func newSPSCRing(capacity int) *spscRing {
	return &spscRing{mask: uint64(capacity - 1), buf: make([]format.Envelope, capacity)}
}

func (r *spscRing) push(e *format.Envelope) bool {
	t := r.tailLocal
	if t-r.cachedHead >= uint64(len(r.buf)) {
		r.cachedHead = r.head.Load()
		if t-r.cachedHead >= uint64(len(r.buf)) {
			return false
		}
	}
	r.buf[t&r.mask] = *e
	r.tailLocal = t + 1
	r.tail.Store(t + 1)
	return true
}

// drain appends up to want envelopes and returns how many it took.
func (r *spscRing) drain(dst []format.Envelope, want int) ([]format.Envelope, int) {
	h := r.headLocal
	avail := r.cachedTail - h
	if avail < uint64(want) {
		r.cachedTail = r.tail.Load()
		avail = r.cachedTail - h
	}
	if avail == 0 {
		return dst, 0
	}
	k := int(min(avail, uint64(want)))
	for i := 0; i < k; i++ {
		s := &r.buf[(h+uint64(i))&r.mask]
		dst = append(dst, *s)
		*s = format.Envelope{}
	}
	r.headLocal = h + uint64(k)
	r.head.Store(r.headLocal)
	return dst, k
}

func (r *spscRing) len() int {
	h := r.head.Load()
	t := r.tail.Load()
	if t < h {
		return 0
	}
	return int(t - h)
}

// mpscRing is a bounded multi-producer single-consumer queue with one
// sequence number per slot (Vyukov's bounded queue). A slot whose sequence
// equals a producer's claimed position is free for it; the producer writes
// the envelope and stores position+1, which hands the slot to the consumer;
// the consumer clears the slot and stores position+capacity, which hands it
// to the producer of the next lap.
type mpscRing struct {
	_       pad
	enqPos  atomic.Uint64 // next position to claim; CAS by producers
	_       pad
	deqPos  atomic.Uint64 // next position to consume; written by the consumer
	deqHead uint64        // consumer's copy of deqPos
	_       pad
	mask    uint64
	slots   []mpscSlot
}

type mpscSlot struct {
	seq atomic.Uint64
	e   format.Envelope
}

func (q *mpscRing) init(capacity int) {
	q.mask = uint64(capacity - 1)
	q.slots = make([]mpscSlot, capacity)
	for i := range q.slots {
		q.slots[i].seq.Store(uint64(i))
	}
}

func (q *mpscRing) push(e *format.Envelope) bool {
	pos := q.enqPos.Load()
	for {
		s := &q.slots[pos&q.mask]
		seq := s.seq.Load()
		switch d := int64(seq - pos); {
		case d == 0:
			if q.enqPos.CompareAndSwap(pos, pos+1) {
				s.e = *e
				s.seq.Store(pos + 1)
				return true
			}
			pos = q.enqPos.Load()
		case d < 0:
			return false // the slot still holds the previous lap: full
		default:
			pos = q.enqPos.Load() // another producer claimed pos
		}
	}
}

func (q *mpscRing) drain(dst []format.Envelope, want int) ([]format.Envelope, int) {
	pos := q.deqHead
	k := 0
	for k < want {
		s := &q.slots[pos&q.mask]
		if s.seq.Load() != pos+1 {
			break
		}
		dst = append(dst, s.e)
		s.e = format.Envelope{}
		s.seq.Store(pos + q.mask + 1)
		pos++
		k++
	}
	if k > 0 {
		q.deqHead = pos
		q.deqPos.Store(pos)
	}
	return dst, k
}

func (q *mpscRing) emptyForConsumer() bool {
	return q.slots[q.deqHead&q.mask].seq.Load() != q.deqHead+1
}

func (q *mpscRing) len() int {
	d := q.deqPos.Load()
	e := q.enqPos.Load()
	if e < d {
		return 0
	}
	return int(e - d)
}
