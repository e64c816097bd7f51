package shard

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func TestArenaBasics(t *testing.T) {
	a := NewArena(1<<20, 64<<10)
	if _, _, ok := a.Get([]byte("k")); ok {
		t.Fatal("Get on an empty arena found something")
	}
	key := []byte("k")
	val := []byte("v1")
	a.Put(key, val, 5)
	key[0], val[0] = 'x', 'x' // Put copied both
	v, lsn, ok := a.Get([]byte("k"))
	if !ok || string(v) != "v1" || lsn != 5 {
		t.Fatalf("Get = %q, %d, %v; want v1, 5", v, lsn, ok)
	}
	if cap(v) != len(v) {
		t.Fatal("returned value can be appended into the arena")
	}
	a.Put([]byte("k"), []byte("second"), 7)
	if v, lsn, _ := a.Get([]byte("k")); string(v) != "second" || lsn != 7 {
		t.Fatalf("after replace Get = %q, %d", v, lsn)
	}
	a.Put([]byte(""), nil, 0) // empty key and value are values too
	if v, _, ok := a.Get(nil); !ok || len(v) != 0 {
		t.Fatalf("empty key: %q, %v", v, ok)
	}
	if a.Len() != 2 {
		t.Fatalf("Len = %d, want 2", a.Len())
	}
	a.Delete([]byte("k"))
	a.Delete([]byte("absent"))
	if _, _, ok := a.Get([]byte("k")); ok || a.Len() != 1 {
		t.Fatalf("deleted key still present (Len %d)", a.Len())
	}
	st := a.Stats()
	if st.Hits != 3 || st.Misses != 2 || st.Entries != 1 || st.Bytes != arenaHeader {
		t.Fatalf("stats %+v", st)
	}
	if st.Capacity != int64(a.ChunkSize()) || st.Budget != 1<<20 {
		t.Fatalf("capacity %d budget %d: chunks must be allocated lazily", st.Capacity, st.Budget)
	}
}

func TestArenaChunkClamp(t *testing.T) {
	for _, c := range []struct {
		budget    int64
		chunk     int
		wantChunk int
	}{
		{1 << 30, 0, 1 << 20},
		{1 << 20, 1 << 20, 1 << 18}, // at least 4 chunks
		{100, 100, 256},             // tiny budget raised to 4 x 256
	} {
		if got := NewArena(c.budget, c.chunk).ChunkSize(); got != c.wantChunk {
			t.Errorf("NewArena(%d, %d).ChunkSize() = %d, want %d", c.budget, c.chunk, got, c.wantChunk)
		}
	}
}

func TestArenaEvictsCleanKeepsDirty(t *testing.T) {
	a := NewArena(4096, 1024)
	val := bytes.Repeat([]byte("v"), 40)
	// 200 clean entries of ~60 bytes cannot fit 4 KiB: old ones are evicted.
	for i := 0; i < 200; i++ {
		a.Put([]byte(fmt.Sprintf("clean-%03d", i)), val, 0)
	}
	st := a.Stats()
	if st.Evictions == 0 || st.Capacity > 4096 || st.Grown != 0 {
		t.Fatalf("clean fill: %+v", st)
	}
	if _, _, ok := a.Get([]byte("clean-199")); !ok {
		t.Fatal("most recent entry evicted")
	}
	// Dirty entries beyond the budget: kept, the arena grows.
	for i := 0; i < 200; i++ {
		a.Put([]byte(fmt.Sprintf("dirty-%03d", i)), val, uint64(i+1))
	}
	st = a.Stats()
	if st.Grown == 0 || st.Capacity <= 4096 {
		t.Fatalf("dirty fill did not grow: %+v", st)
	}
	for i := 0; i < 200; i++ {
		if _, lsn, ok := a.Get([]byte(fmt.Sprintf("dirty-%03d", i))); !ok || lsn != uint64(i+1) {
			t.Fatalf("dirty-%03d lost", i)
		}
	}
	n := 0
	a.RangeDirty(func(key, val []byte, lsn uint64) bool { n++; return true })
	if n != 200 {
		t.Fatalf("RangeDirty visited %d, want 200", n)
	}
	// Once safe, they are evictable and the extra chunks are given back.
	a.SetSafeLSN(200)
	for i := 0; i < 400; i++ {
		a.Put([]byte(fmt.Sprintf("late-%03d", i)), val, 0)
	}
	if st = a.Stats(); st.Capacity > 4096 {
		t.Fatalf("capacity %d still above budget after the dirty entries became safe", st.Capacity)
	}
}

func TestArenaBigEntries(t *testing.T) {
	a := NewArena(4096, 1024)
	big := bytes.Repeat([]byte("B"), 5000) // larger than the whole budget
	a.Put([]byte("big"), big, 10)
	if v, lsn, ok := a.Get([]byte("big")); !ok || !bytes.Equal(v, big) || lsn != 10 {
		t.Fatal("big entry not read back")
	}
	if st := a.Stats(); st.BigBytes != int64(arenaHeader+3+5000) || st.Capacity != st.BigBytes {
		t.Fatalf("stats %+v", st)
	}
	for i := 0; i < 300; i++ { // pressure: the dirty big entry survives
		a.Put([]byte(strconv.Itoa(i)), big[:50], 0)
	}
	if _, _, ok := a.Get([]byte("big")); !ok {
		t.Fatal("dirty big entry evicted")
	}
	a.SetSafeLSN(10)
	for i := 0; i < 300; i++ {
		a.Put([]byte(strconv.Itoa(i)), big[:50], 0)
	}
	if _, _, ok := a.Get([]byte("big")); ok {
		t.Fatal("clean big entry survived memory pressure")
	}
	a.Put([]byte("big2"), big, 0)
	a.Put([]byte("big2"), []byte("small now"), 0) // replacing frees the big allocation
	if st := a.Stats(); st.BigBytes != 0 {
		t.Fatalf("BigBytes = %d after replacing the big entry", st.BigBytes)
	}
}

// TestArenaRandomVsModel runs random operations against a map model with a
// tiny budget that forces constant eviction: a key reads back its latest
// value or is absent, deleted keys never come back, and keys whose lsn is
// above the safe LSN are never absent. Variants inject hash functions with
// many collisions.
func TestArenaRandomVsModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	hashes := map[string]func([]byte) uint64{
		"maphash": nil,
		"constant": func([]byte) uint64 {
			return 42
		},
		"two-buckets": func(k []byte) uint64 {
			if len(k) > 0 {
				return uint64(k[len(k)-1] & 1)
			}
			return 0
		},
	}
	for name, h := range hashes {
		t.Run("hash="+name, func(t *testing.T) {
			for round := uint64(0); round < 5; round++ {
				runArenaModel(t, seed+round, h, 4000)
				if t.Failed() {
					t.Fatalf("failed with seed %d", seed+round)
				}
			}
		})
	}
}

type modelEntry struct {
	val []byte
	lsn uint64
}

func runArenaModel(t *testing.T, seed uint64, hash func([]byte) uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	a := NewArena(2048, 512) // 4 chunks of 512 B
	a.hash = hash
	model := map[string]modelEntry{}
	var lsn, safe uint64
	keys := make([]string, 120)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	check := func(step int, k string) {
		v, l, ok := a.Get([]byte(k))
		m, inModel := model[k]
		switch {
		case ok && !inModel:
			t.Errorf("seed %d step %d: %s present with %q but was deleted or never put", seed, step, k, v)
		case ok && (!bytes.Equal(v, m.val) || l != m.lsn):
			t.Errorf("seed %d step %d: %s = %q@%d, want %q@%d", seed, step, k, v, l, m.val, m.lsn)
		case !ok && inModel && m.lsn > safe:
			t.Errorf("seed %d step %d: dirty %s (lsn %d > safe %d) lost", seed, step, k, m.lsn, safe)
		}
	}
	for step := 0; step < steps && !t.Failed(); step++ {
		k := keys[rng.IntN(len(keys))]
		switch op := rng.IntN(20); {
		case op < 9: // Put, half dirty
			n := rng.IntN(60)
			if rng.IntN(30) == 0 {
				n = 100 + rng.IntN(400) // big (> chunk/4) now and then
			}
			val := make([]byte, n)
			for i := range val {
				val[i] = byte(rng.Uint32())
			}
			var l uint64
			if rng.IntN(2) == 0 {
				lsn++
				l = lsn
			}
			a.Put([]byte(k), val, l)
			model[k] = modelEntry{val, l}
		case op < 11:
			a.Delete([]byte(k))
			delete(model, k)
		case op < 12: // advance the safe LSN, sometimes all the way
			if rng.IntN(3) == 0 {
				safe = lsn
			} else if lsn > safe {
				safe += rng.Uint64N(lsn-safe) + 1
			}
			a.SetSafeLSN(safe)
		default:
			check(step, k)
		}
		if step%500 == 0 || step == steps-1 {
			var bytesLive int64
			n := 0
			for _, k := range keys {
				check(step, k)
				if v, _, ok := a.Get([]byte(k)); ok {
					n++
					bytesLive += int64(arenaHeader + len(k) + len(v))
				}
			}
			st := a.Stats()
			if int(st.Entries) != n || a.Len() != n || st.Bytes != bytesLive {
				t.Errorf("seed %d step %d: stats %+v, but %d entries of %d bytes are readable", seed, step, st, n, bytesLive)
			}
			dirty := 0
			a.RangeDirty(func(key, val []byte, l uint64) bool {
				m := model[string(key)]
				if l <= safe || l != m.lsn || !bytes.Equal(val, m.val) {
					t.Errorf("seed %d step %d: RangeDirty gave %s@%d", seed, step, key, l)
				}
				dirty++
				return true
			})
			want := 0
			for _, m := range model {
				if m.lsn > safe {
					want++
				}
			}
			if dirty != want {
				t.Errorf("seed %d step %d: RangeDirty visited %d, want %d", seed, step, dirty, want)
			}
		}
	}
	if st := a.Stats(); st.Evictions == 0 || st.Kept == 0 {
		t.Errorf("seed %d: the workload did not exercise eviction: %+v", seed, st)
	}
}

func TestArenaZeroAllocs(t *testing.T) {
	a := NewArena(64<<10, 4<<10)
	keys := make([][]byte, 2000)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("fn/type/id-%06d", i))
	}
	val := make([]byte, 40)
	i := 0
	// Steady state: a working set about 2x the budget, clean entries, so
	// Puts constantly evict and re-add.
	op := func() {
		k := keys[i%len(keys)]
		i++
		if _, _, ok := a.Get(k); !ok {
			a.Put(k, val, 0)
		}
		a.Put(keys[(i*7)%len(keys)], val, 0)
	}
	for j := 0; j < 20000; j++ {
		op()
	}
	if allocs := testing.AllocsPerRun(5000, op); allocs != 0 {
		t.Fatalf("Get/Put with eviction: %v allocs per op, want 0", allocs)
	}
}

// arenaKeys returns n keys shaped like encoded addresses.
func arenaKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("rs/driver/%08d", i))
	}
	return keys
}

func BenchmarkArena(b *testing.B) {
	const n = 100000
	keys := arenaKeys(n)
	val := make([]byte, 64)
	b.Run(fmt.Sprintf("op=get/store=arena/entries=%d", n), func(b *testing.B) {
		a := NewArena(64<<20, 1<<20)
		for _, k := range keys {
			a.Put(k, val, 0)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, ok := a.Get(keys[i%n]); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run(fmt.Sprintf("op=get/store=map/entries=%d", n), func(b *testing.B) {
		m := make(map[string][]byte)
		for _, k := range keys {
			m[string(k)] = append([]byte(nil), val...)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, ok := m[string(keys[i%n])]; !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run(fmt.Sprintf("op=put/store=arena/entries=%d", n), func(b *testing.B) {
		a := NewArena(64<<20, 1<<20) // fits: replacements only make dead bytes
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			a.Put(keys[i%n], val, uint64(i))
			if i%n == n-1 {
				a.SetSafeLSN(uint64(i))
			}
		}
	})
	b.Run(fmt.Sprintf("op=put/store=map/entries=%d", n), func(b *testing.B) {
		m := make(map[string][]byte)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			k := keys[i%n]
			m[string(k)] = append(m[string(k)][:0], val...)
		}
	})
	b.Run(fmt.Sprintf("op=put-evict/store=arena/entries=%d", n), func(b *testing.B) {
		a := NewArena(2<<20, 256<<10) // working set ~10 MB: constant eviction
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			a.Put(keys[i%n], val, 0)
		}
		b.ReportMetric(float64(a.Stats().Evictions)/float64(b.N), "evictions/op")
	})
}

// BenchmarkArenaMemory reports the Go heap bytes per entry and the duration
// of a full GC with 1M small entries (16-byte keys, 32-byte values) held in
// an Arena and, as the baseline, in a map[string][]byte.
func BenchmarkArenaMemory(b *testing.B) {
	const n = 1 << 20
	keys := arenaKeys(n)
	val := make([]byte, 32)
	run := func(b *testing.B, fill func() any) {
		var heapPer, gcNs float64
		for i := 0; i < b.N; i++ {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			s := fill()
			runtime.GC()
			runtime.ReadMemStats(&after)
			start := time.Now()
			runtime.GC()
			gcNs = float64(time.Since(start).Nanoseconds())
			heapPer = float64(after.HeapAlloc-before.HeapAlloc) / n
			runtime.KeepAlive(s)
		}
		b.ReportMetric(heapPer, "heapB/entry")
		b.ReportMetric(gcNs/1e3, "gc-µs")
	}
	b.Run("store=arena/entries=1M", func(b *testing.B) {
		run(b, func() any {
			a := NewArena(128<<20, 1<<20)
			for _, k := range keys {
				a.Put(k, val, 0)
			}
			if a.Len() != n {
				b.Fatalf("arena evicted: %d of %d entries", a.Len(), n)
			}
			return a
		})
	})
	b.Run("store=map/entries=1M", func(b *testing.B) {
		run(b, func() any {
			m := make(map[string][]byte)
			for _, k := range keys {
				m[string(k)] = append([]byte(nil), val...)
			}
			return m
		})
	})
}

// TestArenaStatsConcurrent reads Stats from another goroutine while the
// owner writes (run with -race).
func TestArenaStatsConcurrent(t *testing.T) {
	a := NewArena(8192, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5000; i++ {
			a.Put([]byte(strconv.Itoa(i%300)), []byte("value"), 0)
			a.Get([]byte(strconv.Itoa(i % 500)))
		}
	}()
	var last ArenaStats
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		st := a.Stats()
		if st.Hits < last.Hits || st.Misses < last.Misses || st.Evictions < last.Evictions {
			t.Fatalf("counters went back: %+v after %+v", st, last)
		}
		last = st
	}
	if st := a.Stats(); st.Hits+st.Misses != 5000 {
		t.Fatalf("Hits+Misses = %d, want 5000", st.Hits+st.Misses)
	}
}
