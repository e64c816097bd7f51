package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/loadgen"
)

// TestWriteScaling: the report names its machine and command, shows each
// point with its speed-up against the first, links a plot that exists, and
// is listed by the index among the other measurements.
func TestWriteScaling(t *testing.T) {
	dir := t.TempDir()
	path, err := WriteScaling(dir, ScalingReport{
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Command: "go run ./cmd/loadgen --scaling",
		Machine: MachineInfo{CPU: "test cpu", Cores: 2, GoVersion: "go1.x", Commit: "abc"},
		Config:  loadgen.ScalingConfig{Producers: 4, Batch: 256, Drivers: 10, Grid: 2},
		Points:  []loadgen.ScalingPoint{{Shards: 1, EventsPerS: 1000}, {Shards: 2, EventsPerS: 1500}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"test cpu", "go1.x", "abc", "go run ./cmd/loadgen --scaling", "| 2 | 1500 | 1.50 | 0.75 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "2026-01-02-030405-scaling.svg")); err != nil {
		t.Errorf("plot: %v", err)
	}
	if err := Index(dir); err != nil {
		t.Fatal(err)
	}
	idx, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	if !strings.Contains(string(idx), filepath.Base(path)) {
		t.Errorf("index does not list %s:\n%s", filepath.Base(path), idx)
	}
}
