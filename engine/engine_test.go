package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var countSpec = ValueSpec{Name: "count", Type: TypeLong}

// counter counts messages per instance; "get" replies with the count,
// "fwd" forwards to the id in the payload, "egress" writes an egress record,
// "later" sends itself an increment after the payload's duration.
func counterSpec() FunctionSpec {
	return FunctionSpec{Namespace: "t", Type: "counter", States: []ValueSpec{countSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, err := ctx.GetInt64(countSpec)
			if err != nil {
				return err
			}
			switch msg.Type {
			case "inc":
				return ctx.SetInt64(countSpec, n+1)
			case "get":
				ctx.Reply(Int64(n))
			case "fwd":
				ctx.Send(Address{Namespace: "t", Type: "counter", ID: string(msg.Value)}, Message{Type: "inc"})
			case "fwdget":
				ctx.Send(Address{Namespace: "t", Type: "counter", ID: string(msg.Value)}, Message{Type: "get"})
			case "egress":
				ctx.Egress("out", Message{Type: "rec", Value: []byte(ctx.Self().ID)})
			case "later":
				d, _ := time.ParseDuration(string(msg.Value))
				ctx.SendAfter(d, ctx.Self(), Message{Type: "inc"}, "tok")
			case "cancel":
				ctx.Cancel("tok")
			case "fail":
				return errors.New("boom")
			}
			return nil
		})}
}

func addr(id string) Address { return Address{Namespace: "t", Type: "counter", ID: id} }

func openTest(t *testing.T, o Options, specs ...FunctionSpec) *Engine {
	t.Helper()
	o.Logger = quiet
	if len(specs) == 0 {
		specs = []FunctionSpec{counterSpec()}
	}
	e, err := Open(o, specs...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func count(t *testing.T, e *Engine, id string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.Request(ctx, addr(id), Message{Type: "get"})
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	n, err := r.AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func modes(t *testing.T, f func(t *testing.T, o Options)) {
	for _, shards := range []int{1, 3} {
		t.Run(fmt.Sprintf("memory/shards=%d", shards), func(t *testing.T) { f(t, Options{Shards: shards}) })
		t.Run(fmt.Sprintf("durable/shards=%d", shards), func(t *testing.T) {
			f(t, Options{Shards: shards, DataDir: t.TempDir(), SegmentSize: 1 << 20})
		})
	}
}

func TestSendAndState(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o)
		defer e.Close()
		ctx := context.Background()
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					if _, err := e.Send(ctx, addr(fmt.Sprint("c", i%10)), Message{Type: "inc"}); err != nil {
						t.Error(err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		for i := 0; i < 10; i++ {
			if n := count(t, e, fmt.Sprint("c", i)); n != 40 {
				t.Fatalf("c%d = %d, want 40", i, n)
			}
		}
		st, err := e.State(ctx, addr("c3"))
		if err != nil || len(st) != 1 || st[0].Spec.Name != "count" {
			t.Fatalf("state: %v %+v", err, st)
		}
		if v, _ := DecodeLongWrapper(st[0].Value); v != 40 {
			t.Fatalf("state value %d", v)
		}
	})
}

func TestForwardAcrossShardsAndEgress(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o)
		defer e.Close()
		ctx := context.Background()
		for i := 0; i < 100; i++ {
			if _, err := e.Send(ctx, addr(fmt.Sprint("src", i)), Message{Type: "fwd", Value: []byte(fmt.Sprint("dst", i%7))}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Send(ctx, addr(fmt.Sprint("e", i)), Message{Type: "egress"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		var total int64
		for i := 0; i < 7; i++ {
			total += count(t, e, fmt.Sprint("dst", i))
		}
		if total != 100 {
			t.Fatalf("forwarded %d, want 100", total)
		}
		recs, err := e.ReadEgress(ctx, "out", 0, 1000, 0, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for len(recs) < 100 {
			more, err := e.ReadEgress(ctx, "out", uint64(len(recs)), 1000, 0, time.Second)
			if err != nil || len(more) == 0 {
				t.Fatalf("egress: have %d records, err %v", len(recs), err)
			}
			recs = append(recs, more...)
		}
		seen := map[string]bool{}
		for i, r := range recs {
			if r.Offset != uint64(i) {
				t.Fatalf("offset %d at %d", r.Offset, i)
			}
			seen[string(r.Message.Value)] = true
		}
		if len(seen) != 100 {
			t.Fatalf("%d distinct egress records", len(seen))
		}
	})
}

func TestRequestReplyThroughChain(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o)
		defer e.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}); err != nil {
			t.Fatal(err)
		}
		r, err := e.Request(ctx, addr("y"), Message{Type: "fwdget", Value: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := r.AsInt64(); n != 1 {
			t.Fatalf("reply %d", n)
		}
		short, c2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer c2()
		if _, err := e.Request(short, addr("z"), Message{Type: "inc"}); !errors.Is(err, ErrNoReply) {
			t.Fatalf("want ErrNoReply, got %v", err)
		}
	})
}

func TestDelayedMessagesAndCancel(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		e := openTest(t, o)
		defer e.Close()
		ctx := context.Background()
		if _, err := e.Send(ctx, addr("d1"), Message{Type: "later", Value: []byte("30ms")}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, addr("d2"), Message{Type: "later", Value: []byte("300ms")}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, addr("d2"), Message{Type: "cancel"}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for count(t, e, "d1") != 1 {
			if time.Now().After(deadline) {
				t.Fatal("delayed message did not fire")
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(400 * time.Millisecond)
		if n := count(t, e, "d2"); n != 0 {
			t.Fatalf("cancelled delayed message fired: %d", n)
		}
	})
}

func TestBadInput(t *testing.T) {
	e := openTest(t, Options{Shards: 1, MaxMessageBytes: 10})
	defer e.Close()
	ctx := context.Background()
	cases := []struct {
		to   Address
		msg  Message
		want error
	}{
		{Address{Namespace: "t", Type: "nope", ID: "1"}, Message{Type: "inc"}, ErrUnknownType},
		{Address{Namespace: "t", Type: "counter"}, Message{Type: "inc"}, ErrBadAddress},
		{addr("1"), Message{Type: "inc", Value: make([]byte, 11)}, ErrTooLarge},
		{addr("1"), Message{}, ErrBadMessage},
	}
	for _, c := range cases {
		if _, err := e.Send(ctx, c.to, c.msg); !errors.Is(err, c.want) {
			t.Errorf("Send(%v, %q): got %v, want %v", c.to, c.msg.Type, err, c.want)
		}
	}
	// A failing function: the message goes to dead letters, nothing else.
	if _, err := e.Send(ctx, addr("f"), Message{Type: "fail"}); err != nil {
		t.Fatal(err)
	}
	recs, err := e.ReadEgress(ctx, "dead-letters", 0, 10, 0, time.Second)
	if err != nil || len(recs) != 1 {
		t.Fatalf("dead letters: %v %v", recs, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Send(ctx, addr("1"), Message{Type: "inc"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := Open(Options{Shards: 1}, FunctionSpec{Namespace: "a", Type: "b"}); err == nil {
		t.Fatal("spec without function accepted")
	}
	if _, err := Open(Options{Shards: 1}, FunctionSpec{Namespace: "a", Type: "b", States: []ValueSpec{{Name: "bad name"}}, Function: FunctionFunc(nil)}); err == nil {
		t.Fatal("bad state name accepted")
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	o := Options{Shards: 2, DataDir: dir, SegmentSize: 1 << 20}
	e := openTest(t, o)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, err := e.Send(ctx, addr(fmt.Sprint(i%5)), Message{Type: "inc"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Send(ctx, addr("t"), Message{Type: "later", Value: []byte("200ms")}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// Restart with another shard count.
	o.Shards = 3
	e = openTest(t, o)
	defer e.Close()
	for i := 0; i < 5; i++ {
		if n := count(t, e, fmt.Sprint(i)); n != 40 {
			t.Fatalf("%d = %d after restart", i, n)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for count(t, e, "t") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("delayed message lost across restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNoConcurrentInvocationsPerAddress(t *testing.T) {
	var active sync.Map
	var violations, calls atomic.Int64
	spec := FunctionSpec{Namespace: "t", Type: "guard", Function: FunctionFunc(func(ctx Context, msg Message) error {
		id := ctx.Self().ID
		if _, loaded := active.LoadOrStore(id, true); loaded {
			violations.Add(1)
		}
		time.Sleep(10 * time.Microsecond)
		active.Delete(id)
		calls.Add(1)
		return nil
	})}
	e := openTest(t, Options{Shards: 4}, spec)
	defer e.Close()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				_ = e.SendAsync(Address{Namespace: "t", Type: "guard", ID: fmt.Sprint(i % 3)}, Message{Type: "x"})
			}
		}()
	}
	wg.Wait()
	if err := e.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if violations.Load() != 0 {
		t.Fatalf("%d concurrent invocations of one address", violations.Load())
	}
	if calls.Load() != 800 {
		t.Fatalf("%d calls", calls.Load())
	}
}

// TestSelfSendsKeepInstancesApart: a function that sends to itself must not
// get its instance queued twice (which once let a retired instance run
// under another address).
func TestSelfSendsKeepInstancesApart(t *testing.T) {
	var wrong atomic.Int64
	spec := FunctionSpec{Namespace: "t", Type: "self", States: []ValueSpec{countSpec}, Function: FunctionFunc(func(ctx Context, msg Message) error {
		if string(msg.Value) != ctx.Self().ID {
			wrong.Add(1)
		}
		n, _, _ := ctx.GetInt64(countSpec)
		if n%2 == 0 {
			ctx.Send(ctx.Self(), Message{Type: "again", Value: []byte(ctx.Self().ID)})
		}
		return ctx.SetInt64(countSpec, n+1)
	})}
	e := openTest(t, Options{Shards: 1}, spec)
	defer e.Close()
	for i := 0; i < 20000; i++ {
		id := fmt.Sprint(i % 997)
		for {
			err := e.SendAsync(Address{Namespace: "t", Type: "self", ID: id}, Message{Type: "go", Value: []byte(id)})
			if err == nil {
				break
			}
			if !errors.Is(err, ErrOverloaded) {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := e.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d messages ran under another address", wrong.Load())
	}
}

// TestMetricsCover: the metrics an operator needs are exported.
func TestMetricsCover(t *testing.T) {
	e := openTest(t, Options{Shards: 2, DataDir: t.TempDir()})
	defer e.Close()
	msgs := make([]Outgoing, 100) // latencies are sampled, one in 32
	for i := range msgs {
		msgs[i] = Outgoing{To: addr("m"), Message: Message{Type: "inc"}}
	}
	if err := e.SendBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if err := e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	for _, c := range e.Collectors() {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, want := range []string{
		"shardfn_invocations_total", "shardfn_invocation_duration_seconds", "shardfn_mailbox_depth",
		"shardfn_state_cache_hits_total", "shardfn_state_cache_misses_total", "shardfn_state_cache_evictions_total",
		"shardfn_state_cache_bytes", "shardfn_wal_batch_bytes", "shardfn_wal_sync_duration_seconds",
		"shardfn_wal_durable_position_bytes", "shardfn_checkpoint_duration_seconds", "shardfn_recovery_duration_seconds",
		"shardfn_store_metric",
	} {
		if !have[want] {
			t.Errorf("metric %s missing", want)
		}
	}
}

// TestTokenReplacementSurvivesRestart: a delayed message sent again with a
// pending token replaces the pending one, also in the store: after a
// restart only the replacement fires.
func TestTokenReplacementSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	o := Options{Shards: 2, DataDir: dir}
	e := openTest(t, o)
	ctx := context.Background()
	for i := 0; i < 3; i++ { // the same token, three times: one pending message
		if _, err := e.Send(ctx, addr("tok"), Message{Type: "later", Value: []byte("300ms")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, o)
	defer e.Close()
	if got := e.Recovery().Timers; got != 1 {
		t.Fatalf("%d delayed messages restored, want 1", got)
	}
	// Wait until no delayed message is pending (a resurrected old one
	// would be pending beside the newest), then until the fired ones are
	// processed: no wall-clock guess, so a loaded machine cannot fail it.
	deadline := time.Now().Add(30 * time.Second)
	for delayedPending(e) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d delayed messages still pending after 30 s", delayedPending(e))
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "tok"); n != 1 {
		t.Fatalf("count %d after the delayed messages fired, want 1", n)
	}
}

// delayedPending is the number of delayed messages the shards hold.
func delayedPending(e *Engine) int64 {
	var n int64
	for _, s := range e.Status().Shards {
		n += s.DelayedMessages
	}
	return n
}

// TestCloseWakesWaitingRequests: a Request whose chain never replies ends
// when the engine closes, not at its own deadline, and says its message was
// processed (ErrReplyUnavailable: sending it again would apply it twice).
func TestCloseWakesWaitingRequests(t *testing.T) {
	e := openTest(t, Options{Shards: 1})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := e.Request(ctx, addr("silent"), Message{Type: "inc"}) // inc never replies
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	go e.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrReplyUnavailable) {
			t.Fatalf("got %v, want ErrReplyUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close left a Request waiting")
	}
}

// TestDrainWaitsForDurability: Drain returns only once what the processed
// messages wrote is durable, so a read right after it sees their effects
// even when no acknowledgement waited for them (SendAsync, restored
// messages). It used to return as soon as every message was consumed: with
// a slow group commit, State then read the state of before.
func TestDrainWaitsForDurability(t *testing.T) {
	e := openTest(t, Options{Shards: 1, DataDir: t.TempDir(), MaxBatchDelay: 500 * time.Millisecond})
	defer e.Close()
	for range 3 {
		if err := e.SendAsync(addr("d"), Message{Type: "inc"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := e.State(ctx, addr("d"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st {
		if v.Spec.Name == "count" && v.Present {
			if n, err := DecodeLongWrapper(v.Value); err == nil && n == 3 {
				return
			}
		}
	}
	t.Fatalf("state right after Drain: %+v, want count = 3", st)
}
