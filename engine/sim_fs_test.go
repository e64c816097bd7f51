package engine

import (
	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/shardfn/shardfn/wal/vfs"
)

// The simulator (sim_test.go): filesystems with crash points.

// crashHook is called before every mutating filesystem operation of the
// log and of the store; at the scheduled count it takes the crash images
// (what a power loss at that instant would leave) and the world switches
// to them after the current step.
func (w *simWorld) crashHook() {
	w.ops++
	if w.crashAt != 0 && w.ops == w.crashAt && !w.crashed {
		w.takeCrashImage()
		w.stats.opCrashes++
	}
}

func (w *simWorld) takeCrashImage() {
	if w.e != nil {
		w.logf("crash image at filesystem operation %d (durable %d) during %s", w.ops, w.e.wal.Durable(), w.action)
	} else {
		w.logf("crash image at filesystem operation %d during recovery", w.ops)
	}
	// What was acknowledged before this instant counts; nothing after.
	w.collectAcks()
	w.crashed = true
	// The log's image keeps a random share of what was not synced, sector
	// by sector (torn writes). The store's keeps exactly what was synced:
	// Pebble's clone draws unsynced directory entries in map order (a
	// replay would differ) and independently of their order, which no
	// filesystem promises either way.
	w.snapLog = w.logFS.CrashClone(w.rng)
	w.snapStore = w.storeFS.CrashClone(pebblevfs.CrashCloneCfg{})
}

// hookFS wraps the log's MemFS with the crash hook.
type hookFS struct {
	fs   vfs.FS
	hook func()
}

func (h hookFS) Create(name string) (vfs.File, error) {
	h.hook()
	f, err := h.fs.Create(name)
	return hookFile{f, h.hook}, err
}
func (h hookFS) Open(name string) (vfs.File, error) {
	f, err := h.fs.Open(name)
	if err != nil {
		return nil, err
	}
	return hookFile{f, h.hook}, nil
}
func (h hookFS) OpenReadWrite(name string) (vfs.File, error) {
	f, err := h.fs.OpenReadWrite(name)
	if err != nil {
		return nil, err
	}
	return hookFile{f, h.hook}, nil
}
func (h hookFS) Remove(name string) error             { h.hook(); return h.fs.Remove(name) }
func (h hookFS) Rename(oldname, newname string) error { h.hook(); return h.fs.Rename(oldname, newname) }
func (h hookFS) MkdirAll(dir string) error            { return h.fs.MkdirAll(dir) }
func (h hookFS) List(dir string) ([]string, error)    { return h.fs.List(dir) }
func (h hookFS) OpenDir(dir string) (vfs.File, error) {
	f, err := h.fs.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	return hookFile{f, h.hook}, nil
}

type hookFile struct {
	vfs.File
	hook func()
}

func (f hookFile) Write(p []byte) (int, error) { f.hook(); return f.File.Write(p) }
func (f hookFile) WriteAt(p []byte, off int64) (int, error) {
	f.hook()
	return f.File.WriteAt(p, off)
}
func (f hookFile) Sync() error                  { f.hook(); return f.File.Sync() }
func (f hookFile) Truncate(size int64) error    { f.hook(); return f.File.Truncate(size) }
func (f hookFile) Preallocate(o, n int64) error { f.hook(); return f.File.Preallocate(o, n) }
func (f hookFile) Unlinked() (bool, error)      { return vfs.IsUnlinked(f.File) }

// storeInjector counts the store's mutating operations (removals aside:
// Pebble deletes obsolete files from a background goroutine, whose timing
// must not move the crash points).
type storeInjector struct{ hook func() }

func (s storeInjector) String() string { return "sim crash points" }
func (s storeInjector) MaybeError(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpRemove, errorfs.OpRemoveAll, errorfs.OpFileClose:
		return nil
	}
	if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		s.hook()
	}
	return nil
}
