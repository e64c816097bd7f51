package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/format"
)

// sendRetry pushes without waiting, retrying while the mailbox is full.
func sendRetry(tb testing.TB, e *Engine, to Address, m Message) {
	for {
		err := e.SendAsync(to, m)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrOverloaded) {
			tb.Fatal(err)
		}
		runtime.Gosched()
	}
}

func waitCount(c *atomic.Int64, n int64) {
	for c.Load() < n {
		runtime.Gosched()
	}
}

var benchValue = ValueSpec{Name: "v", Type: TypeLong}

// BenchmarkInvoke: one embedded invocation that reads and writes a small
// value, in steady state (in-memory engine, one shard, messages pushed
// without acknowledgement). The target is 0 allocs/op.
func BenchmarkInvoke(b *testing.B) {
	var done atomic.Int64
	spec := FunctionSpec{Namespace: "b", Type: "inv", States: []ValueSpec{benchValue},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, _ := ctx.GetInt64(benchValue)
			err := ctx.SetInt64(benchValue, n+1)
			done.Add(1)
			return err
		})}
	e, err := Open(Options{Shards: 1, Logger: quiet}, spec)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	addrs := make([]Address, 64)
	for i := range addrs {
		addrs[i] = Address{Namespace: "b", Type: "inv", ID: fmt.Sprint(i)}
	}
	msg := Message{Type: "x", Value: []byte("payload-64-bytes-payload-64-bytes-payload-64-bytes-payload-64-by")}
	// Warm up: every instance cached, buffers grown.
	for i := 0; i < 20000; i++ {
		sendRetry(b, e, addrs[i%len(addrs)], msg)
	}
	waitCount(&done, 20000)
	done.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		sendRetry(b, e, addrs[i%len(addrs)], msg)
	}
	waitCount(&done, int64(b.N))
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPingPong: a message bounces between two instances on different
// shards; one op is one hop (one invocation and one cross-shard handoff).
func BenchmarkPingPong(b *testing.B) {
	var hops atomic.Int64
	var limit atomic.Int64
	var peerOf [2]Address
	spec := FunctionSpec{Namespace: "b", Type: "pp", States: []ValueSpec{benchValue},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			n, _, _ := ctx.GetInt64(benchValue)
			if err := ctx.SetInt64(benchValue, n+1); err != nil {
				return err
			}
			if hops.Add(1) < limit.Load() {
				to := peerOf[0]
				if ctx.Self().ID == peerOf[0].ID {
					to = peerOf[1]
				}
				ctx.Send(to, msg)
			}
			return nil
		})}
	e, err := Open(Options{Shards: 2, Logger: quiet}, spec)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	// Two ids on different shards.
	peerOf[0] = Address{Namespace: "b", Type: "pp", ID: "a"}
	for i := 0; ; i++ {
		c := Address{Namespace: "b", Type: "pp", ID: fmt.Sprint("b", i)}
		if format.ShardOf(format.KeyGroup(c.Hash()), 2) != format.ShardOf(format.KeyGroup(peerOf[0].Hash()), 2) {
			peerOf[1] = c
			break
		}
	}
	msg := Message{Type: "ball", Value: []byte("ball")}
	const pairs = 8 // balls in flight at once
	run := func(n int64) {
		hops.Store(0)
		limit.Store(n)
		for i := 0; i < pairs; i++ {
			sendRetry(b, e, peerOf[i%2], msg)
		}
		waitCount(&hops, n)
		if err := e.Drain(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	run(20000)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	run(int64(b.N))
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkDurableInvoke: Send, invoke, effect durable, acknowledgement, from
// 64 concurrent senders over many instances, with the real log and store.
func BenchmarkDurableInvoke(b *testing.B) {
	for _, shards := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			e := openTest(&testing.T{}, Options{Shards: shards, DataDir: b.TempDir()})
			defer e.Close()
			var ctr atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					id := ctr.Add(1)
					if _, err := e.Send(ctx, addr(fmt.Sprint(id%10000)), Message{Type: "inc"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "invocations/s")
		})
	}
}

// BenchmarkDurableBatch: batches of 1000 messages through SendBatch, each
// acknowledged once all are durable.
func BenchmarkDurableBatch(b *testing.B) {
	for _, shards := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			e := openTest(&testing.T{}, Options{Shards: shards, DataDir: b.TempDir()})
			defer e.Close()
			msgs := make([]Outgoing, 1000)
			for i := range msgs {
				msgs[i] = Outgoing{To: addr(fmt.Sprint(i)), Message: Message{Type: "inc"}}
			}
			b.SetParallelism(2)
			b.ResetTimer()
			start := time.Now()
			var sent atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := e.SendBatch(context.Background(), msgs); err != nil {
						b.Error(err)
						return
					}
					sent.Add(int64(len(msgs)))
				}
			})
			b.ReportMetric(float64(sent.Load())/time.Since(start).Seconds(), "invocations/s")
		})
	}
}
