package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func ctx10(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSetStateThroughTheLog: a repair sets and deletes values, the function
// sees them, and they survive a restart (the write went through the log).
func TestSetStateThroughTheLog(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o)
		ctx := ctx10(t)
		if _, err := e.Send(ctx, addr("a"), Message{Type: "inc"}); err != nil {
			t.Fatal(err)
		}
		if err := e.SetState(ctx, addr("a"), []StateMutation{{Name: "count", Value: Int64(41)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, addr("a"), Message{Type: "inc"}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, e, "a"); n != 42 {
			t.Fatalf("count after repair to 41 and one inc = %d, want 42", n)
		}
		if err := e.SetState(ctx, addr("b"), []StateMutation{{Name: "count", Value: Int64(7)}}); err != nil {
			t.Fatal(err)
		}
		if err := e.SetState(ctx, addr("a"), []StateMutation{{Name: "count", Delete: true}}); err != nil {
			t.Fatal(err)
		}
		vals, err := e.State(ctx, addr("a"))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if v.Present {
				t.Fatalf("state of a after delete: %+v, want none set", vals)
			}
		}
		if o.DataDir == "" {
			e.Close()
			return
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		e = openTest(t, o)
		defer e.Close()
		if n := count(t, e, "b"); n != 7 {
			t.Fatalf("count of b after restart = %d, want 7 (the repair was not durable)", n)
		}
		if n := count(t, e, "a"); n != 0 {
			t.Fatalf("count of a after restart = %d, want 0 (the delete was not durable)", n)
		}
	})
}

// TestSetStateOrderedWithMessages: a repair runs in its place in the
// instance's queue: after the message ahead of it, before the one behind.
func TestSetStateOrderedWithMessages(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	spec := FunctionSpec{Namespace: "t", Type: "counter", States: []ValueSpec{countSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, err := ctx.GetInt64(countSpec)
			if err != nil {
				return err
			}
			if msg.Type == "slow" {
				entered <- struct{}{}
				<-gate // holds the shard: what follows waits in its mailbox
			}
			if msg.Type == "get" {
				ctx.Reply(Int64(n))
				return nil
			}
			return ctx.SetInt64(countSpec, n+1)
		})}
	e := openTest(t, Options{Shards: 1, DataDir: t.TempDir()}, spec)
	defer e.Close()
	ctx := ctx10(t)
	mb := e.shards[0].Mailbox()
	sent := make(chan error, 3)
	go func() { _, err := e.Send(ctx, addr("x"), Message{Type: "slow"}); sent <- err }()
	<-entered
	go func() { sent <- e.SetState(ctx, addr("x"), []StateMutation{{Name: "count", Value: Int64(100)}}) }()
	for mb.Len() < 1 {
		time.Sleep(time.Millisecond)
	}
	go func() { _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}); sent <- err }()
	for mb.Len() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	for i := 0; i < 3; i++ {
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, e, "x"); n != 101 {
		t.Fatalf("count = %d, want 101 (slow: 1, repair: 100, inc: 101)", n)
	}
}

// TestSetStateRefusesBadInput: undeclared names, wrong types, unknown types
// and the reserved type on public paths are refused with errors that say
// what to fix, and nothing is written.
func TestSetStateRefusesBadInput(t *testing.T) {
	e := openTest(t, Options{Shards: 2})
	defer e.Close()
	ctx := ctx10(t)
	cases := []struct {
		name string
		addr Address
		muts []StateMutation
		want error
		text string
	}{
		{"undeclared", addr("a"), []StateMutation{{Name: "nope", Value: Int64(1)}}, ErrUndeclared, "declared: count"},
		{"wrong type", addr("a"), []StateMutation{{Name: "count", Value: String("1")}}, ErrStateType, `declared as "io.statefun.types/long"`},
		{"unknown type", Address{Namespace: "t", Type: "nope", ID: "a"}, []StateMutation{{Name: "count", Delete: true}}, ErrUnknownType, "not registered"},
		{"empty", addr("a"), nil, ErrBadMessage, "no mutations"},
		{"twice", addr("a"), []StateMutation{{Name: "count", Delete: true}, {Name: "count", Delete: true}}, ErrBadMessage, "twice"},
		{"bad address", Address{Namespace: "t", Type: "counter"}, []StateMutation{{Name: "count", Delete: true}}, ErrBadAddress, "non-empty"},
	}
	for _, c := range cases {
		err := e.SetState(ctx, c.addr, c.muts)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: err = %v, want %v containing %q", c.name, err, c.want, c.text)
		}
	}
	if _, err := e.Send(ctx, addr("a"), Message{Type: repairType, Value: encodeRepair([]StateMutation{{Name: "count", Value: Int64(5)}})}); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("Send of the reserved type: err = %v, want ErrBadMessage", err)
	}
	if err := e.SendBatch(ctx, []Outgoing{{To: addr("a"), Message: Message{Type: repairType}}}); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("SendBatch of the reserved type: err = %v, want ErrBadMessage", err)
	}
	if n := count(t, e, "a"); n != 0 {
		t.Fatalf("count = %d after refused repairs, want 0", n)
	}
}

// TestFunctionCannotSendRepair: a function's send of the reserved type
// fails its invocation (dead letter), so only SetState repairs state.
func TestFunctionCannotSendRepair(t *testing.T) {
	spec := counterSpec()
	inner := spec.Function
	spec.Function = FunctionFunc(func(ctx Context, msg Message) error {
		if msg.Type == "forge" {
			ctx.Send(addr("victim"), Message{Type: repairType, Value: encodeRepair([]StateMutation{{Name: "count", Value: Int64(9)}})})
			return nil
		}
		return inner.Invoke(ctx, msg)
	})
	e := openTest(t, Options{Shards: 2}, spec)
	defer e.Close()
	ctx := ctx10(t)
	if _, err := e.Send(ctx, addr("f"), Message{Type: "forge"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "victim"); n != 0 {
		t.Fatalf("victim count = %d, want 0", n)
	}
	dl, err := e.DeadLetters(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || !strings.Contains(dl[0].Error, "reserved") {
		t.Fatalf("dead letters = %+v, want one naming the reserved type", dl)
	}
}

// gatedRemote holds each batch until released and records what it saw.
type gatedRemote struct {
	mu      sync.Mutex
	gate    chan struct{}
	started chan struct{}
	seen    []gatedBatch
}

type gatedBatch struct {
	msgs []string
	n    int64
}

func (g *gatedRemote) InvokeBatch(b *RemoteBatch, done func(*RemoteResult)) {
	var n int64
	for _, s := range b.States {
		if s.Spec.Name == "n" && s.Present {
			n, _ = DecodeLongWrapper(s.Value)
		}
	}
	var msgs []string
	for _, inv := range b.Invocations {
		msgs = append(msgs, inv.Message.Type)
	}
	g.mu.Lock()
	g.seen = append(g.seen, gatedBatch{msgs, n})
	g.mu.Unlock()
	g.started <- struct{}{}
	go func() {
		<-g.gate
		done(&RemoteResult{Mutations: []StateMutation{{Name: "n", Value: Int64(n + int64(len(b.Invocations)))}}})
	}()
}

// TestSetStateOnRemoteType: a repair of a remote function's instance runs
// on the shard, after the batch in flight and before the messages queued
// behind it, without calling the endpoint.
func TestSetStateOnRemoteType(t *testing.T) {
	g := &gatedRemote{gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e := openTest(t, Options{Shards: 1, DataDir: t.TempDir()},
		FunctionSpec{Namespace: "r", Type: "fn", States: []ValueSpec{nSpec}, Remote: g})
	defer e.Close()
	ctx := ctx10(t)
	to := Address{Namespace: "r", Type: "fn", ID: "1"}
	done := make(chan error, 4)
	go func() { _, err := e.Send(ctx, to, Message{Type: "first"}); done <- err }()
	<-g.started // the first batch is in flight: the instance is busy
	go func() { done <- e.SetState(ctx, to, []StateMutation{{Name: "n", Value: Int64(100)}}) }()
	waitQueued(t, e, to, 1)
	go func() { _, err := e.Send(ctx, to, Message{Type: "second"}); done <- err }()
	waitQueued(t, e, to, 2)
	g.gate <- struct{}{} // first batch: n = 0 + 1
	g.gate <- struct{}{} // second batch
	for i := 0; i < 3; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	g.mu.Lock()
	seen := append([]gatedBatch(nil), g.seen...)
	g.mu.Unlock()
	if len(seen) != 2 || strings.Join(seen[1].msgs, ",") != "second" || seen[1].n != 100 {
		t.Fatalf("batches = %+v, want [first] with n=0 then [second] with n=100 (the repair between them, not sent to the endpoint)", seen)
	}
	vals, err := e.State(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 1 || string(vals[0].Value) != string(Int64(101).Value) {
		t.Fatalf("state = %+v, want n = 101", vals)
	}
	// A repair of a spec the remote type has not registered is refused.
	if err := e.SetState(ctx, to, []StateMutation{{Name: "other", Value: Int64(1)}}); !errors.Is(err, ErrUndeclared) || !strings.Contains(err.Error(), "remote") {
		t.Fatalf("undeclared remote state: err = %v", err)
	}
}

// waitQueued waits until the instance has n queued messages on its shard.
func waitQueued(t *testing.T, e *Engine, a Address, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := e.Inspect(context.Background(), a, 10)
		if err != nil {
			t.Fatal(err)
		}
		if info.QueuedTotal >= n {
			if !info.Busy {
				t.Fatalf("instance %s not busy while its remote call is in flight: %+v", a, info)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s: %d queued, want %d", a, info.QueuedTotal, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDeadLetterReplay: failed messages land in dead-letters with target,
// type and payload; replay re-sends a range to the original targets; bad
// ranges are refused.
func TestDeadLetterReplay(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		fail := true
		var mu sync.Mutex
		spec := counterSpec()
		inner := spec.Function
		spec.Function = FunctionFunc(func(ctx Context, msg Message) error {
			mu.Lock()
			f := fail
			mu.Unlock()
			if msg.Type == "flaky" {
				if f {
					return errors.New("downstream unavailable")
				}
				msg.Type = "inc"
			}
			return inner.Invoke(ctx, msg)
		})
		e := openTest(t, o, spec)
		defer e.Close()
		ctx := ctx10(t)
		for _, id := range []string{"p", "q", "r"} {
			if _, err := e.Send(ctx, addr(id), Message{Type: "flaky", Value: []byte("payload-" + id)}); err != nil {
				t.Fatal(err)
			}
		}
		dl, err := e.DeadLetters(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(dl) != 3 {
			t.Fatalf("%d dead letters, want 3", len(dl))
		}
		for i, d := range dl {
			if d.Bad != "" || d.Offset != uint64(i) || d.Message.Type != "flaky" || d.Error != "downstream unavailable" ||
				string(d.Message.Value) != "payload-"+d.Target.ID || d.Target.Type != "counter" {
				t.Fatalf("dead letter %d = %+v", i, d)
			}
		}
		mu.Lock()
		fail = false
		mu.Unlock()
		res, err := e.ReplayDeadLetters(ctx, 1, 3) // q and r, not p
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Replayed) != 2 || len(res.Skipped) != 0 {
			t.Fatalf("replay = %+v, want 2 replayed", res)
		}
		for id, want := range map[string]int64{"p": 0, "q": 1, "r": 1} {
			if n := count(t, e, id); n != want {
				t.Fatalf("count %s = %d after replay, want %d", id, n, want)
			}
		}
		// A range past the end replays nothing; empty and huge ranges are refused.
		if res, err := e.ReplayDeadLetters(ctx, 50, 60); err != nil || len(res.Replayed) != 0 {
			t.Fatalf("replay past the end: %+v, %v", res, err)
		}
		if _, err := e.ReplayDeadLetters(ctx, 3, 3); !errors.Is(err, ErrBadMessage) {
			t.Fatalf("empty range: err = %v", err)
		}
		if _, err := e.ReplayDeadLetters(ctx, 0, MaxReplay+1); !errors.Is(err, ErrBadMessage) {
			t.Fatalf("huge range: err = %v", err)
		}
	})
}

// TestDeadLetterReplaySkipsUnregistered: a dead letter for a type that no
// longer exists is skipped with the reason.
func TestDeadLetterReplaySkipsUnregistered(t *testing.T) {
	e := openTest(t, Options{Shards: 1}, FunctionSpec{Namespace: "t", Type: "counter", States: []ValueSpec{countSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			// A send to a type that is not registered is dead-lettered.
			ctx.Send(Address{Namespace: "gone", Type: "fn", ID: "1"}, Message{Type: "x", Value: []byte("v")})
			return nil
		})})
	defer e.Close()
	ctx := ctx10(t)
	if _, err := e.Send(ctx, addr("s"), Message{Type: "go"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := e.ReplayDeadLetters(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 0 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Bad, "gone/fn is not registered") {
		t.Fatalf("replay = %+v, want one skipped for the unregistered type", res)
	}
}

// TestStatusAndFunctions: the operator snapshot reflects work done.
func TestStatusAndFunctions(t *testing.T) {
	e := openTest(t, Options{Shards: 2, DataDir: t.TempDir()})
	defer e.Close()
	ctx := ctx10(t)
	for i := 0; i < 10; i++ {
		if _, err := e.Send(ctx, addr("s"), Message{Type: "inc"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Send(ctx, addr("s"), Message{Type: "fail"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	st := e.Status()
	var inv, fails uint64
	for _, s := range st.Shards {
		inv += s.Invocations
		fails += s.Failures
	}
	if !st.Ready || st.Failed != "" || len(st.Shards) != 2 || st.IngressMessages != 11 || st.Processed != 11 || inv != 11 || fails != 1 {
		t.Fatalf("status = %+v", st)
	}
	if st.LogDurable == 0 || st.StoreApplied > st.LogDurable || st.LastCheckpoint.IsZero() || time.Since(st.LastCheckpoint) > time.Minute {
		t.Fatalf("positions or checkpoint: %+v", st)
	}
	fns := e.Functions()
	if len(fns) != 1 || fns[0].Namespace != "t" || fns[0].Type != "counter" || fns[0].Invocations != 11 || fns[0].Failures != 1 ||
		len(fns[0].States) != 1 || fns[0].States[0] != countSpec || fns[0].Remote != nil {
		t.Fatalf("functions = %+v", fns)
	}
}

// TestInspectDelayed: a pending delayed message shows under both its
// sender and its target.
func TestInspectDelayed(t *testing.T) {
	e := openTest(t, Options{Shards: 2, DataDir: t.TempDir()})
	defer e.Close()
	ctx := ctx10(t)
	if _, err := e.Send(ctx, addr("d"), Message{Type: "later", Value: []byte("1h")}); err != nil {
		t.Fatal(err)
	}
	info, err := e.Inspect(ctx, addr("d"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Delayed) != 1 || info.Delayed[0].Token != "tok" || info.Delayed[0].Message.Type != "inc" ||
		info.Delayed[0].From != addr("d") || time.Until(info.Delayed[0].FireAt) < 50*time.Minute {
		t.Fatalf("delayed = %+v", info.Delayed)
	}
	other, err := e.Inspect(ctx, addr("e"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(other.Delayed) != 0 || other.Active {
		t.Fatalf("unrelated instance: %+v", other)
	}
}

// TestLocalSendToUnknownType: a send to an unregistered type, on the
// sender's own shard, is dead-lettered with its real target and type, and
// the sends after it in the same invocation still arrive. (The shard used
// to dead-letter it in the middle of committing the sender's effects, which
// reset them: the record named target "//" and later sends were lost.)
func TestLocalSendToUnknownType(t *testing.T) {
	e := openTest(t, Options{Shards: 1}, FunctionSpec{Namespace: "t", Type: "counter", States: []ValueSpec{countSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, _ := ctx.GetInt64(countSpec)
			switch msg.Type {
			case "go":
				ctx.Send(Address{Namespace: "gone", Type: "fn", ID: "1"}, Message{Type: "x", Value: []byte("v")})
				ctx.Send(addr("after"), Message{Type: "inc"})
				ctx.Send(addr("after"), Message{Type: "inc"})
			case "inc":
				return ctx.SetInt64(countSpec, n+1)
			case "get":
				ctx.Reply(Int64(n))
			}
			return nil
		})})
	defer e.Close()
	ctx := ctx10(t)
	if _, err := e.Send(ctx, addr("s"), Message{Type: "go"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "after"); n != 2 {
		t.Fatalf("count of the instance sent to after the unknown type = %d, want 2", n)
	}
	dl, err := e.DeadLetters(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || dl[0].Target.String() != "gone/fn/1" || dl[0].Message.Type != "x" || string(dl[0].Message.Value) != "v" || dl[0].Caller != addr("s") {
		t.Fatalf("dead letters = %+v, want one for gone/fn/1 from t/counter/s", dl)
	}
}
