package wal

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shardfn/shardfn/wal/vfs"
)

// history records what a workload appended and what it was told durable.
type history struct {
	mu      sync.Mutex
	recs    []rec // every successfully appended record
	durable LSN   // highest position reported durable (WaitDurable or OnDurable)
}

func (h *history) add(first LSN, datas []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	lsn := first
	for _, d := range datas {
		h.recs = append(h.recs, rec{lsn, d})
		lsn += LSN(frameSize(len(d)))
	}
}

func (h *history) reportDurable(d LSN) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.durable = max(h.durable, d)
}

// checkRecovered: got must be exactly a prefix of everything appended at
// or after first (in LSN order; earlier segments were retired on purpose)
// that includes every record reported durable.
func (h *history) checkRecovered(t *testing.T, first LSN, got []rec, what string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []rec
	for _, r := range h.recs {
		if r.lsn >= first {
			all = append(all, r)
		}
	}
	slices.SortFunc(all, func(a, b rec) int { return int(int64(a.lsn) - int64(b.lsn)) })
	if len(got) > len(all) {
		t.Fatalf("%s: recovered %d records, only %d appended", what, len(got), len(all))
	}
	for i := range got {
		if got[i] != all[i] {
			t.Fatalf("%s: recovered record %d = %v, want %v", what, i, got[i], all[i])
		}
	}
	for _, r := range all[len(got):] {
		if r.lsn+LSN(frameSize(len(r.data))) <= h.durable {
			t.Fatalf("%s: record %v was reported durable (through %d) but not recovered (%d of %d recovered)",
				what, r, h.durable, len(got), len(all))
		}
	}
}

// runWorkload appends from two goroutines, waits for durability, retires
// segments once, and closes. It checks that every error after a failure
// wraps ErrFailed.
func runWorkload(t *testing.T, fs vfs.FS, h *history, perWriter int) {
	opts := memOptions(fs, 1024)
	opts.OnDurable = h.reportDurable
	l, err := Open(opts)
	if err != nil {
		return // a failed Open is a clean failure
	}
	var wg sync.WaitGroup
	var removed atomic.Bool
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b Batch
			for i := 0; i < perWriter; i++ {
				datas := []string{payload(w*1000 + i)}
				if i%3 == 0 {
					datas = append(datas, payload(w*1000+i+500))
				}
				b.Reset()
				for _, d := range datas {
					b.Add([]byte(d))
				}
				end, err := l.Append(&b)
				if err != nil {
					if !errors.Is(err, ErrFailed) || !errors.Is(err, vfs.ErrInjected) {
						t.Errorf("Append error %v does not wrap ErrFailed and the cause", err)
					}
					return
				}
				h.add(end-LSN(b.Bytes()), datas)
				if err := l.WaitDurable(end); err != nil {
					if !errors.Is(err, ErrFailed) {
						t.Errorf("WaitDurable error %v does not wrap ErrFailed", err)
					}
					return
				}
				if l.DurableLSN() < end {
					t.Errorf("WaitDurable(%d) returned nil at durable %d", end, l.DurableLSN())
				}
				h.reportDurable(end)
				if i == perWriter/2 && removed.CompareAndSwap(false, true) {
					_ = l.RemoveBefore(end) // may fail by injection; the log goes on
				}
			}
		}()
	}
	wg.Wait()
	cerr := l.Close()
	if lerr := l.Err(); lerr != nil {
		if !errors.Is(lerr, ErrFailed) || !errors.Is(lerr, vfs.ErrInjected) {
			t.Errorf("Err() = %v", lerr)
		}
		if cerr == nil {
			t.Error("Close returned nil on a failed log")
		}
		var b Batch
		b.Add([]byte("x"))
		if _, err := l.Append(&b); !errors.Is(err, ErrFailed) && !errors.Is(err, ErrClosed) {
			t.Errorf("Append after failure: %v", err)
		}
	}
}

// TestErrorInjection fails operation i for i = 0, 1, 2, ... until the
// workload runs without reaching i. Every run must fail cleanly: recovery
// after a crash (keeping nothing unsynced, or a random share of it) yields
// exactly a prefix of the appended records including every record reported
// durable.
func TestErrorInjection(t *testing.T) {
	for i := int64(0); ; i++ {
		mem := vfs.NewMemFS()
		efs := vfs.NewErrorFS(mem, i)
		var h history
		runWorkload(t, efs, &h, 25)
		if t.Failed() {
			t.Fatalf("failing operation %d", i)
		}
		for _, rng := range []*rand.Rand{nil, rand.New(rand.NewPCG(uint64(i), 1))} {
			crashed := mem.CrashClone(rng)
			l, err := Open(memOptions(crashed, 1024))
			if err != nil {
				t.Fatalf("failing operation %d: reopen: %v", i, err)
			}
			h.checkRecovered(t, l.FirstLSN(), readAllRecords(t, l), "after injected failure")
			l.Close()
		}
		if !efs.Fired() {
			t.Logf("workload completed without failure at operation %d (%d operations)", i, efs.Ops())
			break
		}
		if i > 5000 {
			t.Fatal("workload never completes")
		}
	}
}

// TestCrashRecovery crashes a MemFS at random moments under concurrent
// appenders; recovery must yield a prefix of the appended records including
// all reported durable, and the recovered log must keep working across a
// second crash.
func TestCrashRecovery(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 2))
		mem := vfs.NewMemFS()
		var h history
		for cycle := range 3 {
			mem = crashDuringAppends(t, mem, &h, rng)
			l, err := Open(memOptions(mem, 2048))
			if err != nil {
				t.Fatalf("seed %d cycle %d: reopen: %v", seed, cycle, err)
			}
			got := readAllRecords(t, l)
			h.checkRecovered(t, l.FirstLSN(), got, "after crash")
			l.Close()
			// The recovered log is the history from now on.
			h.recs, h.durable = got, 0
			if len(got) > 0 {
				last := got[len(got)-1]
				h.durable = last.lsn + LSN(frameSize(len(last.data)))
			}
		}
	}
}

func crashDuringAppends(t *testing.T, mem *vfs.MemFS, h *history, rng *rand.Rand) *vfs.MemFS {
	l := mustOpen(t, memOptions(mem, 2048))
	target := l.EndLSN() + LSN(2000+rng.IntN(20000))
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b Batch
			for i := 0; !stop.Load(); i++ {
				d := payload(w*100000 + i)
				d += string(make([]byte, (i*37+w*11)%300))
				b.Reset()
				b.Add([]byte(d))
				end, err := l.Append(&b)
				if err != nil {
					t.Error(err)
					return
				}
				h.add(end-LSN(b.Bytes()), []string{d})
				if i%4 == w%4 {
					if err := l.WaitDurable(end); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	for l.EndLSN() < target && !t.Failed() {
		if err := l.WaitDurable(l.EndLSN()); err != nil {
			t.Fatal(err)
		}
	}
	h.reportDurable(l.DurableLSN())
	crashed := mem.CrashClone(rng)
	stop.Store(true)
	wg.Wait()
	l.Close()
	return crashed
}
