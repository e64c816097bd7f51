package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestEnvelopeIntegrity: under concurrent ingress, every message reaches
// the address it was sent to, exactly once, and its acknowledgement means
// it was processed.
func TestEnvelopeIntegrity(t *testing.T) {
	var mismatches atomic.Int64
	var processed sync.Map
	spec := FunctionSpec{Namespace: "t", Type: "echo", Function: FunctionFunc(func(ctx Context, msg Message) error {
		var id, key string
		fmt.Sscanf(string(msg.Value), "%s %s", &key, &id)
		if key != ctx.Self().ID {
			mismatches.Add(1)
		}
		if _, dup := processed.LoadOrStore(string(msg.Value), true); dup {
			mismatches.Add(1000)
		}
		return nil
	})}
	for _, shards := range []int{1, 2, 3} {
		e := openTest(t, Options{Shards: shards, DataDir: t.TempDir(), SegmentSize: 1 << 20}, spec)
		var wg sync.WaitGroup
		var acked sync.Map
		for g := 0; g < 32; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					key := fmt.Sprint("k", (g*7+i)%13)
					v := fmt.Sprintf("%s %d-%d-%d", key, shards, g, i)
					if _, err := e.Send(context.Background(), Address{Namespace: "t", Type: "echo", ID: key}, Message{Type: "x", Value: []byte(v)}); err != nil {
						t.Error(err)
						return
					}
					acked.Store(v, true)
				}
			}(g)
		}
		wg.Wait()
		acked.Range(func(k, _ any) bool {
			if _, ok := processed.Load(k); !ok {
				t.Errorf("acknowledged %q but never processed", k)
			}
			return true
		})
		e.Close()
	}
	if n := mismatches.Load(); n != 0 {
		t.Fatalf("%d mismatches", n)
	}
}
