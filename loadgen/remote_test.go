package loadgen

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
)

func TestParseRemoteSpec(t *testing.T) {
	o, err := ParseRemoteSpec("grid=30,finish-delay=1500ms,shards=1,concurrency=32,js=/x,node=/usr/bin/node")
	if err != nil {
		t.Fatal(err)
	}
	if o.Inproc.Rides.Grid != 30 || o.Inproc.Rides.FinishDelay != 1500*time.Millisecond || o.Inproc.Engine.Shards != 1 ||
		o.MaxConcurrency != 32 || o.JSDir != "/x" || o.Node != "/usr/bin/node" {
		t.Fatalf("parsed %+v", o)
	}
	if o, err := ParseRemoteSpec(""); err != nil || o.Inproc.Rides.Grid != 0 {
		t.Fatalf("empty spec: %+v %v", o, err)
	}
	for _, bad := range []string{"grid", "grid=", "grid=x", "finish-delay=2", "colour=red", "grid=3,,"} {
		if _, err := ParseRemoteSpec(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestRemoteRunHoldsInvariants is TestInprocRunHoldsInvariants with the
// RS-1 functions served by remote/js/rides.js over the StateFun protocol.
func TestRemoteRunHoldsInvariants(t *testing.T) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping the remote (JavaScript SDK) target: %s is not installed (%v)", tool, err)
		}
	}
	tg, err := NewRemote(RemoteOptions{Inproc: InprocOptions{
		Engine: engine.Options{Shards: 2, DataDir: t.TempDir()},
		Rides:  rides.Config{FinishDelay: 50 * time.Millisecond, Grid: 5},
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), tg, Config{
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Concurrency: 8, Drivers: 40, Passengers: 200, Grid: 5, RequestShare: 0.3,
		FinishDelay: 50 * time.Millisecond, DrainTimeout: 20 * time.Second, Seed: 42,
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
				t.Errorf("%s: %v", r.Name, r.Examples)
			}
		}
		t.Fatalf("invariants %s", res.InvariantsText)
	}
	if res.Location.Count == 0 || res.Request.Count == 0 || res.Started == 0 || !res.Drained {
		t.Fatalf("nothing measured: %+v", res)
	}
	if res.Invocations == 0 || res.RSSBytes == 0 {
		t.Fatalf("invocations %d, RSS %d: the remote target must report both", res.Invocations, res.RSSBytes)
	}
	if res.Errors != 0 {
		t.Fatalf("%d errors: %v", res.Errors, res.ErrorSamples)
	}
}
