package main

import (
	"io"
	"testing"

	"github.com/shardfn/shardfn/internal/memmodel"
)

// TestMemoryLimit: --memory-limit auto is the memory model's Go limit for
// the flags (it grows with them), off sets none, a size is taken as is,
// and GOMEMLIMIT in the environment wins over auto.
func TestMemoryLimit(t *testing.T) {
	limit := func(args ...string) int64 {
		t.Helper()
		c, err := parseFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		v, err := c.goMemoryLimit()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Setenv("GOMEMLIMIT", "")
	base := []string{"--max-conns", "1024", "--memory-budget", "256MiB"}
	auto := limit(base...)
	c, _ := parseFlags(base, io.Discard)
	if want := memmodel.GoLimit(c.memParams(1024, 64<<20)); auto != want || auto <= 256<<20 {
		t.Fatalf("auto: %d, want the model's %d", auto, want)
	}
	if bigger := limit("--max-conns", "1024", "--memory-budget", "512MiB"); bigger <= auto {
		t.Fatalf("auto does not grow with --memory-budget: %d, %d", bigger, auto)
	}
	if v := limit(append(base, "--memory-limit", "off")...); v != 0 {
		t.Fatalf("off: %d", v)
	}
	if v := limit(append(base, "--memory-limit", "3GiB")...); v != 3<<30 {
		t.Fatalf("3GiB: %d", v)
	}
	t.Setenv("GOMEMLIMIT", "1GiB")
	if v := limit(base...); v != 0 {
		t.Fatalf("auto with GOMEMLIMIT set: %d, want none (the runtime applied it)", v)
	}
}
