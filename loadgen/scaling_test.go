package loadgen

import (
	"context"
	"testing"
	"time"
)

// TestRunScaling runs a tiny sweep: each point names its real shard count,
// counts acknowledged durable events, and sees at least one invocation per
// acknowledged event (a location invokes its driver).
func TestRunScaling(t *testing.T) {
	pts, err := RunScaling(context.Background(), ScalingConfig{
		Shards: []int{1, 2}, Producers: 2, Batch: 16, Duration: 300 * time.Millisecond,
		Warmup: 100 * time.Millisecond, Drivers: 100, Grid: 4, Seed: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 {
		t.Fatalf("points %+v, want 2", pts)
	}
	for i, p := range pts {
		if p.Shards != i+1 {
			t.Errorf("point %d: shards %d, want %d", i, p.Shards, i+1)
		}
		if p.EventsPerS <= 0 || p.InvocationsPerS < p.EventsPerS || p.Errors != 0 {
			t.Errorf("point %d: %+v: want acknowledged events, at least as many invocations, no errors", i, p)
		}
	}
}

func TestRunScalingNeedsShards(t *testing.T) {
	if _, err := RunScaling(context.Background(), ScalingConfig{}); err == nil {
		t.Fatal("a sweep with no shard counts ran")
	}
}
