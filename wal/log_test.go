package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/wal/vfs"
)

// TestConcurrentAppenders: many appenders, small segments (many rollovers),
// a live reader following along; every record is read back exactly once,
// in per-appender order, both live and after a reopen.
func TestConcurrentAppenders(t *testing.T) {
	const writers, perWriter = 16, 300
	for _, fsName := range []string{"mem", "os"} {
		t.Run(fsName, func(t *testing.T) {
			opts := memOptions(vfs.NewMemFS(), 8<<10)
			if fsName == "os" {
				opts = Options{Dir: t.TempDir(), SegmentSize: 64 << 10, Logger: quietLogger}
			}
			var lastDurable atomic.Uint64
			opts.OnDurable = func(d LSN) {
				if uint64(d) < lastDurable.Load() {
					t.Errorf("OnDurable went backwards: %d after %d", d, lastDurable.Load())
				}
				lastDurable.Store(uint64(d))
			}
			l := mustOpen(t, opts)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var b Batch
					for i := 0; i < perWriter; {
						b.Reset()
						n := 1 + (i+w)%3 // 1 to 3 records per batch
						for j := 0; j < n && i < perWriter; j++ {
							var p [8]byte
							binary.LittleEndian.PutUint32(p[0:4], uint32(w))
							binary.LittleEndian.PutUint32(p[4:8], uint32(i))
							b.Add(p[:])
							i++
						}
						end, err := l.Append(&b)
						if err != nil {
							t.Error(err)
							return
						}
						if i%10 == 0 {
							if err := l.WaitDurable(end); err != nil {
								t.Error(err)
								return
							}
							if l.DurableLSN() < end {
								t.Errorf("WaitDurable(%d) returned at durable %d", end, l.DurableLSN())
							}
						}
					}
				}()
			}
			// A live reader follows the appenders.
			live := make(chan []rec, 1)
			go func() {
				r, err := l.NewReader(l.FirstLSN())
				if err != nil {
					t.Error(err)
					live <- nil
					return
				}
				defer r.Close()
				var got []rec
				for len(got) < writers*perWriter {
					lsn, p, err := r.Next()
					if err == io.EOF {
						time.Sleep(100 * time.Microsecond)
						continue
					}
					if err != nil {
						t.Error(err)
						break
					}
					got = append(got, rec{lsn, string(p)})
				}
				live <- got
			}()
			wg.Wait()
			end := l.EndLSN()
			if err := l.WaitDurable(end); err != nil {
				t.Fatal(err)
			}
			checkPerWriterOrder(t, <-live, writers, perWriter)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if LSN(lastDurable.Load()) != end {
				t.Fatalf("last OnDurable %d, want %d", lastDurable.Load(), end)
			}
			opts.OnDurable = nil
			l = mustOpen(t, opts)
			defer l.Close()
			checkPerWriterOrder(t, readAllRecords(t, l), writers, perWriter)
		})
	}
}

func checkPerWriterOrder(t *testing.T, recs []rec, writers, perWriter int) {
	t.Helper()
	if len(recs) != writers*perWriter {
		t.Fatalf("read %d records, want %d", len(recs), writers*perWriter)
	}
	next := make([]uint32, writers)
	var prev LSN
	for i, r := range recs {
		if i > 0 && r.lsn <= prev {
			t.Fatalf("LSN %d after %d", r.lsn, prev)
		}
		prev = r.lsn
		w := binary.LittleEndian.Uint32([]byte(r.data[0:4]))
		seq := binary.LittleEndian.Uint32([]byte(r.data[4:8]))
		if seq != next[w] {
			t.Fatalf("writer %d: record %d, want %d", w, seq, next[w])
		}
		next[w]++
	}
}

// TestAppendAllocs: Batch.Add + Append (and WaitDurable) do not allocate in
// steady state, counting the flusher goroutine's allocations too.
func TestAppendAllocs(t *testing.T) {
	l := mustOpen(t, Options{Dir: t.TempDir(), SegmentSize: 1 << 30, Logger: quietLogger})
	defer l.Close()
	var b Batch
	rec := make([]byte, 100)
	step := func() {
		b.Reset()
		b.Add(rec)
		if _, err := l.Append(&b); err != nil {
			t.Fatal(err)
		}
	}
	for range 20000 { // grow both buffers to working size
		step()
	}
	if err := l.WaitDurable(l.EndLSN()); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(5000, step); n != 0 {
		t.Errorf("Batch.Add+Append: %v allocs per op, want 0", n)
	}
	stepWait := func() {
		b.Reset()
		b.Add(rec)
		end, err := l.Append(&b)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitDurable(end); err != nil {
			t.Fatal(err)
		}
	}
	stepWait()
	if n := testing.AllocsPerRun(200, stepWait); n != 0 {
		t.Errorf("Append+WaitDurable: %v allocs per op, want 0", n)
	}
}

func TestCloseSemantics(t *testing.T) {
	fs := vfs.NewMemFS()
	l := mustOpen(t, memOptions(fs, 4096))
	var b Batch
	b.Add([]byte("kept"))
	end, err := l.Append(&b) // not waited for: Close must flush it
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitDurable(end); err != nil {
		t.Fatalf("WaitDurable of flushed data after Close: %v", err)
	}
	if _, err := l.Append(&b); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.WaitDurable(end + 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitDurable beyond the end after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	l = mustOpen(t, memOptions(fs, 4096))
	defer l.Close()
	equalRecs(t, readAllRecords(t, l), []rec{{0, "kept"}})
}

func TestRecordTooLarge(t *testing.T) {
	l := mustOpen(t, memOptions(vfs.NewMemFS(), 1024))
	defer l.Close()
	var b Batch
	b.Add(make([]byte, 1024))
	if _, err := l.Append(&b); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("Append: %v, want ErrRecordTooLarge", err)
	}
	b.Reset()
	b.Add(make([]byte, 1024-segmentHeaderSize-frameHeaderSize)) // exactly fits
	if _, err := l.Append(&b); err != nil {
		t.Fatal(err)
	}
	// MaxRecordSize is the rule, for segment sizes aligned or not.
	for _, seg := range []int64{1024, 1029, 4099} {
		l := mustOpen(t, memOptions(vfs.NewMemFS(), seg))
		max := int(MaxRecordSize(seg))
		var b Batch
		b.Add(make([]byte, max))
		if _, err := l.Append(&b); err != nil {
			t.Fatalf("segment %d: a record of MaxRecordSize %d: %v", seg, max, err)
		}
		b.Reset()
		b.Add(make([]byte, max+1))
		if _, err := l.Append(&b); !errors.Is(err, ErrRecordTooLarge) {
			t.Fatalf("segment %d: a record of MaxRecordSize+1: %v", seg, err)
		}
		l.Close()
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{},
		{Dir: "x", SegmentSize: 100},
		{Dir: "x", MaxBatchDelay: -1},
		{Dir: "x", BufferSize: -1},
	} {
		o.EnsureDefaults()
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
		if _, err := Open(o); err == nil {
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

// TestRemoveBeforeRecycles: retired segments are recycled (no new files
// once the pool is warm), FirstLSN advances, reopen works.
func TestRemoveBeforeRecycles(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := memOptions(fs, 1024)
	l := mustOpen(t, opts)
	var recs []rec
	for i := range 200 {
		lsn, end := appendOne(t, l, payload(i))
		recs = append(recs, rec{lsn, payload(i)})
		if i%20 == 19 {
			if err := l.RemoveBefore(end); err != nil {
				t.Fatal(err)
			}
		}
	}
	first := l.FirstLSN()
	if first == 0 {
		t.Fatal("FirstLSN did not advance")
	}
	names, _ := fs.List(testDir)
	if len(names) > 4+recycleLimit {
		t.Fatalf("%d files left: %v", len(names), names)
	}
	recycled := 0
	for _, n := range names {
		if _, r, ok := parseName(n); ok && r {
			recycled++
		}
	}
	if recycled == 0 {
		t.Fatalf("no recycled files in %v", names)
	}
	if _, err := l.NewReader(first - 8); err == nil {
		t.Fatal("NewReader before FirstLSN succeeded")
	}
	l.Close()
	l = mustOpen(t, opts)
	defer l.Close()
	var want []rec
	for _, r := range recs {
		if r.lsn >= first {
			want = append(want, r)
		}
	}
	equalRecs(t, readAllRecords(t, l), want)
}

func TestNewReaderBoundaries(t *testing.T) {
	l := mustOpen(t, memOptions(vfs.NewMemFS(), 4096))
	defer l.Close()
	var recs []rec
	for i := range 5 {
		lsn, _ := appendOne(t, l, payload(i))
		recs = append(recs, rec{lsn, payload(i)})
	}
	r, err := l.NewReader(recs[2].lsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range recs[2:] {
		lsn, p, err := r.Next()
		if err != nil || lsn != want.lsn || string(p) != want.data {
			t.Fatalf("Next = %d %q %v, want %v", lsn, p, err, want)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next at end: %v, want io.EOF", err)
	}
	lsn, _ := appendOne(t, l, "later")
	if got, p, err := r.Next(); err != nil || got != lsn || string(p) != "later" {
		t.Fatalf("Next after a new append = %d %q %v", got, p, err)
	}
	r.Close()
	if _, err := l.NewReader(recs[2].lsn + 8); err == nil {
		t.Fatal("NewReader inside a record succeeded")
	}
	if _, err := l.NewReader(l.DurableLSN() + 8); err == nil {
		t.Fatal("NewReader beyond the durable end succeeded")
	}
}

func TestMaxBatchDelay(t *testing.T) {
	opts := memOptions(vfs.NewMemFS(), 1<<16)
	opts.MaxBatchDelay = time.Millisecond
	var rounds atomic.Int64
	opts.OnDurable = func(LSN) { rounds.Add(1) }
	l := mustOpen(t, opts)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				appendOne(t, l, fmt.Sprint(w, i))
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readAllRecords(t, mustOpen(t, opts))); got != 160 {
		t.Fatalf("read %d records, want 160", got)
	}
	if rounds.Load() == 0 {
		t.Fatal("OnDurable never called")
	}
}

// TestBackpressure: with a tiny buffer, appenders block instead of growing
// it, and everything still gets through.
func TestBackpressure(t *testing.T) {
	opts := memOptions(vfs.NewMemFS(), 1<<16)
	opts.BufferSize = 256
	l := mustOpen(t, opts)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b Batch
			for range 200 {
				b.Reset()
				b.Add(make([]byte, 100))
				if _, err := l.Append(&b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readAllRecords(t, mustOpen(t, opts))); got != 800 {
		t.Fatalf("read %d records, want 800", got)
	}
}

// A manual log has no flusher: nothing is durable until Flush, which
// writes and syncs on the caller's goroutine.
func TestManualFlush(t *testing.T) {
	fs := vfs.NewMemFS()
	o := memOptions(fs, 4096)
	o.Manual = true
	l := mustOpen(t, o)
	var b Batch
	for i := 0; i < 50; i++ { // more than a segment: a rollover inside Flush
		b.Reset()
		b.Add([]byte(payload(i)))
		if _, err := l.Append(&b); err != nil {
			t.Fatal(err)
		}
	}
	if l.DurableLSN() != 0 {
		t.Fatalf("durable %d before Flush", l.DurableLSN())
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if l.DurableLSN() != l.EndLSN() {
		t.Fatalf("durable %d after Flush, end %d", l.DurableLSN(), l.EndLSN())
	}
	if got := readAllRecords(t, l); len(got) != 50 {
		t.Fatalf("read %d records", len(got))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	o.Manual = false
	l = mustOpen(t, o)
	if got := readAllRecords(t, l); len(got) != 50 {
		t.Fatalf("after reopen: %d records", len(got))
	}
	l.Close()
}
