package engine

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestEvictionUnderTinyBudget: many instances through a cache far smaller
// than their state; every value must survive eviction and reload, and no
// invocation may fail.
func TestEvictionUnderTinyBudget(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprint("durable=", durable), func(t *testing.T) {
			o := Options{Shards: 2, MemoryBudget: 128 << 10}
			if durable {
				o.DataDir = t.TempDir()
				o.SegmentSize = 1 << 20
			}
			e := openTest(t, o)
			defer e.Close()
			ctx := context.Background()
			const n = 3000
			for round := 0; round < 3; round++ {
				msgs := make([]Outgoing, 0, n)
				for i := 0; i < n; i++ {
					msgs = append(msgs, Outgoing{To: addr(fmt.Sprint("i", i)), Message: Message{Type: "inc"}})
				}
				if err := e.SendBatch(ctx, msgs); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < n; i += 7 {
				if c := count(t, e, fmt.Sprint("i", i)); c != 3 {
					t.Fatalf("i%d = %d, want 3", i, c)
				}
			}
			if dl, _ := e.ReadEgress(ctx, "dead-letters", 0, 10, 0, 0); len(dl) > 0 {
				t.Fatalf("dead letters: %s", dl[0].Message.Value)
			}
			var ev uint64
			for _, s := range e.shards {
				ev += s.Stats().Arena.Evictions
			}
			if ev == 0 {
				t.Fatal("no evictions: the test does not exercise eviction")
			}
			_ = time.Second
		})
	}
}
