package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable Options.Clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

func TestIdempotentSend(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	o := Options{DataDir: dir, Shards: 2, Clock: clock.now, IdempotencyRetention: time.Hour}
	e := openTest(t, o)
	ctx := context.Background()
	key := IdempotencyKey("order-1")
	id1, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, key)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, key)
	if err != nil || id2 != id1 {
		t.Fatalf("second send: id %d (first %d), %v", id2, id1, err)
	}
	if _, err := e.Send(ctx, addr("y"), Message{Type: "inc"}, key); err != nil { // same key, other address
		t.Fatal(err)
	}
	if err := e.Checkpoint(); err != nil { // the key is in the store now
		t.Fatal(err)
	}
	id3, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, key)
	if err != nil || id3 != id1 {
		t.Fatalf("third send: id %d (first %d), %v", id3, id1, err)
	}
	if n := count(t, e, "x"); n != 1 {
		t.Fatalf("x applied %d times", n)
	}
	if n := count(t, e, "y"); n != 1 {
		t.Fatalf("y applied %d times", n)
	}
	if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, IdempotencyKey("")); err != nil {
		t.Fatal(err) // an empty key is no key
	}
	if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, IdempotencyKey("bad\x00key")); !errors.Is(err, ErrBadKey) {
		t.Fatalf("a control character in a key: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// Across a restart.
	e = openTest(t, o)
	id4, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, key)
	if err != nil || id4 != id1 {
		t.Fatalf("after a restart: id %d (first %d), %v", id4, id1, err)
	}
	if n := count(t, e, "x"); n != 2 { // the first and the keyless one
		t.Fatalf("x applied %d times after the restart", n)
	}
	// After the retention window the key is forgotten.
	clock.add(2 * time.Hour)
	if err := e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	id5, err := e.Send(ctx, addr("x"), Message{Type: "inc"}, key)
	if err != nil || id5 == id1 {
		t.Fatalf("after the retention: id %d (first %d), %v", id5, id1, err)
	}
	if n := count(t, e, "x"); n != 3 {
		t.Fatalf("x applied %d times after the retention", n)
	}
	_ = e.Close()
}

func TestIdempotentSendConcurrent(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o)
		defer e.Close()
		var wg sync.WaitGroup
		ids := make([]uint64, 16)
		for i := range ids {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				id, err := e.Send(context.Background(), addr("c"), Message{Type: "inc"}, IdempotencyKey("k"))
				if err != nil {
					t.Error(err)
				}
				ids[i] = id
			}(i)
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("ids differ: %v", ids)
			}
		}
		if n := count(t, e, "c"); n != 1 {
			t.Fatalf("applied %d times", n)
		}
	})
}

func TestIdempotentRequest(t *testing.T) {
	dir := t.TempDir()
	o := Options{DataDir: dir, Shards: 2}
	e := openTest(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := IdempotencyKey("get-1")
	if _, err := e.Send(ctx, addr("r"), Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	// "fwdget" forwards a get to r, whose reply answers the request.
	r1, err := e.Request(ctx, addr("f"), Message{Type: "fwdget", Value: []byte("r")}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Send(ctx, addr("r"), Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	r2, err := e.Request(ctx, addr("f"), Message{Type: "fwdget", Value: []byte("r")}, key)
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := r1.AsInt64()
	n2, _ := r2.AsInt64()
	if n1 != 1 || n2 != 1 {
		t.Fatalf("replies %d and %d, want the first (1) twice", n1, n2)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, o)
	r3, err := e.Request(ctx, addr("f"), Message{Type: "fwdget", Value: []byte("r")}, key)
	if err != nil {
		t.Fatal(err)
	}
	if n3, _ := r3.AsInt64(); n3 != 1 {
		t.Fatalf("after a restart the reply is %d, want the first (1)", n3)
	}
	_ = e.Close()
}

// Bug 11: an overloaded batch was partly applied but answered "retry".
func TestBatchIsAdmittedWholeOrNotAtAll(t *testing.T) {
	e := openTest(t, Options{Shards: 1, MailboxCapacity: 8})
	defer e.Close()
	msgs := make([]Outgoing, 100)
	for i := range msgs {
		msgs[i] = Outgoing{To: addr("b"), Message: Message{Type: "inc"}}
	}
	err := e.SendBatch(context.Background(), msgs)
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("batch larger than the mailbox: %v", err)
	}
	if err := e.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "b"); n != 0 {
		t.Fatalf("%d messages of a refused batch were applied", n)
	}
	if err := e.SendBatch(context.Background(), msgs[:8]); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "b"); n != 8 {
		t.Fatalf("applied %d, want 8", n)
	}
	// Keys on batch lines: a batch sent twice applies once.
	keyed := []Outgoing{{To: addr("k"), Message: Message{Type: "inc"}, Key: "a"}, {To: addr("k"), Message: Message{Type: "inc"}, Key: "b"}}
	for i := 0; i < 2; i++ {
		if err := e.SendBatch(context.Background(), keyed); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, e, "k"); n != 2 {
		t.Fatalf("keyed batch sent twice applied %d times, want 2", n)
	}
}
