package engine

import (
	"fmt"

	"github.com/shardfn/shardfn/internal/format"
)

// The operator API in cluster mode (cluster/ops.go): a state repair
// (SetState) runs on the engine of the node that owns the address's
// partition, as a message on the instance's shard; its effect record is
// collected into an epoch like any invocation's, so its store operations
// travel in the node's Kafka transaction to the partition's changelog and
// reach Pebble only after the commit.

// clusterOwner refuses, with ErrNotOwner, an engine message (a state
// repair) for an address whose partition this cluster engine was not
// opened with: its effects would be shipped to a changelog partition
// another node owns. nil on a single node.
func (e *Engine) clusterOwner(addr Address) error {
	c := e.cl
	if c == nil {
		return nil
	}
	if p := c.link.Partition(format.KeyGroup(addr.Hash())); !c.link.Owns(p) {
		return fmt.Errorf("%w: %s is in partition %d", ErrNotOwner, addr, p)
	}
	return nil
}

// DecodeDeadLetter decodes one record of the dead-letters egress (a
// cluster node reads them from the cluster's egress topic).
func DecodeDeadLetter(r EgressRecord) DeadLetter { return decodeDeadLetter(r) }
