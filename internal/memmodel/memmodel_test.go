package memmodel

import "testing"

// TestBoundAddsTheTerms checks the formula: the bound is the Go limit (the
// heap terms plus the headroom), the terms outside the heap and the binary.
func TestBoundAddsTheTerms(t *testing.T) {
	p := Params{MemoryBudget: 128 << 20, MaxConns: 1024, MaxBodyInFlight: 64 << 20, MaxEgressReads: 2}
	var heap, off int64
	for _, tm := range Terms(p) {
		if tm.Bytes <= 0 || tm.Name == "" || tm.Formula == "" || tm.Where == "" {
			t.Fatalf("term %+v", tm)
		}
		if tm.GoHeap {
			heap += tm.Bytes
		} else {
			off += tm.Bytes
		}
	}
	if got, want := GoLimit(p), heap+int64(float64(heap)*GCHeadroom); got != want {
		t.Fatalf("GoLimit %d, want %d", got, want)
	}
	if got, want := Bound(p), GoLimit(p)+off+BinaryBytes; got != want {
		t.Fatalf("Bound %d, want %d", got, want)
	}
	if Overhead(p) != Bound(p)-p.MemoryBudget {
		t.Fatal("Overhead is not Bound minus the budget")
	}
	// The state cache terms: 1.5 x the budget and its index.
	ts := Terms(p)
	if ts[0].Bytes != 192<<20 || ts[1].Bytes != 192<<20/MinEntryBytes*IndexBytesPerEntry {
		t.Fatalf("cache terms %d, %d", ts[0].Bytes, ts[1].Bytes)
	}
}

// TestBoundGrowsWithEachLimit: every limit the model names moves the
// bound (a term that does not is not a term).
func TestBoundGrowsWithEachLimit(t *testing.T) {
	base := Params{}
	base.Defaults()
	b := Bound(base)
	for name, f := range map[string]func(p *Params){
		"budget":         func(p *Params) { p.MemoryBudget *= 2 },
		"queued":         func(p *Params) { p.MaxQueuedBytes *= 2 },
		"bodies":         func(p *Params) { p.MaxBodyInFlight *= 2 },
		"egress reads":   func(p *Params) { p.MaxEgressReads *= 2 },
		"conns":          func(p *Params) { p.MaxConns *= 2 },
		"record":         func(p *Params) { p.MaxRecordBytes *= 2 },
		"pebble cache":   func(p *Params) { p.PebbleCache *= 2 },
		"pebble memtabl": func(p *Params) { p.PebbleMemTable *= 2 },
	} {
		p := base
		f(&p)
		if Bound(p) <= b {
			t.Errorf("%s: the bound does not grow", name)
		}
	}
}
