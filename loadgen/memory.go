package loadgen

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
)

// MemoryConfig is the memory scenario: Passengers instances each receive
// one rides/touch (writing one small state value) and go idle; the engine's
// RSS is measured with a small memory budget (eviction) and with one large
// enough to hold every instance.
type MemoryConfig struct {
	// Passengers is the number of instances. Default 10,000,000.
	Passengers int
	// Shards is the engine's shard count; 0 means its default.
	Shards int
	// EvictBudget is the engine MemoryBudget of the eviction run. Default
	// 32 MiB.
	EvictBudget int64
	// HoldBudget is the budget of the run without eviction. Default 512
	// bytes per passenger, at least 256 MiB.
	HoldBudget int64
	// Batch is the number of messages per SendBatch. Default 1000.
	Batch int
	// Workers is the number of concurrent batches. Default 8.
	Workers int
	// Progress receives progress lines; nil means none.
	Progress io.Writer
}

// MemoryResult is one run of the memory scenario.
type MemoryResult struct {
	Label      string        `json:"label"`
	Passengers int           `json:"passengers"`
	Budget     int64         `json:"budget_bytes"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	PerS       float64       `json:"per_s"`
	// RSSBefore is this process's RSS with the engine open and idle;
	// RSSAfter after every touch is durable (both after a forced GC).
	RSSBefore int64 `json:"rss_before"`
	RSSAfter  int64 `json:"rss_after"`
	// HeapInuse is the Go heap in use after the touches.
	HeapInuse int64 `json:"heap_inuse"`
	// BytesPerInstance is (RSSAfter-RSSBefore)/Passengers.
	BytesPerInstance float64 `json:"bytes_per_instance"`
	// DiskBytes is the size of the data directory after the touches.
	DiskBytes int64 `json:"disk_bytes"`
	// Options are the engine's effective options.
	Options string `json:"options"`
}

// RunMemory runs the memory scenario twice (eviction, then without) and
// returns both results.
func RunMemory(ctx context.Context, c MemoryConfig) ([]MemoryResult, error) {
	if c.Passengers == 0 {
		c.Passengers = 10_000_000
	}
	if c.Passengers < 1 {
		return nil, fmt.Errorf("loadgen: memory scenario with %d passengers", c.Passengers)
	}
	if c.EvictBudget == 0 {
		c.EvictBudget = 32 << 20
	}
	if c.HoldBudget == 0 {
		c.HoldBudget = max(int64(c.Passengers)*512, 256<<20)
	}
	if c.Batch <= 0 {
		c.Batch = 1000
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	var out []MemoryResult
	for _, run := range []struct {
		label  string
		budget int64
	}{{"eviction", c.EvictBudget}, {"no eviction", c.HoldBudget}} {
		r, err := memoryRun(ctx, c, run.label, run.budget)
		if err != nil {
			return out, fmt.Errorf("loadgen: memory scenario (%s): %w", run.label, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func settledRSS() (int64, int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := SelfRSS()
	return rss, int64(ms.HeapInuse)
}

func memoryRun(ctx context.Context, c MemoryConfig, label string, budget int64) (MemoryResult, error) {
	res := MemoryResult{Label: label, Passengers: c.Passengers, Budget: budget}
	t, err := NewInproc(InprocOptions{Engine: engine.Options{Shards: c.Shards, MemoryBudget: budget}})
	if err != nil {
		return res, err
	}
	defer t.Close()
	o := t.Engine().Options()
	o.Logger = nil
	res.Options = fmt.Sprintf("%+v", o)
	res.RSSBefore, _ = settledRSS()
	start := time.Now()
	var next atomic.Int64
	var done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	stopProg := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopProg:
				return
			case <-tick.C:
				if c.Progress != nil {
					rss, _ := SelfRSS()
					fmt.Fprintf(c.Progress, "memory %s: %d/%d touched, RSS %d MiB\n", label, done.Load(), c.Passengers, rss>>20)
				}
			}
		}
	}()
	for w := 0; w < c.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]engine.Outgoing, 0, c.Batch)
			body := rides.TouchMessage("0-0")
			for {
				lo := int(next.Add(int64(c.Batch))) - c.Batch
				if lo >= c.Passengers || ctx.Err() != nil {
					return
				}
				hi := min(lo+c.Batch, c.Passengers)
				batch = batch[:0]
				for i := lo; i < hi; i++ {
					batch = append(batch, engine.Outgoing{To: rides.PassengerAddr("p-" + strconv.Itoa(i)), Message: body})
				}
				var err error
				for try := 0; try < 50; try++ {
					if err = t.Engine().SendBatch(ctx, batch); err == nil {
						break
					}
					// A partly accepted batch is resent whole: a touch is
					// idempotent (it writes the same value again).
					time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				done.Add(int64(hi - lo))
			}
		}()
	}
	wg.Wait()
	close(stopProg)
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	res.PerS = float64(c.Passengers) / res.Elapsed.Seconds()
	res.RSSAfter, res.HeapInuse = settledRSS()
	res.BytesPerInstance = float64(res.RSSAfter-res.RSSBefore) / float64(c.Passengers)
	res.DiskBytes = dirSize(t.DataDir())
	return res, nil
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	if dir == "" {
		return 0
	}
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
