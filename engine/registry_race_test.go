package engine

import (
	"strconv"
	"testing"
)

// TestWildcardLookupRacesMetrics: a function type of a wildcard spec made
// by a shard's lookup while /metrics reads every entry's counters. Its
// counters used to be set after the entry was published (a data race under
// -race, seen in loadgen's remote run).
func TestWildcardLookupRacesMetrics(t *testing.T) {
	r, err := newRegistry([]FunctionSpec{{Namespace: "w", Type: "*", Remote: idleRemote{}}})
	if err != nil {
		t.Fatal(err)
	}
	r.setShards(2)
	const n = 500
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			if r.lookup("w", strconv.Itoa(i)) == nil {
				t.Errorf("w/%d not resolved", i)
				return
			}
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		for _, fe := range r.entries() {
			if len(fe.counts) != 2 || len(fe.fails) != 2 {
				t.Fatalf("%s has %d counters, want one per shard", fe.name, len(fe.counts))
			}
			_ = fe.counts[0].n.Load()
		}
	}
}

// idleRemote is a remote function that is never called.
type idleRemote struct{}

func (idleRemote) InvokeBatch(*RemoteBatch, func(*RemoteResult)) {}
