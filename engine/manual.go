package engine

import "errors"

// Manual mode (Options.manual, set by the simulator in this package's
// tests): Open starts no goroutine of its own; the caller steps the
// shards (Shard.Step), writes and syncs the log (flushLog) and runs the
// applier (applyOnce). The store and the log still run real code over the
// filesystems of Options.fs.

// flushLog writes and syncs what the shards appended (manual mode).
func (e *Engine) flushLog() error {
	w, ok := e.wal.(*walLog)
	if !ok {
		return nil // the in-memory log is durable at once
	}
	return w.l.Flush()
}

// abandon drops an engine whose filesystems crashed (manual mode): it
// closes the log and the store without draining or checkpointing.
func (e *Engine) abandon() {
	if !e.opts.manual {
		panic(errors.New("engine: abandon outside manual mode"))
	}
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		close(e.closing)
		e.requests.closeAll()
		_ = e.wal.Close()
		_ = e.st.Close()
		e.closeErr = ErrClosed
	})
}
