package engine

import (
	"strconv"
	"testing"
)

// A wildcard's function type made while serving (lookup) was published to
// the metrics' list of entries before its counters were made, so a
// /metrics scrape racing the first message to a new remote type read them
// while they were written (make test's race detector caught it in
// loadgen's TestRemoteRunHoldsInvariants). Run with -race.
func TestWildcardEntryCountersBeforePublished(t *testing.T) {
	r, err := newRegistry([]FunctionSpec{{Namespace: "r", Type: "*", Remote: &fakeRemote{}}})
	if err != nil {
		t.Fatal(err)
	}
	r.setShards(2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			r.lookup("r", "t"+strconv.Itoa(i))
		}
	}()
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		for _, e := range r.entries() { // what the metrics' Collect reads
			if len(e.counts) != 2 || len(e.fails) != 2 {
				t.Fatalf("%s published with %d counters, want 2", e.name, len(e.counts))
			}
		}
	}
}
