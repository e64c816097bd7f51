package cluster

import (
	"testing"
	"time"
)

// TestStandbyShortensTakeover: with two nodes, each keeps a standby copy
// of the other's partitions. When a leaves, b takes a's partitions over
// and restores only what its copy lacks (nothing here: the load stopped
// and the copy caught up), not a's whole changelog; every message is
// still applied once. With standby copies off, b restores all of it.
func TestStandbyShortensTakeover(t *testing.T) {
	for _, standby := range []bool{true, false} {
		c := newTestCluster(t, 8)
		c.config = func(cfg *Config) {
			cfg.StandbyInterval = 200 * time.Millisecond
			if !standby {
				cfg.StandbyInterval = -1
			}
		}
		c.start("a")
		b := c.start("b")
		c.settled(30 * time.Second)
		stop := make(chan struct{})
		res := c.load(stop, 40)
		time.Sleep(1500 * time.Millisecond)
		close(stop)
		want := <-res
		time.Sleep(time.Second) // a few standby passes after the last commit
		before := b.Stats().Restored.Load()
		c.stop("a", true)
		c.settled(30 * time.Second)
		restored := b.Stats().Restored.Load() - before
		c.waitCounts(want, 30*time.Second)
		applied := b.Stats().StandbyApplied.Load()
		t.Logf("standby %v: b kept %d changelog records of a's partitions as a standby copy, then restored %d when it took them over", standby, applied, restored)
		switch {
		case standby && (applied == 0 || restored > applied/10):
			t.Errorf("with standby copies: %d records applied to the copy, %d restored at the takeover: the copy did not spare the restore", applied, restored)
		case !standby && (applied != 0 || restored == 0):
			t.Errorf("without standby copies: %d applied to a copy, %d restored", applied, restored)
		}
	}
}
