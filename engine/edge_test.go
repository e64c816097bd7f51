package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestIngressTypes: a function type that declares its ingress types refuses
// other types from every ingress call (naming the accepted ones) and still
// takes them from other functions; NoIngress refuses everything from
// ingress. Before IngressTypes existed, every type was accepted.
func TestIngressTypes(t *testing.T) {
	var internal []string
	inner := FunctionSpec{Namespace: "t", Type: "inner", NoIngress: true,
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			internal = append(internal, msg.Type) // one shard: no race
			ctx.Reply(String("ok"))
			return nil
		})}
	outer := counterSpec()
	outer.IngressTypes = []string{"inc", "get", "relay"}
	base := outer.Function
	outer.Function = FunctionFunc(func(ctx Context, msg Message) error {
		if msg.Type == "relay" {
			ctx.Send(Address{Namespace: "t", Type: "inner", ID: "x"}, Message{Type: "secret"})
			ctx.Send(addr("self"), Message{Type: "fwd", Value: []byte("y")}) // not an ingress type: fine internally
			return nil
		}
		return base.Invoke(ctx, msg)
	})
	e := openTest(t, Options{Shards: 1}, outer, inner)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	check := func(what string, err error, wantIn ...string) {
		t.Helper()
		if !errors.Is(err, ErrIngressType) {
			t.Fatalf("%s: %v, want ErrIngressType", what, err)
		}
		for _, w := range wantIn {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not name %q", what, err, w)
			}
		}
	}
	_, err := e.Send(ctx, addr("a"), Message{Type: "fwd", Value: []byte("b")})
	check("Send", err, "inc, get, relay", `"fwd"`)
	check("SendAsync", e.SendAsync(addr("a"), Message{Type: "fail"}), `"fail"`)
	check("SendBatch", e.SendBatch(ctx, []Outgoing{{To: addr("a"), Message: Message{Type: "inc"}}, {To: addr("a"), Message: Message{Type: "egress"}}}), "message 1")
	_, err = e.Request(ctx, Address{Namespace: "t", Type: "inner", ID: "x"}, Message{Type: "secret"})
	check("Request to a NoIngress type", err, "t/inner", "no messages from ingress")

	// Nothing of the refused batch was accepted; accepted types work.
	if n := count(t, e, "a"); n != 0 {
		t.Fatalf("a = %d after refused calls", n)
	}
	if _, err := e.Send(ctx, addr("a"), Message{Type: "relay"}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e, "y"); n != 1 {
		t.Fatalf("internal fwd not delivered: y = %d", n)
	}
	if len(internal) != 1 || internal[0] != "secret" {
		t.Fatalf("inner got %v, want the internal message", internal)
	}

	// Registration validates the declaration.
	for _, sp := range []FunctionSpec{
		{Namespace: "a", Type: "b", Function: outer.Function, NoIngress: true, IngressTypes: []string{"x"}},
		{Namespace: "a", Type: "b", Function: outer.Function, IngressTypes: []string{"x", "x"}},
		{Namespace: "a", Type: "b", Function: outer.Function, IngressTypes: []string{""}},
		{Namespace: "a", Type: "b", Function: outer.Function, IngressTypes: []string{strings.Repeat("x", 1025)}},
	} {
		if _, err := Open(Options{Shards: 1, Logger: quiet}, sp); err == nil {
			t.Errorf("spec %+v accepted", sp.IngressTypes)
		}
	}
}

// TestStateListsDeclaredValues: State lists every declared value (unset
// ones with Present false) and refuses an unregistered type with
// ErrUnknownType; it used to answer an empty list for both.
func TestStateListsDeclaredValues(t *testing.T) {
	two := ValueSpec{Name: "two", Type: TypeString}
	sp := counterSpec()
	sp.States = append(sp.States, two)
	e := openTest(t, Options{Shards: 1}, sp)
	defer e.Close()
	ctx := context.Background()
	st, err := e.State(ctx, addr("never"))
	if err != nil || len(st) != 2 || st[0].Present || st[1].Present || st[0].Spec != countSpec || st[1].Spec != two {
		t.Fatalf("state of an untouched instance: %v %+v", err, st)
	}
	if _, err := e.Send(ctx, addr("once"), Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	st, err = e.State(ctx, addr("once"))
	if err != nil || len(st) != 2 || !st[0].Present || st[0].Spec.Name != "count" || st[1].Present || st[1].Spec.Name != "two" {
		t.Fatalf("state: %v %+v", err, st)
	}
	if _, err := e.State(ctx, Address{Namespace: "t", Type: "nope", ID: "1"}); !errors.Is(err, ErrUnknownType) || !strings.Contains(err.Error(), "t/nope") {
		t.Fatalf("state of an unknown type: %v", err)
	}
}

// TestDataDirInUse: a second engine on the same data directory fails with
// ErrDataDirInUse saying that the directory is in use (it used to say
// "resource temporarily unavailable" or "lock held by current process").
// Another process holding it is covered by cmd/engine's TestSecondEngineSameDataDir.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	e := openTest(t, Options{Shards: 1, DataDir: dir})
	_, err := Open(Options{Shards: 1, DataDir: dir, Logger: quiet}, counterSpec())
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "another engine") {
		t.Fatalf("second Open: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := openTest(t, Options{Shards: 1, DataDir: dir})
	e2.Close()
}

// TestReadEgressByteBudget: a read stops before the record that would pass
// the byte budget, but always returns at least one record, however large;
// following next reads every record once.
func TestReadEgressByteBudget(t *testing.T) {
	sizes := []int{10, 10, 5000, 10, 10, 10}
	big := FunctionSpec{Namespace: "t", Type: "big", Function: FunctionFunc(func(ctx Context, msg Message) error {
		for i, n := range sizes {
			ctx.Egress("out", Message{Type: "t/rec", Value: []byte(fmt.Sprintf("%d:%s", i, strings.Repeat("x", n)))})
		}
		return nil
	})}
	e := openTest(t, Options{Shards: 1, DataDir: t.TempDir()}, big)
	defer e.Close()
	ctx := context.Background()
	if _, err := e.Send(ctx, Address{Namespace: "t", Type: "big", ID: "1"}, Message{Type: "go"}); err != nil {
		t.Fatal(err)
	}
	var counts []int
	from := uint64(0)
	for from < uint64(len(sizes)) {
		recs, err := e.ReadEgress(ctx, "out", from, 100, 100, time.Second)
		if err != nil || len(recs) == 0 {
			t.Fatalf("read from %d: %v %d", from, err, len(recs))
		}
		for i, r := range recs {
			if r.Offset != from+uint64(i) || !strings.HasPrefix(string(r.Message.Value), fmt.Sprint(r.Offset, ":")) {
				t.Fatalf("record %d at %d: offset %d", i, from, r.Offset)
			}
		}
		counts = append(counts, len(recs))
		from += uint64(len(recs))
	}
	// Small records are about 30 bytes with source and type: the budget
	// of 100 holds two or three of them, never the 5000-byte one with
	// another, yet that one is returned alone.
	if len(counts) != 3 || counts[0] != 2 || counts[1] != 1 || counts[2] != 3 {
		t.Fatalf("records per read %v, want [2 1 3]", counts)
	}
	if recs, _ := e.ReadEgress(ctx, "out", 0, 100, 0, 0); len(recs) != len(sizes) {
		t.Fatalf("no byte budget: %d records", len(recs))
	}
}
