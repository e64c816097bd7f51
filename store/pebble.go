package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardfn/shardfn/internal/format"
)

// Pebble is the durable Store. Pebble's own WAL is disabled: the engine's
// write-ahead log is the source of truth, and Flush (at a checkpoint) makes
// the store durable up to the position the checkpoint records. After a
// crash Pebble holds some prefix of the applied batches (memtables are
// flushed whole and in order), which replay from the checkpoint overwrites
// idempotently.
type Pebble struct {
	db     *pebble.DB
	logger *slog.Logger

	// failed is closed, and failErr set, at the first background error
	// (a flush or compaction that failed): the store may then never make
	// its writes durable, so Flush fails instead of waiting for a flush
	// that Pebble retries without end.
	failOnce sync.Once
	failErr  error
	failed   chan struct{}

	closeTimeout time.Duration
	unsorted     bool // PebbleOptions.UnsortedBatches
}

var _ Store = (*Pebble)(nil)

// PebbleOptions configure OpenPebble.
type PebbleOptions struct {
	// CacheSize is Pebble's block cache in bytes (default 64 MiB).
	CacheSize int64
	// MemTableSize in bytes (default 64 MiB).
	MemTableSize uint64
	// FS is the filesystem (default: the operating system's).
	FS vfs.FS
	// DisableAutomaticCompactions leaves compactions to explicit calls
	// (the engine's simulator, for runs that depend only on its inputs);
	// writes then never stall on level 0.
	DisableAutomaticCompactions bool
	// Logger receives Pebble's own errors (and its informational lines at
	// debug level). Default slog.Default().
	Logger *slog.Logger
	// CloseTimeout bounds Close; Pebble waits for a flush in progress,
	// which a failing disk may never finish. Default 10s.
	CloseTimeout time.Duration
	// UnsortedBatches writes batch operations to Pebble in the order they
	// are made instead of sorted by key with only the last write of each
	// key kept (BenchmarkApply compares the two).
	UnsortedBatches bool
}

// OpenPebble opens (creating if needed) the store in dir.
func OpenPebble(dir string, o PebbleOptions) (*Pebble, error) {
	if o.CacheSize <= 0 {
		o.CacheSize = 64 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 10 * time.Second
	}
	p := &Pebble{logger: o.Logger, failed: make(chan struct{}), closeTimeout: o.CloseTimeout, unsorted: o.UnsortedBatches}
	opts := &pebble.Options{
		DisableWAL:                  true,
		CacheSize:                   o.CacheSize,
		MemTableSize:                o.MemTableSize,
		FS:                          o.FS,
		DisableAutomaticCompactions: o.DisableAutomaticCompactions,
		Logger:                      slogLogger{o.Logger},
		EventListener: &pebble.EventListener{
			// A failed flush or compaction is reported here (and Pebble
			// retries it without end).
			BackgroundError: func(err error) { p.fail(err) },
		},
	}
	// A Bloom filter per table (10 bits a key, about 1 % false positives)
	// lets a Get of a key that is absent skip a table without searching its
	// index and data blocks: the common case of idempotency-key look-ups
	// (state is read by prefix scans, which filters do not serve). Later
	// levels inherit L0's policy.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	if o.DisableAutomaticCompactions {
		opts.L0StopWritesThreshold = 1 << 30
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: open pebble in %s: another process holds this data directory (%w); stop it or use another --data-dir", dir, err)
		}
		return nil, fmt.Errorf("store: open pebble in %s: %w", dir, err)
	}
	p.db = db
	return p, nil
}

// fail records the first background error.
func (p *Pebble) fail(err error) {
	p.failOnce.Do(func() {
		p.failErr = fmt.Errorf("store: pebble background error: %w", err)
		p.logger.Error("store: pebble failed to flush or compact; the store can no longer make writes durable", "err", err)
		close(p.failed)
	})
}

// Err returns the first background error, if any.
func (p *Pebble) Err() error {
	select {
	case <-p.failed:
		return p.failErr
	default:
		return nil
	}
}

// slogLogger passes Pebble's own log lines to the engine's logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Infof(format string, args ...interface{}) {
	s.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (s slogLogger) Errorf(format string, args ...interface{}) {
	s.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (s slogLogger) Fatalf(format string, args ...interface{}) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	s.l.Error(msg)
	panic(msg)
}

// DB exposes the underlying database (metrics, tests).
func (p *Pebble) DB() *pebble.DB { return p.db }

// LoadInstance implements Store.
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

// LoadMap implements Store.
func (p *Pebble) LoadMap(kg uint16, addrRaw, name []byte, fn func(key, value []byte) bool) error {
	prefix := MapPrefix(nil, kg, addrRaw, name)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixUpper(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(it.Key()[len(prefix):], it.Value()) {
			break
		}
	}
	return it.Error()
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

// GetKey implements Store.
func (p *Pebble) GetKey(h uint64) (KeyEntry, bool, error) {
	v, err := p.Get(keyKey(nil, h))
	if err != nil || v == nil {
		return KeyEntry{}, false, err
	}
	e, err := decodeKeyValue(v)
	return e, err == nil, err
}

// GetReply implements Store.
func (p *Pebble) GetReply(id uint64) (KeptReply, bool, error) {
	v, err := p.Get(replyKey(nil, id))
	if err != nil || v == nil {
		return KeptReply{}, false, err
	}
	r, err := decodeReplyValue(v)
	return r, err == nil, err
}

// Expire implements Store.
func (p *Pebble) Expire(b Batch, now int64, limit int) (int, error) {
	upper := binary.BigEndian.AppendUint64([]byte{'x'}, uint64(max(now, 0))+1)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'x'}, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok && n < limit; ok = it.Next() {
		if key, ok := expired(it.Key()); ok {
			b.Delete(key)
		}
		b.Delete(append([]byte(nil), it.Key()...))
		n++
	}
	return n, it.Error()
}

// ScanTimers implements Store.
func (p *Pebble) ScanTimers(fn func(id uint64, msg []byte) error) error {
	return p.scan('t', idScan(fn))
}

// ScanPending implements Store.
func (p *Pebble) ScanPending(fn func(id uint64, msg []byte) error) error {
	return p.scan('m', idScan(fn))
}

// ScanSpecs implements Store.
func (p *Pebble) ScanSpecs(fn func(fnType string, specs []byte) error) error {
	return p.scan('f', specScan(fn))
}

func (p *Pebble) scan(prefix byte, fn func(key, value []byte) error) error {
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

// Flush implements Store: memtables to synced sstables. It fails, instead
// of waiting, once Pebble reports a background error.
func (p *Pebble) Flush() error {
	if err := p.Err(); err != nil {
		return err
	}
	done, err := p.db.AsyncFlush()
	if err != nil {
		return fmt.Errorf("store: flush: %w", err)
	}
	select {
	case <-done:
		return p.Err()
	case <-p.failed:
		return p.failErr
	}
}

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

// Close implements Store. It gives up after CloseTimeout (a flush that a
// failing disk never finishes), leaving Pebble's goroutines behind.
func (p *Pebble) Close() error {
	done := make(chan error, 1)
	go func() { done <- p.db.Close() }()
	t := time.NewTimer(p.closeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("store: close did not finish within %v (a flush is stuck: %v)", p.closeTimeout, p.Err())
	}
}

// NewBatch implements Store.
func (p *Pebble) NewBatch() Batch { return &pebbleBatch{p: p, b: p.db.NewBatch()} }

type pebbleBatch struct {
	p   *Pebble
	b   *pebble.Batch
	ops []batchOp // point writes kept aside (sorted batches)
	buf []byte
	key []byte
	val []byte
}

func (b *pebbleBatch) SetState(kg uint16, addrRaw, name []byte, writtenAt int64, value []byte) {
	b.key = StateKey(b.key, kg, addrRaw, name)
	b.val = binary.LittleEndian.AppendUint64(b.val[:0], uint64(writtenAt))
	b.val = append(b.val, value...)
	b.set(b.key, b.val)
}

func (b *pebbleBatch) SetMapEntry(kg uint16, addrRaw, name, key, value []byte) {
	b.key = MapEntryKey(b.key, kg, addrRaw, name, key)
	b.set(b.key, value)
}

func (b *pebbleBatch) DeleteMapEntry(kg uint16, addrRaw, name, key []byte) {
	b.key = MapEntryKey(b.key, kg, addrRaw, name, key)
	b.del(b.key)
}

func (b *pebbleBatch) ClearMap(kg uint16, addrRaw, name []byte) {
	b.key = MapPrefix(b.key, kg, addrRaw, name)
	b.flushOps() // the range deletes what came before it, not after
	_ = b.b.DeleteRange(b.key, prefixUpper(b.key), nil)
}

func (b *pebbleBatch) DeleteState(kg uint16, addrRaw, name []byte) {
	b.key = StateKey(b.key, kg, addrRaw, name)
	b.del(b.key)
}

func (b *pebbleBatch) PutTimer(id uint64, msg []byte) {
	b.key = IDKey(b.key, 't', id)
	b.set(b.key, msg)
}

func (b *pebbleBatch) DeleteTimer(id uint64) {
	b.key = IDKey(b.key, 't', id)
	b.del(b.key)
}

func (b *pebbleBatch) PutEgress(name []byte, offset uint64, sourceRaw, typ, payload []byte) {
	b.key = EgressKey(b.key, name, offset)
	b.val = format.AppendEgressValue(b.val[:0], sourceRaw, typ, payload)
	b.set(b.key, b.val)
}

func (b *pebbleBatch) ReplacePending() {
	b.flushOps()
	_ = b.b.DeleteRange([]byte{'m'}, []byte{'m' + 1}, nil)
}

func (b *pebbleBatch) PutPending(id uint64, msg []byte) {
	b.key = IDKey(b.key, 'm', id)
	b.set(b.key, msg)
}

func (b *pebbleBatch) Set(key, value []byte) { b.set(key, value) }

func (b *pebbleBatch) PutKey(h uint64, expireAt int64, id uint64, identity []byte) {
	b.key = keyKey(b.key, h)
	b.val = appendKeyValue(b.val[:0], expireAt, id, identity)
	b.set(b.key, b.val)
	b.key = expiryKey(b.key, expireAt, 'i', h)
	b.set(b.key, nil)
}

func (b *pebbleBatch) PutReply(id uint64, expireAt int64, typ, payload []byte) {
	b.key = replyKey(b.key, id)
	b.val = appendReplyValue(b.val[:0], expireAt, typ, payload)
	b.set(b.key, b.val)
	b.key = expiryKey(b.key, expireAt, 'r', id)
	b.set(b.key, nil)
}

func (b *pebbleBatch) Delete(key []byte) { b.del(key) }

func (b *pebbleBatch) PutSpecs(fnType string, specs []byte) {
	b.key = append(append(b.key[:0], 'f'), fnType...)
	b.set(b.key, specs)
}

func (b *pebbleBatch) Len() int { return int(b.b.Count()) + len(b.ops) }

func (b *pebbleBatch) Reset() {
	b.b.Reset()
	b.ops = b.ops[:0]
	if cap(b.buf) > maxKeptOpBytes {
		b.buf = nil
	}
	b.buf = b.buf[:0]
}

func (b *pebbleBatch) Commit() error {
	b.flushOps()
	if b.b.Empty() {
		return nil
	}
	return b.b.Commit(pebble.NoSync)
}

// Sorted batches. Inserting into Pebble's memtable (a skiplist) is most of
// what applying the log costs; keys inserted in order let each insert
// start its search from the previous one's position instead of the top of
// the list, and a key written several times in one batch needs only its
// last write. So a batch keeps its point writes aside and hands them to
// Pebble sorted by key, the last write of each key only, when it commits
// (or before a range deletion, which must see what came before it).

// batchOp is one point write kept aside: key and value in buf.
type batchOp struct {
	off  uint32 // key at buf[off:off+klen], value after it
	klen uint32
	vlen uint32
	del  bool
}

// maxKeptOpBytes: a larger buffer of kept writes is not kept for reuse.
const maxKeptOpBytes = 8 << 20

func (b *pebbleBatch) set(key, value []byte) {
	if b.p.unsorted {
		_ = b.b.Set(key, value, nil)
		return
	}
	b.ops = append(b.ops, batchOp{off: uint32(len(b.buf)), klen: uint32(len(key)), vlen: uint32(len(value))})
	b.buf = append(append(b.buf, key...), value...)
}

func (b *pebbleBatch) del(key []byte) {
	if b.p.unsorted {
		_ = b.b.Delete(key, nil)
		return
	}
	b.ops = append(b.ops, batchOp{off: uint32(len(b.buf)), klen: uint32(len(key)), del: true})
	b.buf = append(b.buf, key...)
}

func (b *pebbleBatch) opKey(o *batchOp) []byte { return b.buf[o.off : o.off+o.klen] }

// flushOps writes the kept writes into the Pebble batch, sorted by key
// (a key's writes in the order made), the last of each key.
func (b *pebbleBatch) flushOps() {
	if len(b.ops) == 0 {
		return
	}
	// Ties keep the order made: ops are appended with increasing off.
	slices.SortFunc(b.ops, func(x, y batchOp) int {
		if c := bytes.Compare(b.opKey(&x), b.opKey(&y)); c != 0 {
			return c
		}
		return cmp.Compare(x.off, y.off)
	})
	for i := range b.ops {
		o := &b.ops[i]
		k := b.opKey(o)
		if i+1 < len(b.ops) && bytes.Equal(k, b.opKey(&b.ops[i+1])) {
			continue // a later write of the key wins
		}
		if o.del {
			_ = b.b.Delete(k, nil)
		} else {
			_ = b.b.Set(k, b.buf[o.off+o.klen:o.off+o.klen+o.vlen], nil)
		}
	}
	b.ops = b.ops[:0]
	b.buf = b.buf[:0]
}

var _ io.Closer = (*Pebble)(nil)
