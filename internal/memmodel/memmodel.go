// Package memmodel is the memory model of the shardfn server (cmd/engine):
// from its limits it derives a bound on the process's resident memory, term
// by term, and the soft limit cmd/engine gives the Go runtime. The terms
// are bounds the code enforces (each names where); none is fitted to a
// measurement. cmd/engine sets the Go memory limit from it, make soak checks
// the peak RSS against it, and cmd/engine/README.md ("Memory") and
// docs/design.md state the same formula.
//
// RSS <= MemoryBudget + Overhead, where
//
//	Overhead = GoLimit + OffHeap + Binary - MemoryBudget
//	GoLimit  = 1.125 x (sum of the Go heap terms)          (GC headroom: 12.5 %)
//	OffHeap  = Pebble block cache + 2 x memtable size     (C memory, with cgo)
//	Binary   = 32 MiB                                     (text, data, C runtime)
//
// and the Go heap terms are listed by Terms.
package memmodel

import (
	"cmp"
	"fmt"
	"runtime"
)

// Params are the limits the bound is derived from (cmd/engine's flags and
// the engine's defaults).
type Params struct {
	MemoryBudget    int64 // --memory-budget (engine.Options.MemoryBudget)
	MaxQueuedBytes  int64 // engine.Options.MaxQueuedBytes (default 64 MiB)
	MaxBodyInFlight int64 // --max-body-in-flight
	MaxEgressBytes  int64 // --max-egress-bytes: one egress answer's records
	MaxEgressReads  int   // --max-egress-reads: egress answers built at once
	MaxConns        int   // --max-conns
	MaxRecordBytes  int64 // engine.Options.MaxRecordBytes (default max(32 MiB, 2 x --max-body))
	WALBufferBytes  int64 // wal.Options.BufferSize (default 4 MiB)
	PebbleCache     int64 // store.PebbleOptions.CacheSize (default 64 MiB)
	PebbleMemTable  int64 // store.PebbleOptions.MemTableSize (default 64 MiB)
}

// Defaults fills zero fields with the engine's defaults.
func (p *Params) Defaults() {
	p.MemoryBudget = cmp.Or(p.MemoryBudget, 256<<20)
	p.MaxQueuedBytes = cmp.Or(p.MaxQueuedBytes, 64<<20)
	p.MaxBodyInFlight = cmp.Or(p.MaxBodyInFlight, 64<<20)
	p.MaxEgressBytes = cmp.Or(p.MaxEgressBytes, 4<<20)
	p.MaxEgressReads = cmp.Or(p.MaxEgressReads, runtime.GOMAXPROCS(0))
	p.MaxConns = cmp.Or(p.MaxConns, 1024)
	p.MaxRecordBytes = cmp.Or(p.MaxRecordBytes, 32<<20)
	p.WALBufferBytes = cmp.Or(p.WALBufferBytes, 4<<20)
	p.PebbleCache = cmp.Or(p.PebbleCache, 64<<20)
	p.PebbleMemTable = cmp.Or(p.PebbleMemTable, 64<<20)
}

// Constants of the model.
const (
	// IndexBytesPerEntry bounds the state cache's index per cached instance:
	// a Go map[uint64]uint64 slot is 17 bytes (16 + a control byte), at a
	// load factor of at least 7/16 right after a table grows: 39 bytes.
	IndexBytesPerEntry = 40
	// MinEntryBytes is the smallest cached instance the index term assumes:
	// a 16-byte entry header plus an encoded address of 16 bytes or more
	// (every RS-1 instance, e.g. rides/driver/d-1, is at least 33 bytes).
	// Smaller instances cost more index per budget byte.
	MinEntryBytes = 32
	// ConnBytes bounds one ingress connection: fasthttp's read buffer (the
	// 8 KiB header limit), write buffer (4 KiB), request context (request
	// and response headers, about 8 KiB) and the serving goroutine's stack
	// (up to 32 KiB), rounded up.
	ConnBytes = 64 << 10
	// BaseBytes is the rest of the Go heap: runtime structures, metrics,
	// function registry, timers' wheel, pools, admin server: a constant.
	BaseBytes = 64 << 20
	// BinaryBytes is what is resident outside the Go heap and Pebble: the
	// binary's text and data, the C runtime, thread stacks.
	BinaryBytes = 32 << 20
	// GCHeadroom is the share of the Go heap terms the soft memory limit
	// adds for the collector to work in.
	GCHeadroom = 0.125
)

// Term is one bounded consumer of memory.
type Term struct {
	Name    string
	Formula string
	Bytes   int64
	GoHeap  bool   // inside the Go heap (and the Go memory limit)
	Where   string // the code that enforces the bound
}

// Terms lists the consumers of memory.
func Terms(p Params) []Term {
	p.Defaults()
	b := p.MemoryBudget
	cache := b + b/2
	pebbleHeap := pebbleOnGoHeap
	return []Term{
		{"state cache", "1.5 x memory budget", cache, true,
			"engine/pressure.go: ingress is refused once a shard's cache passes 1.5 x its share (dirty state cannot be evicted)"},
		{"state cache index", fmt.Sprintf("1.5 x memory budget / %d B x %d B", MinEntryBytes, IndexBytesPerEntry),
			cache / MinEntryBytes * IndexBytesPerEntry, true,
			"shard/arena.go: one map slot per cached instance, not counted in the budget"},
		{"queued messages", "MaxQueuedBytes", p.MaxQueuedBytes, true,
			"engine/pressure.go: ingress is refused while a shard holds its share"},
		{"request bodies", "2 x --max-body-in-flight", 2 * p.MaxBodyInFlight, true,
			"httpapi/body.go: bodies held at once, and the engine's copy of each message until it is queued"},
		{"egress answers", "--max-egress-reads x 2.5 x max(--max-egress-bytes, MaxRecordBytes)",
			int64(p.MaxEgressReads) * max(p.MaxEgressBytes, p.MaxRecordBytes) * 5 / 2, true,
			"httpapi/ingress.go: at most --max-egress-reads answers at once, each its records (a single record may be up to MaxRecordBytes) and their JSON (base64: 4/3)"},
		{"log buffers", "2 x MaxQueuedBytes + 2 x max(MaxRecordBytes, 4 MiB)", 2*p.MaxQueuedBytes + 2*max(p.MaxRecordBytes, p.WALBufferBytes), true,
			"shard/commit.go, engine/wal_log.go: a step's record batch and its copy for the log hold at most what the shard consumed (queued messages); wal/log.go: the pending buffer and the one being written hold 4 MiB or one batch"},
		{"connections", fmt.Sprintf("--max-conns x %d KiB", ConnBytes>>10), int64(p.MaxConns) * ConnBytes, true,
			"httpapi/listener.go: at most --max-conns ingress connections"},
		{"runtime and the rest", "64 MiB", BaseBytes, true, "a constant"},
		{"Pebble block cache", "64 MiB", p.PebbleCache, pebbleHeap, "store/pebble.go: CacheSize"},
		{"Pebble memtables", "2 x 64 MiB", 2 * p.PebbleMemTable, pebbleHeap, "store/pebble.go: MemTableSize, MemTableStopWritesThreshold 2"},
	}
}

// GoLimit is the soft memory limit for the Go runtime: the Go heap terms
// plus GCHeadroom.
func GoLimit(p Params) int64 {
	var h int64
	for _, t := range Terms(p) {
		if t.GoHeap {
			h += t.Bytes
		}
	}
	return h + int64(float64(h)*GCHeadroom)
}

// Bound is the bound on the resident memory: GoLimit, the terms outside the
// Go heap, and BinaryBytes.
func Bound(p Params) int64 {
	n := GoLimit(p) + BinaryBytes
	for _, t := range Terms(p) {
		if !t.GoHeap {
			n += t.Bytes
		}
	}
	return n
}

// Overhead is Bound minus the memory budget.
func Overhead(p Params) int64 {
	p.Defaults()
	return Bound(p) - p.MemoryBudget
}
