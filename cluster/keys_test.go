package cluster

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

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
