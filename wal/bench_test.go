package wal

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/sys/unix"
)

const benchPayload = 100

var benchWriters = []int{1, 8, 64, 256}

// runWriters runs op from the given number of goroutines until b.N
// operations of `per` records each are done, timing each operation, and
// reports durable records/s and the operation latency percentiles.
func runWriters(b *testing.B, writers, per int, op func(w, i int)) {
	var next atomic.Int64
	lats := make([][]time.Duration, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, b.N/writers+1)
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					break
				}
				t0 := time.Now()
				op(w, i)
				local = append(local, time.Since(t0))
			}
			lats[w] = local
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lats...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(float64(b.N*per)/elapsed.Seconds(), "records/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkGroupCommit measures Append+WaitDurable of a 100-byte record
// from 1 to 256 writers, next to two baselines in the same run: Pebble with
// pebble.Sync, and raw write+fdatasync on a preallocated file (one record
// per sync, and batch=N records per sync, the ceiling for group commit).
func BenchmarkGroupCommit(b *testing.B) {
	// The three kinds run side by side per writer count, so that drift in
	// the disk's sync latency over the run affects them alike.
	for _, w := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			var syncs atomic.Int64
			l, err := Open(Options{Dir: b.TempDir(), Logger: quietLogger,
				OnDurable: func(LSN) { syncs.Add(1) }})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			batches := make([]Batch, w)
			rec := make([]byte, benchPayload)
			b.ReportAllocs()
			syncs.Store(0)
			runWriters(b, w, 1, func(w, i int) {
				bt := &batches[w]
				bt.Reset()
				bt.Add(rec)
				end, err := l.Append(bt)
				if err == nil {
					err = l.WaitDurable(end)
				}
				if err != nil {
					b.Error(err)
				}
			})
			b.ReportMetric(float64(b.N)/float64(max(1, syncs.Load())), "records/sync")
		})
		b.Run(fmt.Sprintf("baseline=raw-fdatasync/batch=%d", w), func(b *testing.B) {
			benchRawFdatasync(b, w)
		})
		b.Run(fmt.Sprintf("baseline=pebble-sync/writers=%d", w), func(b *testing.B) {
			db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: quietPebbleLogger{}})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			val := make([]byte, benchPayload)
			runWriters(b, w, 1, func(w, i int) {
				var key [8]byte
				binary.BigEndian.PutUint64(key[:], uint64(i))
				if err := db.Set(key[:], val, pebble.Sync); err != nil {
					b.Error(err)
				}
			})
		})
	}
}

// benchRawFdatasync writes n framed-size records with one pwrite and then
// fdatasyncs, on a file preallocated with fallocate like a WAL segment. One
// benchmark op is one write+sync of n records.
func benchRawFdatasync(b *testing.B, n int) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	const size = DefaultSegmentSize
	if err := unix.Fallocate(fd, 0, 0, size); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, n*frameSize(benchPayload))
	var off int64
	runWriters(b, 1, n, func(_, _ int) {
		if off+int64(len(buf)) > size {
			off = 0
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += int64(len(buf))
		if err := unix.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	})
}

type quietPebbleLogger struct{}

func (quietPebbleLogger) Infof(string, ...any)  {}
func (quietPebbleLogger) Errorf(string, ...any) {}
func (quietPebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// BenchmarkReplay measures how fast a Reader replays a ~256 MB log of
// 100-byte records (from the page cache: this is the CPU cost of reading,
// checksumming and framing, not the disk's read speed).
func BenchmarkReplay(b *testing.B) {
	const total = 256 << 20
	dir := b.TempDir()
	l, err := Open(Options{Dir: dir, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	var bt Batch
	rec := make([]byte, benchPayload)
	for l.EndLSN() < total {
		bt.Reset()
		for range 1000 {
			bt.Add(rec)
		}
		if _, err := l.Append(&bt); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	l, err = Open(Options{Dir: dir, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	size := int64(l.DurableLSN() - l.FirstLSN())
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for range b.N {
		r, err := l.NewReader(l.FirstLSN())
		if err != nil {
			b.Fatal(err)
		}
		n = 0
		for {
			_, _, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		r.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
