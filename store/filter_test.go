package store

import "testing"

// TestAbsentKeysSkipTables: the tables carry Bloom filters, so looking up
// idempotency keys that were never written (the common case) skips tables
// instead of searching them, and keys that were written are still found.
func TestAbsentKeysSkipTables(t *testing.T) {
	p, err := OpenPebble(t.TempDir(), PebbleOptions{CacheSize: 1 << 20, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := p.NewBatch()
	for h := uint64(0); h < 2000; h += 2 {
		b.PutKey(h, 100, h, []byte("id"))
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	for h := uint64(0); h < 2000; h++ {
		_, ok, err := p.GetKey(h)
		if err != nil || ok != (h%2 == 0) {
			t.Fatalf("key %d: found %v, err %v", h, ok, err)
		}
	}
	f := p.DB().Metrics().Filter
	if f.Hits < 900 {
		t.Fatalf("filter skipped tables for %d of 1000 absent keys (misses %d): the tables have no filter", f.Hits, f.Misses)
	}
}
