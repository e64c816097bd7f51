package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/engine"
)

// engineCollector exports the current engine's own metrics (shardfn_*, as
// on a single node: invocations, failures, mailboxes, cache, timers,
// store). A node replaces its engine at every rebalance, so the engine's
// counters start again from zero then: a counter reset, which Prometheus's
// rate() and increase() handle. It is an unchecked collector (it describes
// nothing) because what it exports follows the engine of the moment.
type engineCollector struct{ n *Node }

func (engineCollector) Describe(chan<- *prometheus.Desc) {}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	c.n.scrapeMu.RLock()
	defer c.n.scrapeMu.RUnlock()
	e := c.n.eng.Load()
	if e == nil {
		return
	}
	for _, col := range e.Collectors() {
		col.Collect(ch)
	}
}

// closeEngine fails an engine taken out of service (its memory is ahead of
// what committed) and closes it, never while a scrape reads it.
func (n *Node) closeEngine(e *engine.Engine, cause error) {
	e.Abort(cause)
	n.scrapeMu.Lock()
	defer n.scrapeMu.Unlock()
	_ = e.Close()
}
