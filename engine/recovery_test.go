package engine

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

var blobSpec = ValueSpec{Name: "blob", Type: TypeBytes}

func blobWriterSpec() FunctionSpec {
	return FunctionSpec{Namespace: "rec", Type: "w", States: []ValueSpec{blobSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error { return ctx.Set(blobSpec, msg.Value) })}
}

// TestRecoveryChild writes SHARDFN_RECOVERY_MB of log with no checkpoint,
// then says "done" and waits to be killed.
func TestRecoveryChild(t *testing.T) {
	dir := os.Getenv("SHARDFN_RECOVERY_CHILD")
	if dir == "" {
		t.Skip("child of TestRecoverySpeed")
	}
	mb, _ := strconv.Atoi(os.Getenv("SHARDFN_RECOVERY_MB"))
	e, err := Open(Options{DataDir: dir, CheckpointInterval: time.Hour, Logger: quiet}, blobWriterSpec())
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	val := make([]byte, 1000)
	msgs := make([]Outgoing, 1000)
	ctx := context.Background()
	for n := 0; ; n++ {
		for i := range msgs {
			msgs[i] = Outgoing{To: Address{Namespace: "rec", Type: "w", ID: fmt.Sprint(i + n%100*1000)}, Message: Bytes(val)}
		}
		if err := e.SendBatch(ctx, msgs); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		if e.wal.Durable() >= uint64(mb)<<20 {
			break
		}
	}
	fmt.Println("done", e.wal.Durable())
	select {}
}

// TestRecoverySpeed measures recovery after a SIGKILL with
// SHARDFN_RECOVERY_MB (e.g. 1024) of log since the last checkpoint: time to
// ready and log replay MB/s. Skipped unless the variable is set.
func TestRecoverySpeed(t *testing.T) {
	mbs := os.Getenv("SHARDFN_RECOVERY_MB")
	if mbs == "" {
		t.Skip("set SHARDFN_RECOVERY_MB to measure recovery speed")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecoveryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SHARDFN_RECOVERY_CHILD="+dir)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("child died")
	}
	t.Logf("child: %s after %v", sc.Text(), time.Since(start).Round(time.Millisecond))
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	var walBytes int64
	_ = filepath.Walk(filepath.Join(dir, "wal"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			walBytes += fi.Size()
		}
		return nil
	})
	t0 := time.Now()
	e, err := Open(Options{DataDir: dir, Logger: quiet}, blobWriterSpec())
	if err != nil {
		t.Fatal(err)
	}
	ready := time.Since(t0)
	r := e.Recovery()
	t.Logf("log files %d MiB; replayed %d records, %.1f MiB; time to ready %v (replay; the checkpoint follows once running); %.1f MiB/s",
		walBytes>>20, r.Records, float64(r.Bytes)/(1<<20), ready.Round(time.Millisecond), float64(r.Bytes)/(1<<20)/ready.Seconds())
	if v, _ := e.State(context.Background(), Address{Namespace: "rec", Type: "w", ID: "5"}); len(v) != 1 || len(v[0].Value) != 1000 {
		t.Fatalf("state after recovery: %v", v)
	}
	_ = e.Close()
}
