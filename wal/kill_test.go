package wal

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKillChild appends numbered records from several goroutines and
// prints each number once WaitDurable returned for it.
func TestKillChild(t *testing.T) {
	dir := os.Getenv("WAL_KILL_CHILD")
	if dir == "" {
		t.Skip("child of TestKillProcess")
	}
	start, _ := strconv.ParseUint(os.Getenv("WAL_KILL_START"), 10, 64)
	l, err := Open(Options{Dir: dir, SegmentSize: 64 << 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	// Drop what the parent already verified, as a checkpoint would.
	if s := os.Getenv("WAL_KILL_REMOVE"); s != "" {
		n, _ := strconv.ParseUint(s, 10, 64)
		if err := l.RemoveBefore(LSN(n)); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "ready %d\n", l.DurableLSN())
	out.Flush()
	var seq = start
	var wg sync.WaitGroup
	go func() {
		// Checkpoints: drop what is durable, as the engine does.
		for {
			time.Sleep(3 * time.Millisecond)
			x := l.DurableLSN()
			mu.Lock()
			fmt.Fprintf(out, "rm %d\n", x)
			out.Flush()
			mu.Unlock()
			if err := l.RemoveBefore(x); err != nil {
				mu.Lock()
				fmt.Fprintf(out, "error %v\n", err)
				out.Flush()
				mu.Unlock()
				return
			}
		}
	}()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b Batch
			rec := make([]byte, 8+rand.Intn(200))
			for {
				mu.Lock()
				seq++
				n := seq
				mu.Unlock()
				binary.LittleEndian.PutUint64(rec, n)
				b.Reset()
				b.Add(rec)
				end, err := l.Append(&b)
				if err != nil {
					return
				}
				if err := l.WaitDurable(end); err != nil {
					return
				}
				mu.Lock()
				fmt.Fprintf(out, "d %d %d\n", n, uint64(end)-uint64(b.Bytes()))
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestKillProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	durable := map[uint64]uint64{}
	var rmMax uint64
	var next uint64
	var removeAt LSN
	for round := 0; round < 15; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "WAL_KILL_CHILD="+dir, fmt.Sprint("WAL_KILL_START=", next), fmt.Sprint("WAL_KILL_REMOVE=", removeAt))
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		lines := make(chan string, 1<<16)
		go func() {
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		time.Sleep(time.Duration(10+rng.Intn(200)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		for l := range lines {
			f := strings.Fields(l)
			if f[0] == "d" {
				n, _ := strconv.ParseUint(f[1], 10, 64)
				st, _ := strconv.ParseUint(f[2], 10, 64)
				durable[n] = st
			} else if f[0] == "rm" {
				x, _ := strconv.ParseUint(f[1], 10, 64)
				if x > rmMax {
					rmMax = x
				}
			} else if f[0] == "error" {
				t.Fatal(l)
			}
		}
		// Verify.
		l, err := Open(Options{Dir: dir, SegmentSize: 64 << 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.NewReader(l.FirstLSN())
		if err != nil {
			t.Fatal(err)
		}
		found := map[uint64]bool{}
		for {
			_, rec, err := r.Next()
			if err != nil {
				break
			}
			n := binary.LittleEndian.Uint64(rec)
			found[n] = true
			if n > next {
				next = n
			}
		}
		r.Close()
		for n, st := range durable {
			if !found[n] && st >= rmMax {
				t.Fatalf("round %d: record %d was reported durable but is not in the log (first %d durable %d)", round, n, l.FirstLSN(), l.DurableLSN())
			}
		}
		durable = map[uint64]uint64{}
		if rng.Intn(2) == 0 {
			removeAt = l.DurableLSN()
		}
		l.Close()
		next += 1000
	}
}
