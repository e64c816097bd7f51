package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
)

// TestInprocRunHoldsInvariants is a short end-to-end run against the real
// engine (durable, in a temporary directory): every invariant must hold.
func TestInprocRunHoldsInvariants(t *testing.T) {
	for _, shards := range []int{1, 2} {
		tg, err := NewInproc(InprocOptions{
			Engine: engine.Options{Shards: shards, DataDir: t.TempDir()},
			Rides:  rides.Config{FinishDelay: 50 * time.Millisecond, Grid: 5},
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(context.Background(), tg, Config{
			Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
			Concurrency: 8, Drivers: 40, Passengers: 200, Grid: 5, RequestShare: 0.3,
			FinishDelay: 50 * time.Millisecond, DrainTimeout: 10 * time.Second, Seed: 42,
		})
		if cerr := tg.Close(); cerr != nil {
			t.Errorf("close: %v", cerr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.InvariantsText != "ok" {
			for _, r := range res.Invariants {
				if !r.OK {
					t.Errorf("%d shards: %s: %v", shards, r.Name, r.Examples)
				}
			}
			t.Fatalf("%d shards: invariants %s", shards, res.InvariantsText)
		}
		if res.Location.Count == 0 || res.Request.Count == 0 || res.Started == 0 || !res.Drained {
			t.Fatalf("%d shards: nothing measured: %+v", shards, res)
		}
		if res.Errors != 0 {
			t.Fatalf("%d shards: %d errors: %v", shards, res.Errors, res.ErrorSamples)
		}
		if res.Invocations == 0 {
			t.Logf("%d shards: engine reports no invocation counter: %v", shards, res.Notes)
		}
	}
}

// TestBaselineTarget drives the bare HTTP server: location events only, no
// checks.
func TestBaselineTarget(t *testing.T) {
	b, err := NewBaseline(16)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res, err := Run(context.Background(), b, Config{Duration: 200 * time.Millisecond, Warmup: -1, Concurrency: 4, Drivers: 10, Passengers: 10, Grid: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Location.Count == 0 || res.Request.Count != 0 || res.InvariantsText != "skipped" || res.Errors != 0 {
		t.Fatalf("baseline result %+v", res)
	}
}

func TestNewTargetRegistry(t *testing.T) {
	called := ""
	RegisterTarget("fake-peer", func(url string) (Target, error) {
		called = url
		return NewBaseline(1)
	})
	tg, err := NewTarget("fake-peer:http://x:1", TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tg.Close()
	if called != "http://x:1" {
		t.Fatalf("factory got %q", called)
	}
	if _, err := NewTarget("nonesuch", TargetOptions{}); err == nil {
		t.Fatal("unknown target accepted")
	}
}
