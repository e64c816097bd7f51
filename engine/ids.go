package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shardfn/shardfn/shard"
	"github.com/shardfn/shardfn/store"
)

// Message ids are unique across the engine's whole life: the log, the
// store's timers and in-flight messages, and the request table key on them,
// and a restored message must never meet a new one with its id.
//
// They come from one 63-bit counter (the top bit is left to ids made
// outside the engine's counter). The counter is reserved durably in spans:
// the store records the end of the current span before any id of it is
// handed out, and the next Open (even after a crash or a failed Open)
// starts at that end. Shards take blocks of idBlock ids at a time, so the
// shared counter is touched once per block; ingress takes single ids.
const (
	idBlock  = 1 << 12
	idSpan   = 1 << 40
	idLimit  = 1 << 63
	idsKey   = "Mids"
	bootKey  = "Mboot" // before ids were reserved: a 16-bit boot number in the id's top bits
	bootBits = 48
)

// errIDsExhausted: the 63-bit id space is used up (at a million ids a second,
// after about 290,000 years).
var errIDsExhausted = errors.New("engine: message id space exhausted")

// idAllocator hands out message ids (shard.IDSource). Safe for concurrent
// use.
type idAllocator struct {
	next    atomic.Uint64 // next id not yet handed out
	durable atomic.Uint64 // end of the durable reservation
	mu      sync.Mutex    // serialises reservations
	st      store.Store
	// span, in cluster mode, reserves the next span of ids from the
	// cluster (ClusterLink.ReserveIDs) instead of the store.
	span func() (lo, hi uint64, err error)
}

// clusterIDs is the allocator of a cluster engine: spans reserved from
// the cluster, one now and more when it runs out.
func clusterIDs(span func() (lo, hi uint64, err error)) (*idAllocator, error) {
	a := &idAllocator{span: span}
	if _, err := a.takeSpan(0); err != nil {
		return nil, err
	}
	return a, nil
}

// takeSpan is take for a cluster allocator.
func (a *idAllocator) takeSpan(n uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	lo := a.next.Load()
	if lo == 0 || lo+n > a.durable.Load() {
		slo, shi, err := a.span()
		if err != nil {
			return 0, fmt.Errorf("engine: reserve message ids: %w", err)
		}
		if slo == 0 || shi-slo < max(n, idBlock) || shi > idLimit {
			return 0, fmt.Errorf("engine: the cluster reserved ids [%d, %d): too few, or out of range", slo, shi)
		}
		lo = slo
		a.durable.Store(shi)
	}
	a.next.Store(lo + n)
	return lo, nil
}

var _ shard.IDSource = (*idAllocator)(nil)

// openIDs reads the reservation left by the previous Open and reserves the
// next span before any id is used.
func openIDs(st store.Store) (*idAllocator, error) {
	a := &idAllocator{st: st}
	start, err := reservedEnd(st)
	if err != nil {
		return nil, err
	}
	a.next.Store(start)
	a.durable.Store(start)
	if err := a.reserve(start + idSpan); err != nil {
		return nil, err
	}
	return a, nil
}

// reservedEnd is where the ids of this Open start: the end of the last
// reservation, or, for a store written before reservations, above every id
// of the old layout (boot number in the top 16 bits).
func reservedEnd(st store.Store) (uint64, error) {
	b, err := st.Get([]byte(idsKey))
	if err != nil {
		return 0, fmt.Errorf("engine: read id reservation: %w", err)
	}
	if b != nil {
		if len(b) != 8 {
			return 0, fmt.Errorf("%w: id reservation of %d bytes", store.ErrCorrupt, len(b))
		}
		return binary.LittleEndian.Uint64(b), nil
	}
	bb, err := st.Get([]byte(bootKey))
	if err != nil {
		return 0, fmt.Errorf("engine: read boot number: %w", err)
	}
	if len(bb) == 2 {
		return min(uint64(binary.LittleEndian.Uint16(bb))+1, 1<<(63-bootBits)-1) << bootBits, nil
	}
	return 1, nil // id 0 means "none"
}

// reserve makes end the durable end of the reservation.
func (a *idAllocator) reserve(end uint64) error {
	if end > idLimit {
		return errIDsExhausted
	}
	b := a.st.NewBatch()
	b.Set([]byte(idsKey), binary.LittleEndian.AppendUint64(nil, end))
	if err := b.Commit(); err != nil {
		return fmt.Errorf("engine: reserve message ids: %w", err)
	}
	if err := a.st.Flush(); err != nil {
		return fmt.Errorf("engine: reserve message ids: %w", err)
	}
	a.durable.Store(end)
	return nil
}

// take hands out n ids [lo, lo+n), reserving more when they pass the
// durable reservation.
func (a *idAllocator) take(n uint64) (uint64, error) {
	if a.span != nil {
		return a.takeSpan(n)
	}
	lo := a.next.Add(n) - n
	hi := lo + n
	if hi <= a.durable.Load() {
		return lo, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for hi > a.durable.Load() {
		if err := a.reserve(a.durable.Load() + idSpan); err != nil {
			return 0, err
		}
	}
	return lo, nil
}

// NextBlock implements shard.IDSource.
func (a *idAllocator) NextBlock() (lo, hi uint64, err error) {
	lo, err = a.take(idBlock)
	return lo, lo + idBlock, err
}

// one hands out one id (ingress).
func (a *idAllocator) one() (uint64, error) { return a.take(1) }
