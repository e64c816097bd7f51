package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestStoreMatchesMemory: after heavy load, what the store holds (State)
// equals what the functions see, and a restart keeps it.
func TestStoreMatchesMemory(t *testing.T) {
	dir := t.TempDir()
	o := Options{Shards: 3, DataDir: dir, SegmentSize: 1 << 20, MemoryBudget: 1 << 20}
	e := openTest(t, o)
	ctx := context.Background()
	var acked [16]atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				k := (g + i) % 16
				if _, err := e.Send(ctx, addr(fmt.Sprint("k", k)), Message{Type: "inc"}); err != nil {
					t.Error(err)
					return
				}
				acked[k].Add(1)
			}
		}(g)
	}
	wg.Wait()
	check := func(when string) {
		for k := 0; k < 16; k++ {
			n := count(t, e, fmt.Sprint("k", k))
			st, err := e.State(ctx, addr(fmt.Sprint("k", k)))
			if err != nil {
				t.Fatal(err)
			}
			var sv int64
			if len(st) == 1 {
				sv, _ = DecodeLongWrapper(st[0].Value)
			}
			if n != acked[k].Load() || sv != n {
				t.Fatalf("%s: k%d: function sees %d, store holds %d, acked %d", when, k, n, sv, acked[k].Load())
			}
		}
	}
	check("live")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, o)
	defer e.Close()
	check("after restart")
}
