// Package rules holds the project's own lint rules, written as a test so
// that `make test` enforces them.
package rules

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func repoFiles(t *testing.T) []string {
	out, err := exec.Command("git", "-C", "../..", "ls-files", "*.go").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	return strings.Fields(string(out))
}

// TestProjectRules: the shard core reads no clock (time comes from Step's
// argument, so it stays deterministic), and only commands (cmd/, examples/) print to stdout.
func TestProjectRules(t *testing.T) {
	for _, f := range repoFiles(t) {
		if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, ".pb.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("../..", f))
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		if strings.HasPrefix(f, "shard/") && strings.Contains(src, "time.Now(") {
			t.Errorf("%s reads the clock: the shard core takes its time from Step(now)", f)
		}
		if !strings.HasPrefix(f, "cmd/") && !strings.HasPrefix(f, "examples/") && !strings.HasPrefix(f, "loadgen/peers/") && strings.Contains(src, "fmt.Print") {
			t.Errorf("%s prints to stdout: only cmd/ may; return values or log with slog", f)
		}
	}
}
