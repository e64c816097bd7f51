package shard

import (
	"fmt"
	"github.com/shardfn/shardfn/internal/format"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMailboxLaneFIFOAndFull(t *testing.T) {
	m := NewMailbox(5) // rounds up to 8
	if got := m.LaneCap(); got != 8 {
		t.Fatalf("LaneCap = %d, want 8", got)
	}
	p := m.NewProducer()
	if p.Free() != 8 {
		t.Fatalf("Free = %d, want 8", p.Free())
	}
	payload := []byte("x")
	for i := 0; i < 8; i++ {
		e := format.Envelope{ID: uint64(i), Payload: payload}
		if !p.Push(&e) {
			t.Fatalf("push %d failed on a lane with free slots", i)
		}
	}
	e := format.Envelope{ID: 99}
	if p.Push(&e) {
		t.Fatal("push to a full lane succeeded")
	}
	if p.Free() != 0 || m.Len() != 8 {
		t.Fatalf("Free = %d, Len = %d; want 0, 8", p.Free(), m.Len())
	}
	got := m.Drain(nil, 3)
	if len(got) != 3 || got[0].ID != 0 || got[2].ID != 2 {
		t.Fatalf("first drain = %v", ids(got))
	}
	// Drained slots are cleared so payloads can be collected.
	for i := 0; i < 3; i++ {
		if p.r.buf[i].Payload != nil {
			t.Fatalf("slot %d not cleared after drain", i)
		}
	}
	for i := 8; i < 11; i++ {
		e := format.Envelope{ID: uint64(i)}
		if !p.Push(&e) {
			t.Fatalf("push %d failed after drain freed slots", i)
		}
	}
	got = m.Drain(got[:0], 100)
	for i, e := range got {
		if e.ID != uint64(i+3) {
			t.Fatalf("drain order = %v, want 3..10", ids(got))
		}
	}
	if m.Len() != 0 || len(m.Drain(nil, 10)) != 0 {
		t.Fatal("mailbox not empty after draining everything")
	}
}

func TestMailboxSharedLaneFIFOAndFull(t *testing.T) {
	m := NewMailbox(4)
	for i := 0; i < 4; i++ {
		e := format.Envelope{ID: uint64(i), Payload: []byte("p")}
		if !m.Push(&e) {
			t.Fatalf("shared push %d failed", i)
		}
	}
	if e := (format.Envelope{ID: 9}); m.Push(&e) {
		t.Fatal("push to a full shared lane succeeded")
	}
	got := m.Drain(nil, 2)
	if len(got) != 2 || got[0].ID != 0 || got[1].ID != 1 {
		t.Fatalf("drain = %v", ids(got))
	}
	if m.shared.slots[0].e.Payload != nil {
		t.Fatal("shared slot not cleared after drain")
	}
	for i := 4; i < 6; i++ {
		if e := (format.Envelope{ID: uint64(i)}); !m.Push(&e) {
			t.Fatalf("shared push %d failed after drain", i)
		}
	}
	got = m.Drain(got[:0], 10)
	if fmt.Sprint(ids(got)) != "[2 3 4 5]" {
		t.Fatalf("drain = %v, want [2 3 4 5]", ids(got))
	}
}

func TestMailboxDrainIsFairAcrossLanes(t *testing.T) {
	m := NewMailbox(64)
	ps := []*Producer{m.NewProducer(), m.NewProducer(), m.NewProducer()}
	for li, p := range ps {
		for i := 0; i < 20; i++ {
			e := format.Envelope{ID: uint64(li)<<32 | uint64(i)}
			p.Push(&e)
		}
	}
	for i := 0; i < 20; i++ {
		e := format.Envelope{ID: 3<<32 | uint64(i)}
		m.Push(&e)
	}
	// 4 lanes with 20 each; a batch of 12 takes 3 from each.
	got := m.Drain(nil, 12)
	per := map[uint64]int{}
	for _, e := range got {
		per[e.ID>>32]++
	}
	for lane := uint64(0); lane < 4; lane++ {
		if per[lane] != 3 {
			t.Fatalf("batch of 12 took %v per lane, want 3 from each of 4", per)
		}
	}
	// A batch larger than what is left takes everything.
	got = m.Drain(got[:0], 1000)
	if len(got) != 68 {
		t.Fatalf("second drain took %d, want 68", len(got))
	}
	// When some lanes are empty the others fill the batch.
	for i := 0; i < 10; i++ {
		e := format.Envelope{ID: uint64(i)}
		ps[1].Push(&e)
	}
	if got = m.Drain(got[:0], 8); len(got) != 8 {
		t.Fatalf("drain from one busy lane took %d, want 8", len(got))
	}
}

// TestMailboxManyProducers checks no loss, no duplicates and FIFO per
// producer with lane producers (some created while the consumer drains) and
// goroutines sharing the MPSC lane, the consumer parking in Wait.
func TestMailboxManyProducers(t *testing.T) {
	const (
		laneProducers   = 4
		sharedProducers = 4
		perProducer     = 20000
	)
	if testing.Short() {
		t.Skip("short")
	}
	m := NewMailbox(64)
	var wg sync.WaitGroup
	start := func(id int, push func(*format.Envelope) bool) {
		defer wg.Done()
		for i := 0; i < perProducer; i++ {
			e := format.Envelope{ID: uint64(id)<<32 | uint64(i), Payload: []byte{byte(i)}}
			for !push(&e) {
				runtime.Gosched()
			}
		}
	}
	wg.Add(laneProducers + sharedProducers)
	for i := 0; i < laneProducers; i++ {
		go func(id int) {
			if id%2 == 1 {
				time.Sleep(time.Millisecond) // create it while the consumer drains
			}
			start(id, m.NewProducer().Push)
		}(i)
	}
	for i := 0; i < sharedProducers; i++ {
		go start(laneProducers+i, m.Push)
	}
	next := make([]uint64, laneProducers+sharedProducers)
	total := (laneProducers + sharedProducers) * perProducer
	buf := make([]format.Envelope, 0, 37)
	for seen := 0; seen < total; {
		buf = m.Drain(buf[:0], 37)
		if len(buf) == 0 {
			m.Wait(-1)
			continue
		}
		for _, e := range buf {
			p, i := e.ID>>32, e.ID&(1<<32-1)
			if i != next[p] {
				t.Fatalf("producer %d: got message %d, want %d (loss, duplicate or reorder)", p, i, next[p])
			}
			if len(e.Payload) != 1 || e.Payload[0] != byte(i) {
				t.Fatalf("producer %d message %d: payload %v", p, i, e.Payload)
			}
			next[p]++
		}
		seen += len(buf)
	}
	wg.Wait()
	if extra := m.Drain(nil, 10); len(extra) != 0 {
		t.Fatalf("%d envelopes beyond the total", len(extra))
	}
}

// TestMailboxNoLostWakeup plays ping-pong: each producer pushes one
// envelope and waits for the consumer to acknowledge it, so the consumer
// parks in Wait(-1) before nearly every message. A lost wakeup deadlocks,
// which the watchdog reports.
func TestMailboxNoLostWakeup(t *testing.T) {
	rounds := 20000
	if testing.Short() {
		rounds = 2000
	}
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			m := NewMailbox(8)
			ack := make(chan struct{})
			var progress atomic.Int64
			go func() {
				push := m.Push
				if !shared {
					push = m.NewProducer().Push
				}
				for i := 0; i < rounds; i++ {
					e := format.Envelope{ID: uint64(i)}
					if !push(&e) {
						panic("push failed on an empty lane")
					}
					<-ack
				}
			}()
			done := make(chan struct{})
			defer close(done)
			go func() {
				last := int64(-1)
				for {
					select {
					case <-done:
						return
					case <-time.After(20 * time.Second):
						if p := progress.Load(); p == last {
							m.Wake() // unblock so the test can fail instead of hanging
							t.Errorf("no progress for 20s at message %d: lost wakeup", p)
							return
						} else {
							last = p
						}
					}
				}
			}()
			buf := make([]format.Envelope, 0, 4)
			for i := 0; i < rounds; {
				buf = m.Drain(buf[:0], 4)
				if len(buf) == 0 {
					if t.Failed() {
						return
					}
					m.Wait(-1)
					continue
				}
				if len(buf) != 1 || buf[0].ID != uint64(i) {
					t.Fatalf("round %d: drained %v", i, ids(buf))
				}
				i++
				progress.Store(int64(i))
				ack <- struct{}{}
			}
		})
	}
}

func TestMailboxWakeAndTimeout(t *testing.T) {
	m := NewMailbox(4)
	// Wake before Wait makes the next Wait return at once.
	m.Wake()
	m.Wait(-1)
	// Wake from another goroutine releases a consumer blocked without timeout.
	go func() {
		time.Sleep(time.Millisecond)
		m.Wake()
	}()
	m.Wait(-1)
	// A timed wait returns by itself, repeatedly (the timer is reused).
	for i := 0; i < 3; i++ {
		m.Wait(time.Millisecond)
	}
	// A pending envelope makes Wait return without blocking.
	e := format.Envelope{ID: 1}
	m.Push(&e)
	m.Wait(-1)
	m.NewProducer().Push(&e)
	m.Drain(nil, 1) // takes one of two
	m.Wait(-1)
	if m.sleeping.Load() != 0 {
		t.Fatal("sleeping flag left set after Wait returned")
	}
}

func TestMailboxZeroAllocs(t *testing.T) {
	m := NewMailbox(1024)
	p := m.NewProducer()
	payload := make([]byte, 64)
	e := format.Envelope{ID: 1, Target: format.Address{Namespace: "ns", Type: "t", ID: "id"}, Type: "ns/t", Payload: payload}
	dst := make([]format.Envelope, 0, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		for i := 0; i < 16; i++ {
			p.Push(&e)
			m.Push(&e)
		}
		dst = m.Drain(dst[:0], 64)
		if len(dst) != 32 {
			panic("lost envelopes")
		}
	})
	if allocs != 0 {
		t.Fatalf("Push+Drain: %v allocs per run, want 0", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() { m.Wait(time.Microsecond) })
	if allocs != 0 {
		t.Fatalf("timed Wait: %v allocs per run, want 0", allocs)
	}
}

func ids(es []format.Envelope) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// benchHandoff runs b.N envelopes from `producers` goroutines to one
// consumer (the benchmark goroutine) and reports ns per message and msgs/s.
func benchHandoff(b *testing.B, producers int, run func(perProducer []int)) {
	b.ReportAllocs()
	per := make([]int, producers)
	for i := range per {
		per[i] = b.N / producers
	}
	per[0] += b.N % producers
	b.ResetTimer()
	start := time.Now()
	run(per)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(el.Nanoseconds())/float64(b.N), "ns/msg")
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}

var benchPayload = make([]byte, 64)

func benchEnvelope(i int) format.Envelope {
	return format.Envelope{ID: uint64(i), Target: format.Address{Namespace: "bench", Type: "fn", ID: "id"}, Type: "bench/msg", Payload: benchPayload}
}

const benchLaneCap = 1024

func BenchmarkMailbox(b *testing.B) {
	for _, producers := range []int{1, 4, 8} {
		for _, lane := range []string{"spsc", "mpsc"} {
			b.Run(fmt.Sprintf("producers=%d/lane=%s", producers, lane), func(b *testing.B) {
				m := NewMailbox(benchLaneCap)
				pushers := make([]func(*format.Envelope) bool, producers)
				for i := range pushers {
					if lane == "spsc" {
						pushers[i] = m.NewProducer().Push
					} else {
						pushers[i] = m.Push
					}
				}
				benchHandoff(b, producers, func(per []int) {
					for i, n := range per {
						go func(push func(*format.Envelope) bool, n int) {
							e := benchEnvelope(i)
							for j := 0; j < n; j++ {
								for !push(&e) {
									runtime.Gosched()
								}
							}
						}(pushers[i], n)
					}
					buf := make([]format.Envelope, 0, 256)
					for got := 0; got < b.N; {
						buf = m.Drain(buf[:0], 256)
						if len(buf) == 0 {
							m.Wait(-1)
						}
						got += len(buf)
					}
				})
			})
		}
	}
}

func BenchmarkChannel(b *testing.B) {
	for _, producers := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			ch := make(chan format.Envelope, benchLaneCap)
			benchHandoff(b, producers, func(per []int) {
				for i, n := range per {
					go func(n int) {
						e := benchEnvelope(i)
						for j := 0; j < n; j++ {
							ch <- e
						}
					}(n)
				}
				var sink uint64
				for got := 0; got < b.N; got++ {
					e := <-ch
					sink += e.ID
				}
				_ = sink
			})
		})
	}
}
