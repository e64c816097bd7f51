package cluster

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/engine"
)

// TestEngineMetricsExported: a cluster node's /metrics has the engine's own
// metrics (shardfn_invocations_total and the others), not only
// shardfn_cluster_*, before and after its engine is replaced by a
// rebalance, with scrapes running while engines are closed and opened.
// Before, cluster mode exported none of them.
func TestEngineMetricsExported(t *testing.T) {
	c := newTestCluster(t, 4)
	a := c.start("a")
	c.settled(20 * time.Second)
	reg := prometheus.NewRegistry()
	for _, col := range a.Collectors() {
		if err := reg.Register(col); err != nil {
			t.Fatal(err)
		}
	}
	invocations := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "shardfn_invocations_total" {
				sum := 0.0
				for _, m := range mf.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
				return sum
			}
		}
		return -1
	}
	for i := range 4 {
		c.send(0, counter(i), engine.Message{Type: "inc", Value: []byte("d")})
	}
	c.waitCounts(map[int]int{0: 1, 1: 1, 2: 1, 3: 1}, 20*time.Second)
	if v := invocations(); v < 4 {
		t.Fatalf("shardfn_invocations_total = %v after 4 messages (and the gets), want >= 4", v)
	}

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // scrapes while the rebalance closes and opens engines
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := reg.Gather(); err != nil {
				t.Errorf("gather during a rebalance: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	c.start("b")
	c.settled(20 * time.Second)
	close(stop)
	<-done
	c.send(0, counter(0), engine.Message{Type: "inc", Value: []byte("d")})
	c.waitCounts(map[int]int{0: 2, 1: 1, 2: 1, 3: 1}, 20*time.Second)
	if v := invocations(); v < 0 {
		t.Fatal("shardfn_invocations_total missing after the engine was replaced")
	}
}
