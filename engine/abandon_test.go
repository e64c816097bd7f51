package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// stallingRemote never answers until the engine closes, then gives every
// batch up (ErrAbandoned), like package remote does with an endpoint that
// is down. With answer set it applies each batch: state "seq" must go
// 1, 2, 3... per address, else a violation is recorded.
type stallingRemote struct {
	answer     bool
	mu         sync.Mutex
	started    int
	violations []string
}

var seqSpec = ValueSpec{Name: "seq", Type: TypeLong}

func (f *stallingRemote) InvokeBatch(b *RemoteBatch, done func(*RemoteResult)) {
	f.mu.Lock()
	f.started++
	f.mu.Unlock()
	if !f.answer {
		go func() {
			<-b.Closing
			done(&RemoteResult{Err: fmt.Errorf("stalling: %w", ErrAbandoned)})
		}()
		return
	}
	if len(b.States) == 0 {
		done(&RemoteResult{MissingSpecs: []ValueSpec{seqSpec}})
		return
	}
	var last int64
	if b.States[0].Present {
		last, _ = DecodeLongWrapper(b.States[0].Value)
	}
	for _, inv := range b.Invocations {
		v, _ := inv.Message.AsInt64()
		if v != last+1 {
			f.mu.Lock()
			f.violations = append(f.violations, fmt.Sprintf("%s: %d after %d", b.Target.ID, v, last))
			f.mu.Unlock()
		}
		last = v
	}
	done(&RemoteResult{Mutations: []StateMutation{{Name: "seq", Value: Int64(last)}}})
}

func (f *stallingRemote) batchesStarted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

// TestAbandonedRemoteBatchIsLeftForNextOpen: at Close, a remote batch given
// up with ErrAbandoned is neither applied nor dead-lettered; the address's
// later messages stay behind it; Close is not held up; the ingress message
// among them is answered "not processed" (ErrClosed, not ErrFailed); the
// internal messages are restored by the next Open and applied once, in the
// order they were sent.
func TestAbandonedRemoteBatchIsLeftForNextOpen(t *testing.T) {
	dir := t.TempDir()
	fwd := FunctionSpec{Namespace: "fwd", Type: "f", Function: FunctionFunc(func(ctx Context, m Message) error {
		ctx.Send(Address{Namespace: "r", Type: "seq", ID: ctx.Self().ID}, m)
		return nil
	})}
	stall := &stallingRemote{}
	e := openTest(t, Options{DataDir: dir, Shards: 2, SegmentSize: 1 << 20}, fwd, FunctionSpec{Namespace: "r", Type: "*", Remote: stall})
	ctx := context.Background()
	var batch []Outgoing
	for i := int64(1); i <= 20; i++ {
		batch = append(batch, Outgoing{To: Address{Namespace: "fwd", Type: "f", ID: "a"}, Message: Int64(i)})
	}
	if err := e.SendBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	direct := make(chan error, 1)
	go func() {
		_, err := e.Send(ctx, Address{Namespace: "r", Type: "seq", ID: "direct"}, Int64(1))
		direct <- err
	}()
	for stall.batchesStarted() < 2 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // hang guard (the drain alone would wait 30 s)
		t.Fatal("Close waits for remote batches that never finish")
	}
	if err := <-direct; !errors.Is(err, ErrClosed) || errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "not processed") {
		t.Fatalf("ingress message of an abandoned batch: %v", err)
	}

	answer := &stallingRemote{answer: true}
	e2 := openTest(t, Options{DataDir: dir, Shards: 2, SegmentSize: 1 << 20}, fwd, FunctionSpec{Namespace: "r", Type: "*", Remote: answer})
	defer e2.Close()
	if p := e2.Recovery().Pending; p != 20 {
		t.Fatalf("%d in-flight messages restored, want 20", p)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e2.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	st, err := e2.State(ctx, Address{Namespace: "r", Type: "seq", ID: "a"})
	if err != nil || len(st) != 1 || !st[0].Present {
		t.Fatalf("state %+v %v", st, err)
	}
	if n, _ := DecodeLongWrapper(st[0].Value); n != 20 {
		t.Fatalf("seq %d, want 20", n)
	}
	if len(answer.violations) > 0 {
		t.Fatalf("not applied once in order: %v", answer.violations)
	}
	if st, _ := e2.State(ctx, Address{Namespace: "r", Type: "seq", ID: "direct"}); len(st) > 0 && st[0].Present {
		t.Fatal("the ingress message answered 'not processed' was applied")
	}
	recs, err := e2.ReadEgress(ctx, "dead-letters", 0, 100, 0, 0)
	if err != nil || len(recs) != 0 {
		t.Fatalf("dead letters: %v %v", recs, err)
	}
}
