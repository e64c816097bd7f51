// Package testdir holds test helpers for directories.
package testdir

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Copy copies the tree under from to to. Tests use it to take what a
// process killed at that moment would leave on disk (files written as data
// arrives, nothing flushed at exit) while the process keeps running.
func Copy(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
