package engine

import (
	"context"
	"testing"
)

// TestSendAllocations: a Send in steady state allocates nothing, on the
// caller's side or in the shard and the applier behind it.
func TestSendAllocations(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts need a build without the race detector")
	}
	for _, o := range []Options{{Shards: 1}, {Shards: 1, DataDir: t.TempDir()}} {
		e := openTest(t, o)
		ctx := context.Background()
		a := addr("steady")
		send := func() {
			if _, err := e.Send(ctx, a, Message{Type: "inc"}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 2000; i++ {
			send()
		}
		if n := testing.AllocsPerRun(2000, send); n > 0.05 {
			t.Errorf("durable=%v: %.2f allocations per Send, want 0", o.DataDir != "", n)
		}
		e.Close()
	}
}
