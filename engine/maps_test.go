package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var bagMap = MapSpec{Name: "m"}

// bagSpec keeps a map state "m". Message types: "set" k=v, "del" k,
// "clear", "setfail" (sets k=v, then fails), "len" (replies the count),
// "get" k (replies the value or "<none>"), "keys" (replies the keys in no
// particular order, comma-separated).
func bagSpec() FunctionSpec {
	return FunctionSpec{Namespace: "t", Type: "bag", Maps: []MapSpec{bagMap},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			k, v, _ := strings.Cut(string(msg.Value), "=")
			switch msg.Type {
			case "set":
				return ctx.MapSet(bagMap, k, []byte(v))
			case "setfail":
				if err := ctx.MapSet(bagMap, k, []byte(v)); err != nil {
					return err
				}
				return errors.New("fails after a map write")
			case "del":
				return ctx.MapDelete(bagMap, k)
			case "clear":
				return ctx.MapClear(bagMap)
			case "len":
				n, err := ctx.MapLen(bagMap)
				if err != nil {
					return err
				}
				ctx.Reply(Int64(int64(n)))
			case "get":
				got, ok, err := ctx.MapGet(bagMap, k)
				if err != nil {
					return err
				}
				if !ok {
					got = []byte("<none>")
				}
				ctx.Reply(String(string(got)))
			case "setget":
				// An invocation reads its own writes.
				if err := ctx.MapSet(bagMap, k, []byte(v)); err != nil {
					return err
				}
				if err := ctx.MapDelete(bagMap, "gone"); err != nil {
					return err
				}
				got, _, _ := ctx.MapGet(bagMap, k)
				_, gone, _ := ctx.MapGet(bagMap, "gone")
				n, _ := ctx.MapLen(bagMap)
				ctx.Reply(String(fmt.Sprintf("%s %v %d", got, gone, n)))
			}
			return nil
		})}
}

func bag(id string) Address { return Address{Namespace: "t", Type: "bag", ID: id} }

func ask(t *testing.T, e *Engine, to Address, typ, val string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.Request(ctx, to, Message{Type: typ, Value: []byte(val)})
	if err != nil {
		t.Fatalf("%s %s: %v", typ, val, err)
	}
	if n, err := r.AsInt64(); err == nil {
		return fmt.Sprint(n)
	}
	s, err := r.AsString()
	if err != nil {
		t.Fatalf("%s %s: reply %+v", typ, val, r)
	}
	return s
}

// mapState returns the map of State's output as k=v pairs in key order.
func mapState(t *testing.T, e *Engine, a Address) string {
	t.Helper()
	vals, err := e.State(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 1 || vals[0].Spec.Type != TypeMap || vals[0].MapLen != len(vals[0].Map) {
		t.Fatalf("state %+v", vals)
	}
	var b strings.Builder
	for i, en := range vals[0].Map {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", en.Key, en.Value)
	}
	return b.String()
}

func TestMapState(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		o.MaxInstanceBytes = 64
		e := openTest(t, o, bagSpec())
		defer func() { e.Close() }()
		ctx := context.Background()
		send := func(typ, val string) {
			t.Helper()
			if _, err := e.Send(ctx, bag("b"), Message{Type: typ, Value: []byte(val)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, kv := range []string{"c=3", "a=1", "b=2", "a=one"} {
			send("set", kv)
		}
		send("del", "b")
		send("setfail", "z=26") // discarded with the failed invocation
		if got := mapState(t, e, bag("b")); got != "a=one c=3" {
			t.Fatalf("map %q, want a=one c=3", got)
		}
		if got := ask(t, e, bag("b"), "setget", "d=4"); got != "4 false 3" {
			t.Fatalf("own writes: %q", got)
		}
		if got := ask(t, e, bag("b"), "get", "z"); got != "<none>" {
			t.Fatalf("failed write visible: %q", got)
		}
		// Over MaxInstanceBytes: the invocation fails, the map is unchanged.
		send("set", "big="+strings.Repeat("x", 60))
		if got := ask(t, e, bag("b"), "len", ""); got != "3" {
			t.Fatalf("len after an oversized write %s, want 3", got)
		}
		dl, err := e.DeadLetters(ctx, 0, 10)
		if err != nil || len(dl) != 2 || !strings.Contains(dl[1].Error, "MaxInstanceBytes") {
			t.Fatalf("dead letters %+v %v", dl, err)
		}
		if o.DataDir == "" {
			return
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		o.Shards++
		e = openTest(t, o, bagSpec())
		if got := mapState(t, e, bag("b")); got != "a=one c=3 d=4" {
			t.Fatalf("map after restart %q", got)
		}
		send("clear", "")
		send("set", "e=5")
		if got := ask(t, e, bag("b"), "len", ""); got != "1" {
			t.Fatalf("len after clear and set %s", got)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		e = openTest(t, o, bagSpec())
		if got := mapState(t, e, bag("b")); got != "e=5" {
			t.Fatalf("map after clear and restart %q", got)
		}
		err = e.SetState(ctx, bag("b"), []StateMutation{{Name: "m", Delete: true}})
		if !errors.Is(err, ErrUndeclared) || !strings.Contains(err.Error(), "map state") {
			t.Fatalf("repair of a map: %v", err)
		}
	})
}

// A map grown entry by entry costs what each write changes: N joins to one
// instance write O(N) log bytes, not O(N^2) as a value holding the whole
// set would.
func TestMapWritesCostTheEntry(t *testing.T) {
	e := openTest(t, Options{Shards: 1, DataDir: t.TempDir(), SegmentSize: 1 << 20}, bagSpec())
	defer e.Close()
	ctx := context.Background()
	logged := func() uint64 { return e.Status().LogDurable }
	const n = 2000
	start := logged()
	for i := 0; i < n; i++ {
		if _, err := e.Send(ctx, bag("fan"), Message{Type: "set", Value: []byte(fmt.Sprintf("driver-%06d=", i))}); err != nil {
			t.Fatal(err)
		}
	}
	per := (logged() - start) / n
	// One record holds the message, the consume and one entry: a few
	// hundred bytes at most, whatever the map holds (2000 entries of 13
	// bytes would be 26 KB per write if the map were rewritten).
	if per > 512 {
		t.Fatalf("%d log bytes per write to a map of up to %d entries", per, n)
	}
	if got := ask(t, e, bag("fan"), "len", ""); got != fmt.Sprint(n) {
		t.Fatalf("len %s", got)
	}
}
