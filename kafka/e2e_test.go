package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// TestEndToEnd: Kafka records -> test/counter -> Kafka records, with each
// delivery semantic; every input applied once and in order per key, every
// output present once (read_committed).
func TestEndToEnd(t *testing.T) {
	for _, sem := range []string{"exactly-once", "at-least-once", "none"} {
		t.Run(sem, func(t *testing.T) {
			c := newCluster(t, "in", "out")
			addrs := c.ListenAddrs()
			const keys, n = 10, 30
			produce(t, addrs, "in", keys, n, 0)
			eng := openEngine(t, t.TempDir(), engine.Options{})
			defer eng.Close()
			r, err := Start(eng, parseConfig(t, moduleYAML(addrs, sem)), Options{Logger: testLogger(), CommitInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			rd := newReader(t, addrs, "out")
			if got := rd.until(keys*n, 30*time.Second); got != keys*n {
				t.Errorf("%d outputs, want %d", got, keys*n)
			}
			r.Close(context.Background())
			checkCounts(t, rd.got, keys, n)
		})
	}
}
