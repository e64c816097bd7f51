package vfs

import (
	"bytes"
	"errors"
	"testing"
)

func TestMemFSCrashKeepsOnlySynced(t *testing.T) {
	m := NewMemFS()
	m.MkdirAll("/d")
	f, _ := m.Create("/d/a")
	f.WriteAt([]byte("synced"), 0)
	f.Sync()
	d, _ := m.OpenDir("/d")
	d.Sync()
	f.WriteAt([]byte("unsynced!"), 0)
	g, _ := m.Create("/d/b") // entry never synced
	g.WriteAt([]byte("x"), 0)
	g.Sync()

	c := m.CrashClone(nil)
	got, err := c.ReadFile("/d/a")
	if err != nil || !bytes.Equal(got, []byte("synced")) {
		t.Fatalf("a = %q, %v; want the synced content", got, err)
	}
	if _, err := c.ReadFile("/d/b"); err == nil {
		t.Fatal("b survived although its directory entry was never synced")
	}
	if got, _ := m.ReadFile("/d/a"); !bytes.Equal(got, []byte("unsynced!")) {
		t.Fatalf("CrashClone changed the original: %q", got)
	}
}

func TestErrorFSFailsExactlyOneOp(t *testing.T) {
	m := NewMemFS()
	m.MkdirAll("/d")
	e := NewErrorFS(m, 2)
	f, err := e.Create("/d/a") // op 0
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); err != nil { // op 1
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, ErrInjected) { // op 2
		t.Fatalf("op 2: %v, want ErrInjected", err)
	}
	if err := f.Sync(); err != nil { // op 3
		t.Fatal(err)
	}
	if !e.Fired() || e.Ops() != 4 {
		t.Fatalf("Fired %v, Ops %d", e.Fired(), e.Ops())
	}
}
