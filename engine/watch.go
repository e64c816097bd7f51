package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Storage that fails or disappears under a running engine must stop it
// (failed-stop), never leave it acknowledging writes that a restart would
// not find. The log checks its own directory and segment before every
// durability report (wal); the store reports failed flushes and
// compactions (store.Pebble.Err); and every watchInterval the applier
// checks that the data directory and the store's directory are still the
// ones the engine opened.

// watchInterval is how often the applier checks the data directory.
const watchInterval = 500 * time.Millisecond

// storageWatch remembers the directories the engine opened.
type storageWatch struct {
	dirs  []string
	infos []os.FileInfo
}

// newStorageWatch records the data directory and the store directory of
// an engine on the operating system's filesystem (nil otherwise).
func newStorageWatch(o *Options) *storageWatch {
	if o.DataDir == "" || o.fs.Log != nil || o.fs.Store != nil {
		return nil
	}
	w := &storageWatch{}
	for _, d := range []string{o.DataDir, filepath.Join(o.DataDir, "store"), filepath.Join(o.DataDir, "wal")} {
		fi, err := os.Stat(d)
		if err != nil {
			continue
		}
		w.dirs = append(w.dirs, d)
		w.infos = append(w.infos, fi)
	}
	return w
}

// check returns an error if a watched directory is gone or replaced.
func (w *storageWatch) check() error {
	if w == nil {
		return nil
	}
	for i, d := range w.dirs {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("engine: the data directory %s is gone: %w", d, err)
		}
		if !os.SameFile(fi, w.infos[i]) {
			return fmt.Errorf("engine: the data directory %s was replaced while the engine ran", d)
		}
	}
	return nil
}

// checkStorage fails the engine if its storage is gone or failing.
func (e *Engine) checkStorage() {
	if e.Err() != nil {
		return
	}
	if err := e.watch.check(); err != nil {
		e.failStop(err)
		return
	}
	if err := e.st.Err(); err != nil {
		e.failStop(err)
	}
}
