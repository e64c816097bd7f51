package store

import (
	"bytes"
	"encoding/binary"
	"sort"
	"sync"

	"github.com/shardfn/shardfn/internal/format"
)

// Memory is an in-memory Store: nothing is durable. Used by the in-memory
// engine (Options.DataDir == "") and by tests. Updates of existing keys do
// not allocate.
type Memory struct {
	mu     sync.RWMutex
	states map[string]map[string]*memVal // instance prefix -> name -> value
	ids    map[byte]map[uint64][]byte    // 't', 'm'
	egress map[string]map[uint64][]byte
	meta   map[string][]byte
	maps   map[string]map[string][]byte // map prefix -> entry key -> value
	closed bool
}

type memVal struct {
	writtenAt int64
	value     []byte
}

var _ Store = (*Memory)(nil)

// NewMemory makes an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{
		states: map[string]map[string]*memVal{},
		ids:    map[byte]map[uint64][]byte{'t': {}, 'm': {}},
		egress: map[string]map[uint64][]byte{},
		meta:   map[string][]byte{},
		maps:   map[string]map[string][]byte{},
	}
}

// LoadInstance implements Store.
func (m *Memory) LoadInstance(kg uint16, addrRaw []byte, fn func(name []byte, writtenAt int64, value []byte)) error {
	var kb [256]byte
	prefix := InstancePrefix(kb[:0], kg, addrRaw)
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	for name, v := range m.states[string(prefix)] {
		fn([]byte(name), v.writtenAt, v.value)
	}
	return nil
}

// LoadMap implements Store.
func (m *Memory) LoadMap(kg uint16, addrRaw, name []byte, fn func(key, value []byte) bool) error {
	prefix := MapPrefix(nil, kg, addrRaw, name)
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	ents := m.maps[string(prefix)]
	keys := make([]string, 0, len(ents))
	for k := range ents {
		keys = append(keys, k)
	}
	vals := make([][]byte, len(keys))
	sort.Strings(keys)
	for i, k := range keys {
		vals[i] = ents[k]
	}
	m.mu.RUnlock()
	for i, k := range keys {
		if !fn([]byte(k), vals[i]) {
			break
		}
	}
	return nil
}

// ReadEgress implements Store.
func (m *Memory) ReadEgress(name string, from uint64, max int, fn func(offset uint64, rec []byte) bool) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	log := m.egress[name]
	for off := from; max > 0; off++ {
		v, ok := log[off]
		if !ok {
			break
		}
		if !fn(off, v) {
			break
		}
		max--
	}
	return nil
}

// GetKey implements Store.
func (m *Memory) GetKey(h uint64) (KeyEntry, bool, error) {
	v, err := m.Get(keyKey(nil, h))
	if err != nil || v == nil {
		return KeyEntry{}, false, err
	}
	e, err := decodeKeyValue(v)
	return e, err == nil, err
}

// GetReply implements Store.
func (m *Memory) GetReply(id uint64) (KeptReply, bool, error) {
	v, err := m.Get(replyKey(nil, id))
	if err != nil || v == nil {
		return KeptReply{}, false, err
	}
	r, err := decodeReplyValue(v)
	return r, err == nil, err
}

// Expire implements Store.
func (m *Memory) Expire(b Batch, now int64, limit int) (int, error) {
	upper := string(binary.BigEndian.AppendUint64([]byte{'x'}, uint64(max(now, 0))+1))
	var keys []string
	m.mu.RLock()
	for k := range m.meta {
		if len(k) > 0 && k[0] == 'x' && k < upper {
			keys = append(keys, k)
		}
	}
	m.mu.RUnlock()
	sort.Strings(keys)
	n := 0
	for _, k := range keys {
		if n == limit {
			break
		}
		if key, ok := expired([]byte(k)); ok {
			b.Delete(key)
		}
		b.Delete([]byte(k))
		n++
	}
	return n, nil
}

// Err implements Store: a Memory store never fails.
func (m *Memory) Err() error { return nil }

// ScanTimers implements Store.
func (m *Memory) ScanTimers(fn func(id uint64, msg []byte) error) error {
	return m.scan('t', idScan(fn))
}

// ScanPending implements Store.
func (m *Memory) ScanPending(fn func(id uint64, msg []byte) error) error {
	return m.scan('m', idScan(fn))
}

// ScanSpecs implements Store.
func (m *Memory) ScanSpecs(fn func(fnType string, specs []byte) error) error {
	return m.scan('f', specScan(fn))
}

func (m *Memory) scan(prefix byte, fn func(key, value []byte) error) error {
	m.mu.RLock()
	var keys [][]byte
	var vals [][]byte
	switch prefix {
	case 't', 'm':
		for id, v := range m.ids[prefix] {
			keys = append(keys, IDKey(nil, prefix, id))
			vals = append(vals, v)
		}
	default:
		for k, v := range m.meta {
			if len(k) > 0 && k[0] == prefix {
				keys = append(keys, []byte(k))
				vals = append(vals, v)
			}
		}
	}
	m.mu.RUnlock()
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return bytes.Compare(keys[idx[a]], keys[idx[b]]) < 0 })
	for _, i := range idx {
		if err := fn(keys[i], vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// Get implements Store.
func (m *Memory) Get(key []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.meta[string(key)]
	if !ok {
		return nil, nil
	}
	return append([]byte(nil), v...), nil
}

// Flush implements Store (nothing to do).
func (m *Memory) Flush() error { return nil }

// Metrics implements Store.
func (m *Memory) Metrics() map[string]float64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return map[string]float64{"instances": float64(len(m.states))}
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// NewBatch implements Store.
func (m *Memory) NewBatch() Batch { return &memBatch{m: m} }

type memOp struct {
	kind      byte // 's' set state, 'd' delete state, 't' put timer, 'T' delete timer, 'e' egress, 'p' put pending, 'P' replace pending, 'k' set meta
	kg        uint16
	a, b, c   []byte
	id        uint64
	writtenAt int64
}

type memBatch struct {
	m   *Memory
	ops []memOp
	buf []byte
}

func (b *memBatch) keep(v []byte) []byte {
	start := len(b.buf)
	b.buf = append(b.buf, v...)
	return b.buf[start:len(b.buf):len(b.buf)]
}

func (b *memBatch) SetState(kg uint16, addrRaw, name []byte, writtenAt int64, value []byte) {
	b.ops = append(b.ops, memOp{kind: 's', kg: kg, a: b.keep(addrRaw), b: b.keep(name), c: b.keep(value), writtenAt: writtenAt})
}

func (b *memBatch) SetMapEntry(kg uint16, addrRaw, name, key, value []byte) {
	b.ops = append(b.ops, memOp{kind: 'q', a: b.keep(MapPrefix(nil, kg, addrRaw, name)), b: b.keep(key), c: b.keep(value)})
}

func (b *memBatch) DeleteMapEntry(kg uint16, addrRaw, name, key []byte) {
	b.ops = append(b.ops, memOp{kind: 'Q', a: b.keep(MapPrefix(nil, kg, addrRaw, name)), b: b.keep(key)})
}

func (b *memBatch) ClearMap(kg uint16, addrRaw, name []byte) {
	b.ops = append(b.ops, memOp{kind: 'X', a: b.keep(MapPrefix(nil, kg, addrRaw, name))})
}

func (b *memBatch) DeleteState(kg uint16, addrRaw, name []byte) {
	b.ops = append(b.ops, memOp{kind: 'd', kg: kg, a: b.keep(addrRaw), b: b.keep(name)})
}

func (b *memBatch) PutTimer(id uint64, msg []byte) {
	b.ops = append(b.ops, memOp{kind: 't', id: id, c: b.keep(msg)})
}

func (b *memBatch) DeleteTimer(id uint64) { b.ops = append(b.ops, memOp{kind: 'T', id: id}) }

func (b *memBatch) PutEgress(name []byte, offset uint64, sourceRaw, typ, payload []byte) {
	nameKept := b.keep(name)
	start := len(b.buf)
	b.buf = format.AppendEgressValue(b.buf, sourceRaw, typ, payload)
	b.ops = append(b.ops, memOp{kind: 'e', a: nameKept, id: offset, c: b.buf[start:len(b.buf):len(b.buf)]})
}

func (b *memBatch) ReplacePending() { b.ops = append(b.ops, memOp{kind: 'P'}) }

func (b *memBatch) PutPending(id uint64, msg []byte) {
	b.ops = append(b.ops, memOp{kind: 'p', id: id, c: b.keep(msg)})
}

func (b *memBatch) Set(key, value []byte) {
	b.ops = append(b.ops, memOp{kind: 'k', a: b.keep(key), c: b.keep(value)})
}

func (b *memBatch) PutKey(h uint64, expireAt int64, id uint64, identity []byte) {
	b.Set(keyKey(nil, h), appendKeyValue(nil, expireAt, id, identity))
	b.Set(expiryKey(nil, expireAt, 'i', h), nil)
}

func (b *memBatch) PutReply(id uint64, expireAt int64, typ, payload []byte) {
	b.Set(replyKey(nil, id), appendReplyValue(nil, expireAt, typ, payload))
	b.Set(expiryKey(nil, expireAt, 'r', id), nil)
}

func (b *memBatch) Delete(key []byte) {
	b.ops = append(b.ops, memOp{kind: 'D', a: b.keep(key)})
}

func (b *memBatch) PutSpecs(fnType string, specs []byte) {
	b.Set(append([]byte{'f'}, fnType...), specs)
}

func (b *memBatch) Len() int { return len(b.ops) }

func (b *memBatch) Reset() {
	clear(b.ops)
	b.ops = b.ops[:0]
	b.buf = b.buf[:0]
}

func (b *memBatch) Commit() error {
	m := b.m
	var kb [512]byte
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for i := range b.ops {
		op := &b.ops[i]
		switch op.kind {
		case 's':
			prefix := InstancePrefix(kb[:0], op.kg, op.a)
			inst := m.states[string(prefix)]
			if inst == nil {
				inst = map[string]*memVal{}
				m.states[string(prefix)] = inst
			}
			if v := inst[string(op.b)]; v != nil {
				v.writtenAt = op.writtenAt
				v.value = append(v.value[:0], op.c...)
			} else {
				inst[string(op.b)] = &memVal{writtenAt: op.writtenAt, value: append([]byte(nil), op.c...)}
			}
		case 'd':
			prefix := InstancePrefix(kb[:0], op.kg, op.a)
			if inst := m.states[string(prefix)]; inst != nil {
				delete(inst, string(op.b))
				if len(inst) == 0 {
					delete(m.states, string(prefix))
				}
			}
		case 'D':
			delete(m.meta, string(op.a))
		case 'q':
			ents := m.maps[string(op.a)]
			if ents == nil {
				ents = map[string][]byte{}
				m.maps[string(op.a)] = ents
			}
			ents[string(op.b)] = append([]byte(nil), op.c...)
		case 'Q':
			if ents := m.maps[string(op.a)]; ents != nil {
				delete(ents, string(op.b))
				if len(ents) == 0 {
					delete(m.maps, string(op.a))
				}
			}
		case 'X':
			delete(m.maps, string(op.a))
		case 't':
			m.ids['t'][op.id] = append([]byte(nil), op.c...)
		case 'T':
			delete(m.ids['t'], op.id)
		case 'p':
			m.ids['m'][op.id] = append([]byte(nil), op.c...)
		case 'P':
			clear(m.ids['m'])
		case 'e':
			log := m.egress[string(op.a)]
			if log == nil {
				log = map[uint64][]byte{}
				m.egress[string(op.a)] = log
			}
			log[op.id] = append([]byte(nil), op.c...)
		case 'k':
			m.meta[string(op.a)] = append([]byte(nil), op.c...)
		}
	}
	return nil
}
