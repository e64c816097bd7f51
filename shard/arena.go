package shard

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"sync/atomic"
)

// Arena entry layout inside a chunk (or a big-entry allocation), little
// endian, no alignment:
//
//	+-----------+-----------+-----------+-----+-----+
//	| keyLen u32| valLen u32|  lsn u64  | key | val |
//	+-----------+-----------+-----------+-----+-----+
//	 0           4           8           16
//
// An entry's location is a uint64: chunk id << 32 | byte offset, or
// arenaBig | big id for an entry stored in its own allocation.
const (
	arenaHeader       = 16
	arenaBig          = uint64(1) << 63
	arenaMinChunk     = 256
	arenaMaxChunk     = 1 << 30
	arenaDefaultChunk = 1 << 20
)

// ArenaStats is a snapshot of an Arena's counters. Counters are cumulative
// since NewArena; byte figures are current values.
type ArenaStats struct {
	Hits      uint64 // Gets that found the key
	Misses    uint64 // Gets that did not
	Evictions uint64 // clean entries dropped to reclaim space
	Kept      uint64 // dirty entries copied forward while reclaiming a chunk
	Grown     uint64 // chunks added beyond the budget because all were dirty
	Entries   int64  // live entries
	Bytes     int64  // live entry bytes (headers, keys, values), chunks and big entries
	BigBytes  int64  // bytes of entries stored outside the chunks (included in Bytes and Capacity)
	Capacity  int64  // bytes allocated: chunks plus big entries; exceeds Budget when dirty state does not fit
	Budget    int64  // the configured budget for chunk bytes
}

// Arena is a shard's state cache: values keyed by byte strings, stored in a
// log-structured ring of large chunks under a memory budget.
//
// Entries are appended to the current chunk. When the ring has reached the
// budget and the current chunk is full, the oldest chunk is reclaimed in
// place: each entry the index still points to is dropped if it is clean
// (lsn <= the safe LSN, so its value is in the backing store) or kept, moved
// to the front of the chunk, if it is dirty; dead bytes (replaced or deleted
// entries) vanish. Writing then continues after the kept entries. The cache
// therefore evicts in roughly insertion order (FIFO by last write), and
// never drops a dirty entry: if a whole revolution of the ring frees no room,
// it adds a chunk beyond the budget (Stats.Grown, Capacity > Budget) and
// gives such extra chunks back once reclaiming empties them.
//
// The index is a map[uint64]uint64 from the key's 64-bit hash to the entry's
// location, so it holds no pointers and millions of entries cost the garbage
// collector nothing to scan. Gets compare the stored key. A key whose hash
// is already taken by another key goes into a small overflow map keyed by
// the key itself; a lookup checks the hash index, then the overflow map.
//
// An entry larger than a quarter of a chunk is stored in its own heap
// allocation, tracked in a small map; such entries are dropped, when clean,
// each time a chunk is reclaimed. They count in Capacity but the budget
// governs chunks only.
//
// Ownership: an Arena belongs to one goroutine (its shard). Only Stats may
// be called from other goroutines; everything else is unsynchronised.
type Arena struct {
	budget     int64
	chunkSize  int
	maxChunks  int // chunks the budget allows
	bigLimit   int // entries larger than this go to bigs
	chunks     [][]byte
	used       []int   // bytes written, per chunk id
	ring       []int32 // chunk ids in age order, cyclic; head is written
	head       int
	freeChunks []int32 // ids of released chunks, for reuse

	index    map[uint64]uint64
	overflow map[string]uint64 // keys whose hash the index holds for another key
	bigs     map[uint64][]byte
	bigSeq   uint64

	safe uint64
	seed maphash.Seed
	hash func([]byte) uint64 // nil: maphash with seed; tests inject others

	st struct {
		hits, misses, evictions, kept, grown atomic.Uint64
		entries, bytes, bigBytes, capacity   atomic.Int64
	}
}

// NewArena returns an empty arena whose chunks total at most budget bytes
// (while clean entries can be evicted). chunkSize is the size of one chunk;
// <= 0 means 1 MiB. chunkSize is lowered so the budget holds at least 4
// chunks, and kept within [256 B, 1 GiB]; budget is raised to 4 chunks of
// 256 B if smaller. Chunks are allocated as they are first needed.
func NewArena(budget int64, chunkSize int) *Arena {
	if chunkSize <= 0 {
		chunkSize = arenaDefaultChunk
	}
	if budget < 4*arenaMinChunk {
		budget = 4 * arenaMinChunk
	}
	if int64(chunkSize) > budget/4 {
		chunkSize = int(budget / 4)
	}
	chunkSize = max(min(chunkSize, arenaMaxChunk), arenaMinChunk)
	a := &Arena{
		budget:    budget,
		chunkSize: chunkSize,
		maxChunks: int(budget / int64(chunkSize)),
		bigLimit:  chunkSize / 4,
		index:     make(map[uint64]uint64),
		overflow:  make(map[string]uint64),
		bigs:      make(map[uint64][]byte),
		seed:      maphash.MakeSeed(),
	}
	return a
}

// ChunkSize returns the effective chunk size.
func (a *Arena) ChunkSize() int { return a.chunkSize }

func (a *Arena) hashOf(key []byte) uint64 {
	if a.hash != nil {
		return a.hash(key)
	}
	return maphash.Bytes(a.seed, key)
}

// entryAt returns the bytes starting at the entry at loc.
func (a *Arena) entryAt(loc uint64) []byte {
	if loc&arenaBig != 0 {
		return a.bigs[loc&^arenaBig]
	}
	return a.chunks[loc>>32][uint32(loc):]
}

func entryHeader(b []byte) (keyLen, valLen int, lsn uint64) {
	return int(binary.LittleEndian.Uint32(b)), int(binary.LittleEndian.Uint32(b[4:])), binary.LittleEndian.Uint64(b[8:])
}

func entryKey(b []byte) []byte {
	kl := int(binary.LittleEndian.Uint32(b))
	return b[arenaHeader : arenaHeader+kl]
}

// find returns the location of key, and whether it lives in the overflow
// map.
func (a *Arena) find(h uint64, key []byte) (loc uint64, inOverflow, ok bool) {
	if loc, ok := a.index[h]; ok && bytes.Equal(entryKey(a.entryAt(loc)), key) {
		return loc, false, true
	}
	if len(a.overflow) > 0 {
		if loc, ok := a.overflow[string(key)]; ok {
			return loc, true, true
		}
	}
	return 0, false, false
}

// Get returns the value and lsn of key. val aliases the arena: it is valid
// only until the next Put or Delete on this arena (either may move or
// overwrite it), and must not be modified.
func (a *Arena) Get(key []byte) (val []byte, lsn uint64, ok bool) {
	loc, _, ok := a.find(a.hashOf(key), key)
	if !ok {
		a.st.misses.Add(1)
		return nil, 0, false
	}
	a.st.hits.Add(1)
	b := a.entryAt(loc)
	kl, vl, lsn := entryHeader(b)
	return b[arenaHeader+kl : arenaHeader+kl+vl : arenaHeader+kl+vl], lsn, true
}

// Put stores a copy of key and val, replacing any previous entry of key.
// lsn is the log position of the write that produced val; 0 (or any lsn <=
// the safe LSN) marks the entry clean, evictable. val must not alias memory
// returned by Get on this arena (copy it first): making room may move it.
// Put never fails: if no clean entry can make room it grows the arena
// beyond its budget.
func (a *Arena) Put(key []byte, val []byte, lsn uint64) {
	if len(key) > 1<<31 || len(val) > 1<<31 {
		panic("shard: Arena.Put: key or value over 2 GiB")
	}
	h := a.hashOf(key)
	size := arenaHeader + len(key) + len(val)
	// Write the new entry first, then repoint the index: the old entry (if
	// any) stays indexed while room is made, so reclaiming treats it like
	// any other (evicts or moves it), and replacing costs one map store.
	var loc uint64
	var b []byte
	if size > a.bigLimit {
		b = make([]byte, size)
		loc = arenaBig | a.bigSeq
		a.bigSeq++
		a.bigs[loc&^arenaBig] = b
		a.st.bigBytes.Add(int64(size))
		a.st.capacity.Add(int64(size))
	} else {
		c := a.room(size)
		off := a.used[c]
		b = a.chunks[c][off : off+size]
		a.used[c] += size
		loc = uint64(c)<<32 | uint64(off)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(key)))
	binary.LittleEndian.PutUint32(b[4:], uint32(len(val)))
	binary.LittleEndian.PutUint64(b[8:], lsn)
	copy(b[arenaHeader:], key)
	copy(b[arenaHeader+len(key):], val)
	if old, inOverflow, ok := a.find(h, key); ok {
		a.release(old)
		a.setLoc(h, key, loc, inOverflow)
	} else if _, taken := a.index[h]; !taken {
		a.index[h] = loc
		a.st.entries.Add(1)
	} else {
		a.overflow[string(key)] = loc
		a.st.entries.Add(1)
	}
	a.st.bytes.Add(int64(size))
}

// Delete removes key, if present.
func (a *Arena) Delete(key []byte) {
	h := a.hashOf(key)
	if loc, inOverflow, ok := a.find(h, key); ok {
		a.drop(h, key, loc, inOverflow)
	}
}

// drop unindexes the entry of key at loc and releases a big entry. The
// bytes of a chunk entry become dead and vanish when the chunk is reclaimed.
// key must not alias the entry's bytes in a chunk that is being compacted
// after drop returns (callers use it before moving anything).
func (a *Arena) drop(h uint64, key []byte, loc uint64, inOverflow bool) {
	if inOverflow {
		delete(a.overflow, string(key))
	} else {
		delete(a.index, h)
	}
	a.release(loc)
	a.st.entries.Add(-1)
}

// release accounts for the bytes of the (already or about to be
// unindexed) entry at loc and frees it if it is a big entry.
func (a *Arena) release(loc uint64) {
	kl, vl, _ := entryHeader(a.entryAt(loc))
	size := int64(arenaHeader + kl + vl)
	if loc&arenaBig != 0 {
		delete(a.bigs, loc&^arenaBig)
		a.st.bigBytes.Add(-size)
		a.st.capacity.Add(-size)
	}
	a.st.bytes.Add(-size)
}

// setLoc repoints key's index entry (which must exist) to loc.
func (a *Arena) setLoc(h uint64, key []byte, loc uint64, inOverflow bool) {
	if inOverflow {
		a.overflow[string(key)] = loc
	} else {
		a.index[h] = loc
	}
}

// SetSafeLSN declares that every write with lsn <= safe is in the backing
// store, so entries with such an lsn may be evicted. It normally only grows;
// a smaller value makes more entries unevictable again. It does not evict
// by itself.
func (a *Arena) SetSafeLSN(lsn uint64) { a.safe = lsn }

// SafeLSN returns the value last passed to SetSafeLSN.
func (a *Arena) SafeLSN() uint64 { return a.safe }

// Len returns the number of entries.
func (a *Arena) Len() int { return int(a.st.entries.Load()) }

// Stats returns a snapshot of the counters. Safe from any goroutine; the
// fields are read one by one, so a snapshot taken during a Put may mix
// values from before and after it.
func (a *Arena) Stats() ArenaStats {
	return ArenaStats{
		Hits:      a.st.hits.Load(),
		Misses:    a.st.misses.Load(),
		Evictions: a.st.evictions.Load(),
		Kept:      a.st.kept.Load(),
		Grown:     a.st.grown.Load(),
		Entries:   a.st.entries.Load(),
		Bytes:     a.st.bytes.Load(),
		BigBytes:  a.st.bigBytes.Load(),
		Capacity:  a.st.capacity.Load(),
		Budget:    a.budget,
	}
}

// RangeDirty calls fn for every entry with lsn > the safe LSN (the entries
// that eviction keeps), in no particular order, until fn returns false. key
// and val alias the arena and are valid only during the call; fn must not
// modify the arena.
func (a *Arena) RangeDirty(fn func(key, val []byte, lsn uint64) bool) {
	visit := func(loc uint64, b []byte) bool {
		kl, vl, lsn := entryHeader(b)
		if lsn <= a.safe || !a.live(loc, b[arenaHeader:arenaHeader+kl]) {
			return true
		}
		return fn(b[arenaHeader:arenaHeader+kl], b[arenaHeader+kl:arenaHeader+kl+vl], lsn)
	}
	for _, c := range a.ring {
		buf := a.chunks[c]
		for off := 0; off < a.used[c]; {
			b := buf[off:]
			kl, vl, _ := entryHeader(b)
			if !visit(uint64(c)<<32|uint64(off), b) {
				return
			}
			off += arenaHeader + kl + vl
		}
	}
	for id, b := range a.bigs {
		if !visit(arenaBig|id, b) {
			return
		}
	}
}

// live reports whether the index points at loc for key.
func (a *Arena) live(loc uint64, key []byte) bool {
	cur, _, ok := a.find(a.hashOf(key), key)
	return ok && cur == loc
}

// room returns a chunk with at least size free bytes at its end, making it
// the current chunk: the current one, a fresh one while under budget, or a
// reclaimed one.
func (a *Arena) room(size int) int32 {
	if len(a.ring) > 0 {
		if c := a.ring[a.head]; a.chunkSize-a.used[c] >= size {
			return c
		}
	}
	if len(a.ring) < a.maxChunks {
		return a.addChunk()
	}
	a.evictBigs()
	for tries := len(a.ring); tries > 0; tries-- {
		pos := a.head + 1
		if pos == len(a.ring) {
			pos = 0
		}
		c := a.ring[pos]
		a.reclaim(c)
		if a.used[c] == 0 && len(a.ring) > a.maxChunks {
			a.releaseChunk(pos) // an extra chunk from an earlier grow
			continue
		}
		a.head = pos
		if a.chunkSize-a.used[c] >= size {
			return c
		}
	}
	// A whole revolution freed no room: dirty entries fill every chunk.
	a.st.grown.Add(1)
	return a.addChunk()
}

// addChunk inserts a fresh chunk after the head and makes it the head.
func (a *Arena) addChunk() int32 {
	var c int32
	if n := len(a.freeChunks); n > 0 {
		c = a.freeChunks[n-1]
		a.freeChunks = a.freeChunks[:n-1]
		a.chunks[c] = make([]byte, a.chunkSize)
	} else {
		c = int32(len(a.chunks))
		a.chunks = append(a.chunks, make([]byte, a.chunkSize))
		a.used = append(a.used, 0)
	}
	a.used[c] = 0
	pos := 0
	if len(a.ring) > 0 {
		pos = a.head + 1
	}
	a.ring = append(a.ring, 0)
	copy(a.ring[pos+1:], a.ring[pos:])
	a.ring[pos] = c
	a.head = pos
	a.st.capacity.Add(int64(a.chunkSize))
	return c
}

// releaseChunk frees the empty chunk at ring position pos.
func (a *Arena) releaseChunk(pos int) {
	c := a.ring[pos]
	a.chunks[c] = nil
	a.freeChunks = append(a.freeChunks, c)
	a.ring = append(a.ring[:pos], a.ring[pos+1:]...)
	if pos < a.head {
		a.head--
	}
	a.st.capacity.Add(-int64(a.chunkSize))
}

// reclaim compacts chunk c in place: live dirty entries move to its front
// (copy is a memmove, and the write offset never passes the read offset),
// live clean entries are evicted, dead bytes disappear.
func (a *Arena) reclaim(c int32) {
	buf := a.chunks[c]
	end := a.used[c]
	w := 0
	for r := 0; r < end; {
		kl, vl, lsn := entryHeader(buf[r:])
		size := arenaHeader + kl + vl
		key := buf[r+arenaHeader : r+arenaHeader+kl]
		h := a.hashOf(key)
		if loc, inOverflow, ok := a.find(h, key); ok && loc == uint64(c)<<32|uint64(r) {
			if lsn <= a.safe {
				a.drop(h, key, loc, inOverflow)
				a.st.evictions.Add(1)
			} else {
				a.setLoc(h, key, uint64(c)<<32|uint64(w), inOverflow)
				copy(buf[w:], buf[r:r+size])
				w += size
				a.st.kept.Add(1)
			}
		}
		r += size
	}
	a.used[c] = w
}

// evictBigs drops the clean big entries; called whenever chunks are
// reclaimed, that is under memory pressure.
func (a *Arena) evictBigs() {
	for id, b := range a.bigs {
		_, _, lsn := entryHeader(b)
		if lsn > a.safe {
			continue
		}
		key := entryKey(b)
		h := a.hashOf(key)
		loc, inOverflow, ok := a.find(h, key)
		if !ok || loc != arenaBig|id {
			panic("shard: Arena: big entry not indexed")
		}
		a.drop(h, key, loc, inOverflow)
		a.st.evictions.Add(1)
	}
}
