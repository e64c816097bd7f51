package cluster

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// TestReplyCommittedWithItsWork: the reply to a request made on one node
// and answered by another travels in the owner's transaction. The owner
// here stops for good right after the transaction that holds the reply
// committed (before it learns of the commit): the requester still gets the
// reply. Before, the owner produced replies only after its commit, outside
// the transaction, and a node that died between the two lost them (the
// requester timed out although the work was done).
func TestReplyCommittedWithItsWork(t *testing.T) {
	c := newTestCluster(t, 4)
	n1, n2 := c.start("n1"), c.start("n2")
	c.settled(20 * time.Second)
	var to engine.Address
	for id := 0; ; id++ {
		a := counter(id)
		if slices.Contains(n2.Owned(), PartitionOfAddress(a, c.parts)) {
			to = a
			break
		}
	}
	c.send(0, to, engine.Message{Type: "inc", Value: []byte("d")})
	for c.get(to) != 1 {
		time.Sleep(20 * time.Millisecond)
	}

	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	var fired atomic.Bool
	hook := func(ep *engine.Epoch) {
		for _, r := range ep.Replies {
			n1.reqMu.Lock()
			_, waited := n1.requests[r.RequestID] // not a late reply to an earlier get
			n1.reqMu.Unlock()
			if waited {
				fired.Store(true)
				<-release // the owner never gets past its commit
			}
		}
	}
	n2.testAfterCommit.Store(&hook)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := n1.Request(ctx, to, engine.Message{Type: "get"})
	if err != nil {
		t.Fatalf("request answered by a node that stopped right after committing the reply (the owner committed a reply: %v; owner's partitions %v): %v",
			fired.Load(), n2.Owned(), err)
	}
	if string(m.Value[:1]) != "1" {
		t.Fatalf("reply %q, want the count 1", m.Value)
	}
}
