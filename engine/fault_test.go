package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/shardfn/shardfn/wal/vfs"
)

// TestInjectedLogFaults fails the i-th filesystem operation of the log for
// i = 0, 1, 2, ...: the engine must refuse to start or stop acknowledging
// (failed-stop, ErrFailed), and after a restart on a healthy filesystem
// every acknowledged increment is there and none is applied twice.
func TestInjectedLogFaults(t *testing.T) {
	ops := int64(-1)
	// Every operation up to 60 (open, recovery, the first appends and
	// syncs), then every 7th; FAULT_ALL=1 tries every one.
	step := func(i int64) int64 {
		if i < 60 || os.Getenv("FAULT_ALL") != "" {
			return i + 1
		}
		return i + 7
	}
	for i := int64(0); ops < 0 || i <= ops+2; i = step(i) {
		dir := t.TempDir()
		efs := vfs.NewErrorFS(vfs.Default, i)
		o := Options{Shards: 2, DataDir: dir, SegmentSize: 64 << 10, Logger: quiet, fs: fileSystems{Log: efs}}
		acked, sent := 0, 0
		e, err := Open(o, counterSpec())
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for n := 0; n < 40; n++ {
				sent++
				_, err := e.Send(ctx, addr("x"), Message{Type: "inc", Value: make([]byte, 3000)})
				if err != nil {
					if !errors.Is(err, ErrFailed) {
						t.Fatalf("fault at op %d: send failed with %v, want ErrFailed", i, err)
					}
					if e.Err() == nil || e.Ready() {
						t.Fatalf("fault at op %d: send failed but the engine is not in failed-stop", i)
					}
					if _, err := e.Send(ctx, addr("x"), Message{Type: "inc"}); err == nil {
						t.Fatalf("fault at op %d: a send was acknowledged after failed-stop", i)
					}
					sent++
					break
				}
				acked++
			}
			cancel()
			_ = e.Close()
		}
		if !efs.Fired() {
			ops = efs.Ops()
		}
		o.fs = fileSystems{}
		e2, err := Open(o, counterSpec())
		if err != nil {
			t.Fatalf("fault at op %d: restart on a healthy filesystem: %v", i, err)
		}
		v := count(t, e2, "x")
		if v < int64(acked) || v > int64(sent) {
			t.Fatalf("fault at op %d: value %d after restart; %d acknowledged, %d sent", i, v, acked, sent)
		}
		_ = e2.Close()
	}
	if ops < 10 {
		t.Fatalf("only %d filesystem operations: the workload does not exercise the log", ops)
	}
	t.Logf("%d log filesystem operations in the workload", ops)
	_ = fmt.Sprint
}
