package shard

import (
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/internal/format"
)

// Map state: a named value of an instance made of entries (string keys to
// byte values) that are read and written one by one, so that a write costs
// what it changes, not what the map holds. Each entry is its own record
// write and its own store key; the shard caches a loaded map as a Go map
// (maps) until the store has applied its writes and the cache needs room.
//
// An invocation's map writes are gathered in inv.mapOps and applied to the
// cached map only when its record is committed: a failed invocation leaves
// the map as it was. Reads see the invocation's own writes.

// ErrInstanceTooLarge: a write would make an instance's state larger than
// Config.MaxInstanceBytes.
var ErrInstanceTooLarge = errors.New("shard: instance state too large")

// mapState is one cached map of one instance.
type mapState struct {
	m     map[string][]byte
	bytes int64  // keys and values
	seq   uint64 // batch that last wrote it: evictable once applied
	used  uint64 // Step that last used it
}

// mapOp is one map write of an invocation, in call order.
type mapOp struct {
	name  string
	op    byte // format.OpMapSet, OpMapDelete, OpMapClear
	key   string
	value []byte
}

// mapKey names a cached map: the instance's address encoding and the name.
func (s *Shard) mapKey(self format.Address, name string) string {
	s.mapKeyBuf = format.AppendAddress(s.mapKeyBuf[:0], self)
	s.mapKeyBuf = append(s.mapKeyBuf, 0)
	s.mapKeyBuf = append(s.mapKeyBuf, name...)
	return string(s.mapKeyBuf)
}

// loadMap returns the cached map name of self, loading it from the store.
func (s *Shard) loadMap(self format.Address, name string) (*mapState, error) {
	s.mapKeyBuf = format.AppendAddress(s.mapKeyBuf[:0], self)
	raw := len(s.mapKeyBuf)
	s.mapKeyBuf = append(s.mapKeyBuf, 0)
	s.mapKeyBuf = append(s.mapKeyBuf, name...)
	if ms := s.maps[string(s.mapKeyBuf)]; ms != nil {
		ms.used = s.steps
		return ms, nil
	}
	key := string(s.mapKeyBuf)
	ms := &mapState{m: map[string][]byte{}, used: s.steps}
	err := s.cfg.Store.LoadMap(format.KeyGroup(self.Hash()), s.mapKeyBuf[:raw], []byte(name), func(k, v []byte) bool {
		ms.m[string(k)] = append([]byte(nil), v...)
		ms.bytes += int64(len(k) + len(v))
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("load map %s of %s: %w", name, self, err)
	}
	if s.maps == nil {
		s.maps = map[string]*mapState{}
	}
	s.maps[key] = ms
	s.mapBytes += ms.bytes
	return ms, nil
}

// evictMaps drops cached maps the store holds, least recently used first,
// while the maps take more than their budget (half the state cache's).
func (s *Shard) evictMaps() {
	budget := s.cfg.ArenaBudget / 2
	if s.mapBytes <= budget {
		return
	}
	for pass := uint64(0); s.mapBytes > budget && pass < 3; pass++ {
		for k, ms := range s.maps {
			if ms.seq <= s.safeSeq && ms.used+pass < s.steps {
				delete(s.maps, k)
				s.mapBytes -= ms.bytes
				if s.mapBytes <= budget {
					return
				}
			}
		}
	}
}

// mapIndex checks that name is a map of the invocation's function type.
func (inv *Invocation) mapIndex(name string) error {
	if inv.fn != nil {
		for _, n := range inv.fn.MapNames {
			if n == name {
				return nil
			}
		}
	}
	return fmt.Errorf("map state %q is not declared by %s", name, inv.self.FunctionType())
}

// base returns the committed map (cached, or loaded).
func (inv *Invocation) base(name string) (*mapState, error) {
	if err := inv.mapIndex(name); err != nil {
		return nil, err
	}
	return inv.s.loadMap(inv.self, name)
}

// pending returns the invocation's own latest write of key in map name:
// found, deleted, value.
func (inv *Invocation) pending(name, key string) (found, deleted bool, value []byte) {
	for i := len(inv.mapOps) - 1; i >= 0; i-- {
		op := &inv.mapOps[i]
		if op.name != name {
			continue
		}
		switch {
		case op.op == format.OpMapClear:
			return true, true, nil
		case op.key == key:
			return true, op.op == format.OpMapDelete, op.value
		}
	}
	return false, false, nil
}

// MapGet returns the value of key in map name.
func (inv *Invocation) MapGet(name, key string) ([]byte, bool, error) {
	ms, err := inv.base(name)
	if err != nil {
		return nil, false, err
	}
	if found, deleted, v := inv.pending(name, key); found {
		return v, !deleted, nil
	}
	v, ok := ms.m[key]
	return v, ok, nil
}

// MapSet sets key of map name to value (copied).
func (inv *Invocation) MapSet(name, key string, value []byte) error {
	ms, err := inv.base(name)
	if err != nil {
		return err
	}
	if len(value) > inv.s.cfg.MaxStateBytes {
		return fmt.Errorf("%w: an entry of map %s is %d bytes, limit %d", ErrStateTooLarge, name, len(value), inv.s.cfg.MaxStateBytes)
	}
	// The bound counts every entry the invocation sets as new (an
	// overwrite within one invocation is counted twice).
	add := int64(len(key) + len(value))
	if limit := inv.s.cfg.MaxInstanceBytes; limit > 0 && ms.bytes+inv.mapAdd+add > limit {
		return fmt.Errorf("%w: map %s of %s would hold %d bytes, limit %d (Options.MaxInstanceBytes)", ErrInstanceTooLarge, name, inv.self, ms.bytes+inv.mapAdd+add, limit)
	}
	inv.mapAdd += add
	start := len(inv.valBuf)
	inv.valBuf = append(inv.valBuf, value...)
	inv.mapOps = append(inv.mapOps, mapOp{name: name, op: format.OpMapSet, key: key, value: inv.valBuf[start:len(inv.valBuf):len(inv.valBuf)]})
	return nil
}

// MapDelete deletes key of map name.
func (inv *Invocation) MapDelete(name, key string) error {
	if _, err := inv.base(name); err != nil {
		return err
	}
	inv.mapOps = append(inv.mapOps, mapOp{name: name, op: format.OpMapDelete, key: key})
	return nil
}

// MapClear deletes every entry of map name.
func (inv *Invocation) MapClear(name string) error {
	if _, err := inv.base(name); err != nil {
		return err
	}
	inv.mapOps = append(inv.mapOps, mapOp{name: name, op: format.OpMapClear})
	return nil
}

// MapRange calls fn with the entries of map name as the invocation sees
// them, in no particular order, until fn returns false. fn must not write
// the map.
func (inv *Invocation) MapRange(name string, fn func(key string, value []byte) bool) error {
	ms, err := inv.base(name)
	if err != nil {
		return err
	}
	cleared := false
	for i := range inv.mapOps {
		if op := &inv.mapOps[i]; op.name == name && op.op == format.OpMapClear {
			cleared = true
		}
	}
	// The invocation's own live entries first, then the committed ones it
	// did not touch.
	for i := len(inv.mapOps) - 1; i >= 0; i-- {
		op := &inv.mapOps[i]
		if op.name != name || op.op != format.OpMapSet {
			continue
		}
		if found, deleted, _ := inv.pendingAfter(name, op.key, i); found || deleted {
			continue // a later write of the key decides
		}
		if !fn(op.key, op.value) {
			return nil
		}
	}
	if cleared {
		return nil
	}
	for k, v := range ms.m {
		if found, _, _ := inv.pending(name, k); found {
			continue
		}
		if !fn(k, v) {
			return nil
		}
	}
	return nil
}

// pendingAfter reports whether a write of key (or a clear) of map name
// follows op i.
func (inv *Invocation) pendingAfter(name, key string, i int) (found, deleted bool, value []byte) {
	for j := len(inv.mapOps) - 1; j > i; j-- {
		op := &inv.mapOps[j]
		if op.name == name && (op.op == format.OpMapClear || op.key == key) {
			return true, op.op != format.OpMapSet, op.value
		}
	}
	return false, false, nil
}

// MapLen returns the number of entries of map name as the invocation sees
// them.
func (inv *Invocation) MapLen(name string) (int, error) {
	n := 0
	err := inv.MapRange(name, func(string, []byte) bool { n++; return true })
	return n, err
}

// encodeMaps writes the invocation's map writes into the record.
func (inv *Invocation) encodeMaps(rb *format.RecordBuilder) {
	for i := range inv.mapOps {
		op := &inv.mapOps[i]
		rb.MapState(op.name, op.op, inv.now, []byte(op.key), op.value)
	}
}

// applyMaps applies the invocation's map writes to the cached maps; seq is
// the batch the record goes in.
func (s *Shard) applyMaps(inv *Invocation, seq uint64) {
	for i := range inv.mapOps {
		op := &inv.mapOps[i]
		ms, err := s.loadMap(inv.self, op.name) // cached: read by the invocation
		if err != nil {
			s.fail(err)
			return
		}
		before := ms.bytes
		switch op.op {
		case format.OpMapSet:
			if old, ok := ms.m[op.key]; ok {
				ms.bytes -= int64(len(op.key) + len(old))
			}
			ms.m[op.key] = append([]byte(nil), op.value...)
			ms.bytes += int64(len(op.key) + len(op.value))
		case format.OpMapDelete:
			if old, ok := ms.m[op.key]; ok {
				ms.bytes -= int64(len(op.key) + len(old))
				delete(ms.m, op.key)
			}
		case format.OpMapClear:
			clear(ms.m)
			ms.bytes = 0
		}
		ms.seq = seq
		s.mapBytes += ms.bytes - before
	}
}
