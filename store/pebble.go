package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble is the durable Store. Pebble's own WAL is disabled: the engine's
// write-ahead log is the source of truth, and Flush (at a checkpoint) makes
// the store durable up to the position the checkpoint records. After a
// crash Pebble holds some prefix of the applied batches (memtables are
// flushed whole and in order), which replay from the checkpoint overwrites
// idempotently.
type Pebble struct {
	db *pebble.DB
}

var _ Store = (*Pebble)(nil)

// PebbleOptions configure OpenPebble.
type PebbleOptions struct {
	// CacheSize is Pebble's block cache in bytes (default 64 MiB).
	CacheSize int64
	// MemTableSize in bytes (default 64 MiB).
	MemTableSize uint64
}

// OpenPebble opens (creating if needed) the store in dir.
func OpenPebble(dir string, o PebbleOptions) (*Pebble, error) {
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20
	}
	opts := &pebble.Options{
		DisableWAL:   true,
		CacheSize:    o.CacheSize,
		MemTableSize: o.MemTableSize,
		Logger:       quietLogger{},
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("store: open pebble in %s: %w", dir, err)
	}
	return &Pebble{db: db}, nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// DB exposes the underlying database (metrics, tests).
func (p *Pebble) DB() *pebble.DB { return p.db }

// LoadInstance implements shard.StateReader.
func (p *Pebble) LoadInstance(kg uint16, addrRaw []byte, fn func(name []byte, writtenAt int64, value []byte)) error {
	var kb [256]byte
	prefix := InstancePrefix(kb[:0], kg, addrRaw)
	upper := prefixUpper(prefix)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		name, err := splitStateKeyName(it.Key(), len(prefix))
		if err != nil {
			// A longer address sharing the prefix bytes cannot occur: the
			// address encoding is length-prefixed, so this is corruption.
			return err
		}
		v := it.Value()
		if len(v) < 8 {
			return fmt.Errorf("%w: state value of %q shorter than its header", ErrCorrupt, name)
		}
		fn(name, int64(binary.LittleEndian.Uint64(v)), v[8:])
	}
	return it.Error()
}

func prefixUpper(prefix []byte) []byte {
	up := append([]byte(nil), prefix...)
	for i := len(up) - 1; i >= 0; i-- {
		if up[i] != 0xff {
			up[i]++
			return up[:i+1]
		}
	}
	return nil
}

// ReadEgress implements Store.
func (p *Pebble) ReadEgress(name string, from uint64, max int, fn func(offset uint64, rec []byte) bool) error {
	lower := EgressKey(nil, []byte(name), from)
	upper := prefixUpper(EgressPrefix(nil, []byte(name)))
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	next := from
	for ok := it.First(); ok && max > 0; ok = it.Next() {
		k := it.Key()
		off := binary.BigEndian.Uint64(k[len(k)-8:])
		if off != next {
			break // offsets are dense; a gap means not yet applied
		}
		if !fn(off, it.Value()) {
			break
		}
		next++
		max--
	}
	return it.Error()
}

// Scan implements Store.
func (p *Pebble) Scan(prefix byte, fn func(key, value []byte) error) error {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// Get implements Store.
func (p *Pebble) Get(key []byte) ([]byte, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, nil
}

// Flush implements Store: memtables to synced sstables.
func (p *Pebble) Flush() error { return p.db.Flush() }

// Metrics implements Store.
func (p *Pebble) Metrics() map[string]float64 {
	m := p.db.Metrics()
	return map[string]float64{
		"disk_usage_bytes":      float64(m.DiskSpaceUsage()),
		"memtable_bytes":        float64(m.MemTable.Size),
		"compactions_total":     float64(m.Compact.Count),
		"flushes_total":         float64(m.Flush.Count),
		"block_cache_hits":      float64(m.BlockCache.Hits),
		"block_cache_misses":    float64(m.BlockCache.Misses),
		"block_cache_bytes":     float64(m.BlockCache.Size),
		"read_amplification":    float64(m.ReadAmp()),
		"sstables":              float64(m.Total().TablesCount),
		"estimated_debt_bytes":  float64(m.Compact.EstimatedDebt),
		"l0_sublevels":          float64(m.Levels[0].Sublevels),
		"table_iterators_total": float64(m.TableIters),
	}
}

// Close implements Store.
func (p *Pebble) Close() error { return p.db.Close() }

// NewBatch implements Store.
func (p *Pebble) NewBatch() Batch { return &pebbleBatch{p: p, b: p.db.NewBatch()} }

type pebbleBatch struct {
	p   *Pebble
	b   *pebble.Batch
	key []byte
	val []byte
}

func (b *pebbleBatch) SetState(kg uint16, addrRaw, name []byte, writtenAt int64, value []byte) {
	b.key = StateKey(b.key, kg, addrRaw, name)
	b.val = binary.LittleEndian.AppendUint64(b.val[:0], uint64(writtenAt))
	b.val = append(b.val, value...)
	_ = b.b.Set(b.key, b.val, nil)
}

func (b *pebbleBatch) DeleteState(kg uint16, addrRaw, name []byte) {
	b.key = StateKey(b.key, kg, addrRaw, name)
	_ = b.b.Delete(b.key, nil)
}

func (b *pebbleBatch) PutTimer(id uint64, msg []byte) {
	b.key = IDKey(b.key, 't', id)
	_ = b.b.Set(b.key, msg, nil)
}

func (b *pebbleBatch) DeleteTimer(id uint64) {
	b.key = IDKey(b.key, 't', id)
	_ = b.b.Delete(b.key, nil)
}

func (b *pebbleBatch) PutEgress(name []byte, offset uint64, sourceRaw, typ, payload []byte) {
	b.key = EgressKey(b.key, name, offset)
	b.val = AppendEgressValue(b.val[:0], sourceRaw, typ, payload)
	_ = b.b.Set(b.key, b.val, nil)
}

func (b *pebbleBatch) ReplacePending() {
	_ = b.b.DeleteRange([]byte{'m'}, []byte{'m' + 1}, nil)
}

func (b *pebbleBatch) PutPending(id uint64, msg []byte) {
	b.key = IDKey(b.key, 'm', id)
	_ = b.b.Set(b.key, msg, nil)
}

func (b *pebbleBatch) Set(key, value []byte) { _ = b.b.Set(key, value, nil) }

func (b *pebbleBatch) Len() int { return int(b.b.Count()) }

func (b *pebbleBatch) Reset() { b.b.Reset() }

func (b *pebbleBatch) Commit() error {
	if b.b.Empty() {
		return nil
	}
	return b.b.Commit(pebble.NoSync)
}

var _ io.Closer = (*Pebble)(nil)
