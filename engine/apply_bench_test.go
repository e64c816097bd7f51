package engine

import (
	"fmt"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/store"
)

// sliceReader replays encoded records (a logReader without a log).
type sliceReader struct {
	recs [][]byte
	i    int
	pos  uint64
}

func (r *sliceReader) Next() (uint64, uint64, []byte, error) {
	if r.i == len(r.recs) {
		return 0, 0, nil, io.EOF
	}
	rec := r.recs[r.i]
	r.i++
	start := r.pos
	r.pos += uint64(len(rec)) + 24
	return start, r.pos, rec, nil
}

func (r *sliceReader) Close() error { return nil }

// rs1Records encodes n records shaped like RS-1's: half are drivers' (one
// ingress message consumed, three small values set, one message to a
// geocell sent), half are geocells' (the driver's message consumed, one
// map entry set).
func rs1Records(n, drivers int) [][]byte {
	var rb format.RecordBuilder
	recs := make([][]byte, 0, n)
	id := uint64(1 << 20)
	for i := 0; len(recs) < n; i++ {
		d := i % drivers
		driver := format.Address{Namespace: "rides", Type: "driver", ID: fmt.Sprintf("d-%d", d)}
		cell := format.Address{Namespace: "rides", Type: "geocell", ID: fmt.Sprintf("%d-%d", d%100, (d/100)%100)}
		now := int64(i)
		rb.Begin(nil, driver)
		rb.Consumed(uint64(i))
		rb.BeginStates()
		rb.State("cell", format.OpSet, now, []byte(cell.ID))
		rb.State("joined", format.OpSet, now, []byte(cell.ID))
		rb.State("status", format.OpSet, now, []byte("free"))
		rb.BeginMessages()
		id++
		rb.Message(&format.Envelope{ID: id, Target: cell, Type: "rides/join", Payload: []byte(driver.ID)}, 0, "")
		recs = append(recs, append([]byte(nil), rb.End()...))
		rb.Begin(nil, cell)
		rb.Consumed(id)
		rb.BeginStates()
		rb.MapState("free", format.OpMapSet, now, []byte(driver.ID), nil)
		recs = append(recs, append([]byte(nil), rb.End()...))
	}
	return recs[:n]
}

// BenchmarkApply: the applier alone, RS-1-shaped records into Pebble (no
// log I/O: the records come from memory), committed as the applier does.
func BenchmarkApply(b *testing.B) {
	for _, parts := range []int{1, min(runtime.GOMAXPROCS(0), 8)} {
		for _, sorted := range []bool{false, true} {
			b.Run(fmt.Sprintf("parts=%d/sorted=%v", parts, sorted), func(b *testing.B) { benchApply(b, parts, sorted) })
		}
	}
}

func benchApply(b *testing.B, parts int, sorted bool) {
	{
		n := b.N
		recs := rs1Records(n, 100_000)
		st, err := store.OpenPebble(b.TempDir(), store.PebbleOptions{Logger: quiet, UnsortedBatches: !sorted})
		if err != nil {
			b.Fatal(err)
		}
		e := &Engine{opts: Options{Logger: quiet}}
		a := newApplier(st, quiet, newMetrics(e), func() int64 { return time.Now().UnixNano() }, parts)
		a.rd = &sliceReader{recs: recs}
		a.startCommitters()
		defer a.stopCommitters()
		var bytes int
		for _, r := range recs {
			bytes += len(r)
		}
		b.ReportAllocs()
		b.ResetTimer()
		start, cpu0 := time.Now(), processCPU()
		if _, err := a.catchUp(); err != nil {
			b.Fatal(err)
		}
		d, cpu := time.Since(start), processCPU()-cpu0
		b.ReportMetric(float64(n)/d.Seconds(), "records/s")
		// CPU per record (this process, all goroutines): the figure a loaded
		// machine disturbs least.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/record")
		b.ReportMetric(float64(bytes)/d.Seconds()/1e6, "MB/s")
		b.StopTimer()
		st.Close()
	}
}

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
