package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOrderPerSenderAndAddress: messages from one sender to one address are
// processed in the order they were sent, for ingress senders and for
// function senders on other shards.
func TestOrderPerSenderAndAddress(t *testing.T) {
	var violations atomic.Int64
	last := map[string]int{} // "target|sender" -> last sequence; only touched on the target's shard
	var mu sync.Mutex
	recv := FunctionSpec{Namespace: "o", Type: "recv", Function: FunctionFunc(func(ctx Context, msg Message) error {
		f := strings.Fields(string(msg.Value)) // sender seq
		n, _ := strconv.Atoi(f[1])
		k := ctx.Self().ID + "|" + f[0]
		mu.Lock()
		if prev, ok := last[k]; ok && n != prev+1 {
			violations.Add(1)
		}
		last[k] = n
		mu.Unlock()
		return nil
	})}
	// A relay forwards "count" messages to a receiver, numbered, as its own sender.
	relay := FunctionSpec{Namespace: "o", Type: "relay", Function: FunctionFunc(func(ctx Context, msg Message) error {
		f := strings.Fields(string(msg.Value)) // target n
		n, _ := strconv.Atoi(f[1])
		for i := 0; i < n; i++ {
			ctx.Send(Address{Namespace: "o", Type: "recv", ID: f[0]}, Message{Type: "m", Value: []byte(fmt.Sprint(ctx.Self().ID, " ", i))})
		}
		return nil
	})}
	e := openTest(t, Options{Shards: 3, MailboxCapacity: 64}, recv, relay)
	defer e.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				sendRetry(t, e, Address{Namespace: "o", Type: "recv", ID: fmt.Sprint("r", i%3)}, Message{Type: "m", Value: []byte(fmt.Sprintf("ingress%d-%d %d", g, i%3, i/3))})
			}
		}(g)
	}
	for r := 0; r < 6; r++ {
		sendRetry(t, e, Address{Namespace: "o", Type: "relay", ID: fmt.Sprint("relay", r)}, Message{Type: "go", Value: []byte(fmt.Sprint("r", r%3, " 300"))})
	}
	wg.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Drain(dctx); err != nil {
		t.Fatalf("drain: %v (messages stuck between shards?)", err)
	}
	if violations.Load() != 0 {
		t.Fatalf("%d messages out of order", violations.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(last) != 4*3+6 {
		t.Fatalf("%d sender/target pairs seen, want %d", len(last), 4*3+6)
	}
	for k, v := range last {
		if strings.Contains(k, "relay") && v != 299 {
			t.Fatalf("%s: last sequence %d, want 299", k, v)
		}
	}
}

// TestStateIsolation: instances of one type, and types sharing a state
// name, never see each other's state.
func TestStateIsolation(t *testing.T) {
	v := ValueSpec{Name: "v", Type: TypeString}
	mk := func(typ string) FunctionSpec {
		return FunctionSpec{Namespace: "iso", Type: typ, States: []ValueSpec{v}, Function: FunctionFunc(func(ctx Context, msg Message) error {
			old, _, err := ctx.GetString(v)
			if err != nil {
				return err
			}
			if msg.Type == "get" {
				ctx.Reply(String(old))
				return nil
			}
			return ctx.SetString(v, ctx.Self().FunctionType()+"/"+ctx.Self().ID)
		})}
	}
	modes(t, func(t *testing.T, o Options) {
		o.MemoryBudget = 256 << 10 // force eviction too
		e := openTest(t, o, mk("a"), mk("b"))
		defer e.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for i := 0; i < 300; i++ {
			for _, typ := range []string{"a", "b"} {
				if _, err := e.Send(ctx, Address{Namespace: "iso", Type: typ, ID: fmt.Sprint(i)}, Message{Type: "set"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i := 0; i < 300; i += 17 {
			for _, typ := range []string{"a", "b"} {
				r, err := e.Request(ctx, Address{Namespace: "iso", Type: typ, ID: fmt.Sprint(i)}, Message{Type: "get"})
				if err != nil {
					t.Fatal(err)
				}
				got, _ := r.AsString()
				if want := fmt.Sprintf("iso/%s/%d", typ, i); got != want {
					t.Fatalf("instance iso/%s/%d sees %q", typ, i, got)
				}
			}
		}
	})
}

// TestExpiry: a value with ExpireAfterWrite disappears after its expiry;
// one with ExpireAfterInvoke lives while it is used and disappears once
// left alone.
func TestExpiry(t *testing.T) {
	w := ValueSpec{Name: "w", Type: TypeString, Mode: ExpireAfterWrite, Expiry: 150 * time.Millisecond}
	c := ValueSpec{Name: "c", Type: TypeString, Mode: ExpireAfterInvoke, Expiry: 150 * time.Millisecond}
	spec := FunctionSpec{Namespace: "exp", Type: "f", States: []ValueSpec{w, c}, Function: FunctionFunc(func(ctx Context, msg Message) error {
		switch msg.Type {
		case "set":
			if err := ctx.SetString(w, "w"); err != nil {
				return err
			}
			return ctx.SetString(c, "c")
		case "get":
			_, hw := ctx.Get(w)
			_, hc := ctx.Get(c)
			ctx.Reply(String(fmt.Sprint(hw, hc)))
		}
		return nil
	})}
	modes(t, func(t *testing.T, o Options) {
		// A clock of the test's own: the machine's load does not move it.
		var now atomic.Int64
		now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
		o.Clock = func() time.Time { return time.Unix(0, now.Load()) }
		e := openTest(t, o, spec)
		defer e.Close()
		ctx := context.Background()
		a := Address{Namespace: "exp", Type: "f", ID: "1"}
		get := func() string {
			r, err := e.Request(ctx, a, Message{Type: "get"})
			if err != nil {
				t.Fatal(err)
			}
			s, _ := r.AsString()
			return s
		}
		if _, err := e.Send(ctx, a, Message{Type: "set"}); err != nil {
			t.Fatal(err)
		}
		if s := get(); s != "true true" {
			t.Fatalf("fresh: %s", s)
		}
		// Keep invoking: the after-invoke value stays, the after-write one expires.
		for i := 0; i < 10; i++ {
			now.Add(int64(40 * time.Millisecond))
			get()
		}
		if s := get(); s != "false true" {
			t.Fatalf("after 400 ms of use: %s, want after-write expired, after-invoke alive", s)
		}
		now.Add(int64(300 * time.Millisecond))
		if s := get(); s != "false false" {
			t.Fatalf("after 300 ms idle: %s, want both expired", s)
		}
	})
}
