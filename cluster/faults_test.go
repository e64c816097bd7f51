package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
)

// TestFaultsUnderLoad injects broker faults under load: coordinator errors
// on the transaction's requests, produce timeouts that the broker applied
// anyway, swallowed EndTxn and TxnOffsetCommit requests, and a network
// partition of one node (its heartbeats dropped for longer than the
// session timeout: the group gives its partitions away while it still
// runs, and it must not commit anything after). Every message is applied
// exactly once.
func TestFaultsUnderLoad(t *testing.T) {
	c := newTestCluster(t, 16)
	c.start("a")
	c.start("b")
	c.start("c")
	c.settled(30 * time.Second)
	stop := make(chan struct{})
	res := c.load(stop, 30)
	time.Sleep(300 * time.Millisecond)

	// Coordinator errors and produce timeouts (the broker applies the
	// produce and answers REQUEST_TIMED_OUT: the client retries it, and the
	// idempotent producer must not write it twice).
	c.kf.Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.NotCoordinator, Count: 3},
		kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.CoordinatorLoadInProgress, Count: 3},
		kfake.Fault{Keys: []kmsg.Key{kmsg.AddPartitionsToTxn}, Err: kerr.ConcurrentTransactions, Count: 2},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: TopicNames(c.name).Changelog, Err: kerr.RequestTimedOut, Count: 3},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: TopicNames(c.name).In, Err: kerr.RequestTimedOut, Count: 3},
	)
	time.Sleep(time.Second)

	// Swallowed requests: the connection is closed without an answer.
	for _, k := range []kmsg.Key{kmsg.EndTxn, kmsg.TxnOffsetCommit} {
		c.kf.ControlKey(int16(k), func(kmsg.Request) (kmsg.Response, error, bool) {
			return nil, errors.New("swallowed by the test"), true
		})
	}
	time.Sleep(time.Second)

	// A network partition of node b: its heartbeats fail for 2.5 session
	// timeouts.
	var cut atomic.Bool
	cut.Store(true)
	c.kf.ControlKey(int16(kmsg.Heartbeat), func(r kmsg.Request) (kmsg.Response, error, bool) {
		if !cut.Load() {
			return nil, nil, false
		}
		c.kf.KeepControl()
		if hb := r.(*kmsg.HeartbeatRequest); hb.InstanceID != nil && *hb.InstanceID == "b" {
			return nil, errors.New("b is cut off"), true
		}
		return nil, nil, false
	})
	time.Sleep(c.session * 5 / 2)
	cut.Store(false)
	c.settled(60 * time.Second)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	want := <-res
	c.waitCounts(want, 60*time.Second)
	var aborts uint64
	for _, name := range []string{"a", "b", "c"} {
		aborts += c.nodes[name].Stats().Aborts.Load()
	}
	t.Logf("exactly once through the faults; %d epochs aborted", aborts)
}

// TestZombieDelayedMessagesFenced: node b is cut off from the group (its
// heartbeats are answered "all is well" without reaching the group, so b
// does not know) while delayed messages of its partitions
// are pending. The group gives b's partitions to the others, which restore
// the delayed messages and fire them. b, which does not know it was
// dropped, fires them too, with no input polled in those epochs; its
// transactions must be refused (fenceCheck), or their sends would be
// applied twice.
func TestZombieDelayedMessagesFenced(t *testing.T) {
	c := newTestCluster(t, 8)
	c.start("a")
	b := c.start("b")
	c.start("c")
	c.settled(30 * time.Second)
	// Counters whose partition b owns get delayed forwards to counters
	// 100..: one increment each is expected.
	owned := map[int32]bool{}
	for _, p := range b.Owned() {
		owned[p] = true
	}
	want := map[int]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := 0
	for i := 0; n < 10 && i < 1000; i++ {
		if !owned[PartitionOfAddress(counter(i), c.parts)] {
			continue
		}
		target := 100 + n
		if _, err := sendOn(ctx, b, counter(i), engine.Message{Type: "fwd-later", Value: fmt.Appendf(nil, "%d c%d", 3000, target)}); err != nil {
			t.Fatal(err)
		}
		want[target] = 1
		n++
	}
	if n < 10 {
		t.Fatalf("node b owns partitions %v: found only %d counters there", b.Owned(), n)
	}
	time.Sleep(300 * time.Millisecond) // the delayed messages are committed
	var cut atomic.Bool
	cut.Store(true)
	isB := func(id *string) bool { return id != nil && *id == "b" }
	for _, k := range []kmsg.Key{kmsg.Heartbeat, kmsg.JoinGroup, kmsg.SyncGroup, kmsg.LeaveGroup} {
		c.kf.ControlKey(int16(k), func(r kmsg.Request) (kmsg.Response, error, bool) {
			if !cut.Load() {
				return nil, nil, false
			}
			c.kf.KeepControl()
			var id *string
			switch r := r.(type) {
			case *kmsg.HeartbeatRequest:
				id = r.InstanceID
			case *kmsg.JoinGroupRequest:
				id = r.InstanceID
			case *kmsg.SyncGroupRequest:
				id = r.InstanceID
			case *kmsg.LeaveGroupRequest:
				for _, m := range r.Members {
					if isB(m.InstanceID) {
						id = m.InstanceID
					}
				}
			}
			if !isB(id) {
				return nil, nil, false
			}
			if hb, ok := r.(*kmsg.HeartbeatRequest); ok {
				// b hears that all is well; the broker never hears from b.
				resp := hb.ResponseKind().(*kmsg.HeartbeatResponse)
				return resp, nil, true
			}
			return nil, errors.New("b is cut off"), true
		})
	}
	// Wait until the group went on without b.
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := c.kf.WaitGroupInfo(wctx, "shardfn-"+c.name, func(g *kfake.GroupInfo) bool {
		if len(g.Members) != 2 {
			return false
		}
		for _, m := range g.Members {
			if isB(m.InstanceID) {
				return false
			}
		}
		return true
	})
	wcancel()
	if err != nil {
		t.Fatalf("the group did not drop b: %v", err)
	}
	time.Sleep(4 * time.Second) // the delayed messages fire, on b and on their new owners
	cut.Store(false)
	c.settled(60 * time.Second)
	c.waitCounts(want, 30*time.Second)
	t.Logf("b aborted %d epochs; every delayed forward applied once", b.Stats().Aborts.Load())
}
