package cluster

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// TestIdempotencyKeys: a message sent again with the same key, through
// another node and after its partition moved, is applied once; a keyed
// request sent again is answered with the first reply.
func TestIdempotencyKeys(t *testing.T) {
	c := newTestCluster(t, 8)
	a := c.start("a")
	c.settled(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 10 {
		if _, err := sendOn(ctx, a, counter(i), engine.Message{Type: "inc", Value: []byte("d")}, engine.IdempotencyKey("k"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	first, err := requestOn(ctx, a, counter(0), engine.Message{Type: "get"}, engine.IdempotencyKey("get-once"))
	if err != nil {
		t.Fatal(err)
	}
	b := c.start("b") // half of the partitions move to b, with their keys
	c.settled(30 * time.Second)
	for _, n := range []*Node{a, b} {
		for i := range 10 {
			if _, err := sendOn(ctx, n, counter(i), engine.Message{Type: "inc", Value: []byte("d")}, engine.IdempotencyKey("k"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 10 { // one more, with a new key
		if _, err := sendOn(ctx, b, counter(i), engine.Message{Type: "inc", Value: []byte("d")}, engine.IdempotencyKey("new"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	want := map[int]int{}
	for i := range 10 {
		want[i] = 2
	}
	c.waitCounts(want, 30*time.Second)
	again, err := requestOn(ctx, b, counter(0), engine.Message{Type: "get"}, engine.IdempotencyKey("get-once"))
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Value) != string(first.Value) {
		t.Fatalf("retried keyed request answered %q, first answer %q", again.Value, first.Value)
	}
}

// sendOn sends through node n, waiting while it rebalances.
func sendOn(ctx context.Context, n *Node, to engine.Address, msg engine.Message, opts ...engine.SendOption) (uint64, error) {
	for {
		id, err := n.Send(ctx, to, msg, opts...)
		if !errors.Is(err, ErrNotReady) || ctx.Err() != nil {
			return id, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requestOn is sendOn for a request.
func requestOn(ctx context.Context, n *Node, to engine.Address, msg engine.Message, opts ...engine.SendOption) (engine.Message, error) {
	for {
		m, err := n.Request(ctx, to, msg, opts...)
		if !errors.Is(err, ErrNotReady) || ctx.Err() != nil {
			return m, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKeysExpire: in cluster mode idempotency keys and kept replies expire
// after their retention, and their deletions travel in the changelog
// (tombstones), so that a node restoring the partition does not bring them
// back. Before, cluster engines never expired them: the store and the
// compacted changelog grew with every keyed message.
func TestKeysExpire(t *testing.T) {
	c := newTestCluster(t, 2)
	c.config = func(cfg *Config) { cfg.Engine.IdempotencyRetention = 300 * time.Millisecond }
	a := c.start("a")
	c.settled(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	to := counter(0)
	send := func(n *Node, key string) {
		t.Helper()
		if _, err := sendOn(ctx, n, to, engine.Message{Type: "inc", Value: []byte("d")}, engine.IdempotencyKey(key)); err != nil {
			t.Fatal(err)
		}
	}
	send(a, "k")
	if _, err := requestOn(ctx, a, to, engine.Message{Type: "get"}, engine.IdempotencyKey("g")); err != nil {
		t.Fatal(err)
	}
	send(a, "k") // within the retention: dropped
	c.waitCounts(map[int]int{0: 1}, 10*time.Second)

	// Past the retention (and the next expiry pass), the key is gone: the
	// same key is applied again.
	time.Sleep(300*time.Millisecond + expireInterval)
	deadline := time.Now().Add(20 * time.Second)
	for tombstones(t, c, PartitionOfAddress(to, c.parts)) < 4 { // key and reply, each with its index entry
		if time.Now().After(deadline) {
			t.Fatalf("no tombstones in the changelog for the expired key and reply (%d)", tombstones(t, c, PartitionOfAddress(to, c.parts)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	send(a, "k")
	c.waitCounts(map[int]int{0: 2}, 10*time.Second)

	// A node that restores the partition from the changelog does not have
	// the expired key: after a move, "k" (applied twice, expired again) is
	// applied once more.
	time.Sleep(300*time.Millisecond + expireInterval)
	b := c.start("b")
	c.stop("a", true)
	c.settled(30 * time.Second)
	send(b, "k")
	c.waitCounts(map[int]int{0: 3}, 10*time.Second)
}

// tombstones counts the changelog records of partition p that delete an
// idempotency key, a kept reply or their expiry index entries.
func tombstones(t *testing.T, c *testCluster, p int32) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kf.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{TopicNames(c.name).Changelog: {p: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n := 0
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if r.Value == nil && len(r.Key) > 1 && r.Key[0] == 'k' && (r.Key[1] == 'i' || r.Key[1] == 'r' || r.Key[1] == 'x') {
				n++
			}
		})
	}
	return n
}
